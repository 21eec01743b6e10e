"""Session fixtures: the local stack, started once on free loopback ports."""
