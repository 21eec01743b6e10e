"""Onboarding: Palette's "Set up Palette with Azure" guide as the engine's steps, the HTTP intake
and the dry run."""
