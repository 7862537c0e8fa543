"""Integration tests spanning targets: the relay against real upstreams, the Lambda zip."""
