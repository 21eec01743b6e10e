"""Offboarding: take an account out as cleanly as it came in."""
