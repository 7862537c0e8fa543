"""Registers the repository's shared fixtures (certificates, the SES stand-in, free ports, a
virtual clock) for every test; pytest honours `pytest_plugins` only in the root conftest.py."""

pytest_plugins = ["ses_core.testing.pytest_plugin"]
