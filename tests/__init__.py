"""Cross-target test suites: integration, reliability (load + faults) and hostile input."""
