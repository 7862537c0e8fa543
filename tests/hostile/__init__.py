"""Hostile-input and security suites for the relay and the blacklist Lambda (issue 7, items 5-7)."""
