"""The pytest fixtures every test in the repository may use, registered once by the root
conftest.py (`pytest_plugins = ["ses_core.testing.pytest_plugin"]`).

- `certificates`: a private CA and a server certificate for localhost/127.0.0.1, one per run;
- `upstream`: the SES stand-in (STARTTLS + AUTH) on the test's event loop;
- `threaded_upstream`: the same on its own thread, shared by a module, for synchronous tests;
- `free_port`: a loopback port nothing listens on;
- `clock`: a `VirtualClock` (pass `clock` and `clock.sleep` to the code under test).

A test module needing something else (another TLS mode, PIPELINING) defines its own fixture of
the same name. The heavy modules are imported inside the fixtures, so registering the plugin
costs nothing to the tests that do not use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from ses_core.testing.clock import VirtualClock
from ses_core.testing.ports import free_port as _free_port

if TYPE_CHECKING:
    from ses_core.testing.certs import TestCertificates
    from ses_core.testing.upstream import SmtpUpstream


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A private CA and a certificate for localhost/127.0.0.1, shared by the whole run."""
    from ses_core.testing.certs import TestCertificates

    return TestCertificates.create(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
async def upstream(certificates: TestCertificates) -> AsyncIterator[SmtpUpstream]:
    """The SES stand-in with STARTTLS and AUTH required, on the test's event loop."""
    from ses_core.testing.upstream import SmtpUpstream

    async with SmtpUpstream(certificates.server_context()) as server:
        yield server


@pytest.fixture(scope="module")
def threaded_upstream(certificates: TestCertificates) -> Iterator[SmtpUpstream]:
    """The SES stand-in (STARTTLS + AUTH) on its own loop and thread, shared by a module."""
    from ses_core.testing.upstream import SmtpUpstream, ThreadedUpstream

    with ThreadedUpstream(SmtpUpstream(certificates.server_context())) as server:
        yield server


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port()


@pytest.fixture
def clock() -> VirtualClock:
    """Virtual time: moves only on `await clock.advance(seconds)`."""
    return VirtualClock()
