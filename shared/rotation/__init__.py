"""Secret rotation: the plan the runner carries out, the sweep that finds what is due, and the
triggers' entry points (timer, Key Vault's near-expiry event, on demand)."""
