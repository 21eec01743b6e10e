"""Trigger adapters: parse what the host hands over, call the domain, map the outcome back."""
