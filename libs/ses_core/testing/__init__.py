"""Real, reusable test doubles shipped with the library: a scripted SES-like SMTP upstream,
throw-away TLS certificates and a throw-away redis-server. Services and benchmarks use them too."""
