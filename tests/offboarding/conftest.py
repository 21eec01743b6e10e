"""Offboarding tests share the onboarding tests' world (the real clients over the local stack)."""

from tests.onboarding.conftest import deps, world

__all__ = ["deps", "world"]
