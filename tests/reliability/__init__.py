"""Reliability suites for the relay: load and fault injection.

A short profile runs in CI; the long one on demand (`--long`).
"""
