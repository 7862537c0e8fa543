"""What the suites under tests/ share: the relay harness (`relay_harness`), which runs a real
relay in-process, on a thread of its own, or as a process started the way production starts it."""
