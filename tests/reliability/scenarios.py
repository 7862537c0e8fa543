"""The fault matrix: each row injects one fault while load runs, then checks the relay's promise.

A run (`run_scenario`) starts a recording SES stand-in (STARTTLS + AUTH), the relay as a process
pointed at it (plus a moto DynamoDB behind a fault proxy, or a redis-server, when the row needs
them), and a `LoadClient`. Once a fifth of the messages are acked the fault starts; it lasts the
row's duration while `/readyz` is polled, then it is removed and the load finishes with the
client's bounded retries. `problems()` lists every broken promise:

- nothing answered 250 is lost (exactly-once check by Message-ID at the upstream);
- duplicates only where the row is the documented ambiguous case (connection lost after the final
  '.'), and then no more than the number of such drops;
- transient causes give 4xx only; 5xx only in the control row where the upstream refuses
  permanently; every message ends acked or refused (the client's retries succeed once the fault
  is gone);
- the fault was really exercised (the upstream script fired, the proxy faulted mail traffic
  rather than only the readiness probe, ...), and where the relay cannot absorb it (DynamoDB
  errors, Redis down) the senders were told to retry with 4xx;
- the relay process stayed up with the same PID (except the SIGTERM row, which must exit 0 and
  come back), `/readyz` reflected the fault while it lasted (without flapping back to 200 once
  `READINESS_SETTLE` has passed) and is 200 again afterwards;
- its memory (PSS) did not grow by more than `PSS_GROWTH_LIMIT`, and in the load row by no more
  than `SECOND_HALF_GROWTH_LIMIT` over the second half of the load.

Readiness expectations: faults that make a dependency unusable (upstream down, TLS handshake
failure, rejected credentials, DynamoDB errors, Redis down, relay stopped) must turn `/readyz` to
503 (or no answer) during the fault. Faults that hit single transactions while the dependency
stays reachable (drops, 421, 451, throttling, daily quota, a slow DynamoDB) must leave it 200:
taking every replica out of a load balancer for a per-message hiccup would turn a transient fault
into an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import attrs

from ses_core.testing.certs import TestCertificates
from ses_core.testing.ports import free_port
from ses_core.testing.upstream import (
    SES_BAD_CREDENTIALS,
    SES_DAILY_QUOTA,
    SES_MAX_MESSAGES,
    SES_NOT_VERIFIED,
    SES_TEMPORARY_FAILURE,
    SES_THROTTLED,
    Fault,
    SmtpUpstream,
    Stage,
)
from tests.reliability.fault_proxy import FaultProxy, ProxyMode
from tests.reliability.load_client import (
    DeliveryTally,
    LoadClient,
    LoadPlan,
    LoadResult,
    Verdict,
    tally_deliveries,
)
from tests.reliability.readiness import Readiness, ReadinessPoller
from tests.support.relay_harness import RelayProcess, upstream_environ

log = logging.getLogger(__name__)

MIB = 1024 * 1024

UPSTREAM_USER, UPSTREAM_PASSWORD = "AKIARELIABILITY", "reliability-smtp-password"
PSS_GROWTH_LIMIT = 30 * MIB
#: Growth allowed over the load row's second half, once warm: 6 MiB is ~125 bytes per message
#: in the long profile (50,000 messages) and ~2.5 KB in the short one (2,500).
SECOND_HALF_GROWTH_LIMIT = 6 * MIB
#: Seconds the relay gets to turn ready again after a fault is removed.
RECOVERY_TIMEOUT = 30.0
#: Part of the messages acked before the fault starts (the fault strikes a running load).
FAULT_AFTER = 0.2
#: Seconds a signal may take to reach the relay's event loop.
SIGNAL_DELIVERY = 0.1
#: Seconds a dependency fault may take to show in /readyz (a probe already under way, or a
#: pooled upstream session that breaks only when next used).
READINESS_SETTLE = 1.0


@attrs.frozen
class Profile:
    """How big and how long: `SHORT` runs in CI, `LONG` on demand.

    Attributes:
        load_messages / load_connections: the plain load run (no fault).
        fault_messages / fault_connections: each fault row's load.
        fault_seconds: how long a fault row's fault lasts, unless the row says otherwise.
        storm_seconds: the `454 Throttling` storm.
        outage_seconds: upstream listener closed.
        time_budget: seconds one run may take before the client gives up what is left.
    """

    name: str
    load_messages: int
    load_connections: int
    fault_messages: int
    fault_connections: int
    fault_seconds: float
    storm_seconds: float
    outage_seconds: float
    time_budget: float


SHORT = Profile("short", 5_000, 20, 500, 10, 2.0, 3.0, 3.0, 150.0)
LONG = Profile("long", 100_000, 50, 5_000, 20, 10.0, 30.0, 20.0, 1_200.0)
PROFILES = {p.name: p for p in (SHORT, LONG)}


class Expect(enum.Enum):
    """What `/readyz` must say while the fault lasts."""

    READY = "ready"
    NOT_READY = "not ready"


class Needs(enum.Enum):
    """Extra dependencies a row's relay runs with."""

    NOTHING = "nothing"
    DYNAMODB = "dynamodb"
    REDIS = "redis"


@attrs.define
class Rig:
    """Everything one run uses; the fault functions act on it."""

    upstream: SmtpUpstream
    relay: RelayProcess
    proxy: FaultProxy | None = None
    redis: object | None = None
    evidence: int = 0  # faults really applied (script hits, proxy faults, kills, ...)
    sigterm_at: float | None = None


FaultStep = Callable[[Rig], Awaitable[None]]


@attrs.frozen
class Scenario:
    """One row of the fault matrix.

    Attributes:
        key: short id (test id, `--only` filter of the report).
        title: the row's name in the table.
        start / stop: inject and remove the fault.
        seconds: how long the fault lasts in a profile.
        readiness: what `/readyz` must say meanwhile.
        needs: extra dependency of the relay.
        duplicates_allowed: the documented ambiguous case only.
        permanent: the control row where 5xx is the right answer.
        restarts: the relay process is stopped and started again (SIGTERM row).
        unique_recipients: one new recipient per message (defeats the blacklist cache).
        clients_see_4xx: the fault cannot be absorbed inside the relay, so the senders must have
            been told to retry (proves the relay did not let mail through unchecked).
    """

    key: str
    title: str
    start: FaultStep
    stop: FaultStep
    seconds: Callable[[Profile], float]
    readiness: Expect
    needs: Needs = Needs.NOTHING
    duplicates_allowed: bool = False
    permanent: bool = False
    restarts: bool = False
    unique_recipients: bool = False
    clients_see_4xx: bool = False


@attrs.frozen
class Outcome:
    """What one run measured, and the promises it broke (`problems`, empty when all held)."""

    scenario: Scenario
    profile: Profile
    result: LoadResult
    tally: DeliveryTally
    evidence: int
    readiness_during: tuple[Readiness, ...]
    sigterm_at: float | None
    ready_after: bool
    relay_alive: bool
    same_pid: bool
    exit_codes: tuple[int, ...]
    pss_start: int
    pss_end: int
    problems: tuple[str, ...]
    #: PSS when half the load was acked (load row only; 0 elsewhere): growth after it means a
    #: leak, whereas growth before it is mostly caches and buffers warming up.
    pss_mid: int = 0

    @property
    def passed(self) -> bool:
        """Whether every promise held."""
        return not self.problems

    def row(self) -> dict[str, str]:
        """The fault-matrix table row."""
        stats = self.result.stats
        statuses = sorted({p.status for p in self.readiness_during})
        return {
            "fault": self.scenario.title,
            "sent": str(self.result.sent),
            "acked": str(self.result.acked),
            "lost": str(self.tally.lost),
            "duplicated": str(self.tally.duplicated),
            "4xx seen": str(stats.replies_4xx),
            "5xx seen": str(stats.replies_5xx),
            "conn. errors": str(stats.connection_errors),
            "/readyz during": "/".join(str(s) if s else "down" for s in statuses) or "-",
            "PSS start→end MiB": "→".join(
                f"{pss / MIB:.0f}" for pss in (self.pss_start, self.pss_mid, self.pss_end) if pss
            ),
            "seconds": f"{self.result.seconds:.0f}",
            "outcome": "pass" if self.passed else "FAIL: " + "; ".join(self.problems),
        }


# --- the faults --------------------------------------------------------------------------------


def _script(fault: Fault, *, drop_sessions: bool = False) -> tuple[FaultStep, FaultStep]:
    """Start/stop steps applying `fault` to every matching event while the fault lasts."""

    async def start(rig: Rig) -> None:
        rig.upstream.faults.set(fault, times=None)
        if drop_sessions:
            # Faults of the login (TLS, AUTH) hit new sessions: make the relay open new ones.
            rig.upstream.drop_all_connections()

    async def stop(rig: Rig) -> None:
        rig.upstream.faults.clear()
        rig.evidence = sum(1 for f in rig.upstream.faults.applied if f == fault)

    return start, stop


def _script_times(fault: Fault, times: int) -> tuple[FaultStep, FaultStep]:
    """Start/stop steps applying `fault` to the next `times` matching events."""

    async def start(rig: Rig) -> None:
        rig.upstream.faults.set(fault, times=times)

    async def stop(rig: Rig) -> None:
        rig.upstream.faults.clear()
        rig.evidence = sum(1 for f in rig.upstream.faults.applied if f == fault)

    return start, stop


async def _upstream_down(rig: Rig) -> None:
    await rig.upstream.stop()
    rig.evidence += 1


async def _upstream_up(rig: Rig) -> None:
    await rig.upstream.start()


async def _proxy_mode(rig: Rig, mode: ProxyMode) -> None:
    assert rig.proxy is not None
    rig.proxy.mode = mode


async def _dynamodb_errors(rig: Rig) -> None:
    await _proxy_mode(rig, ProxyMode.ERROR)


async def _dynamodb_slow(rig: Rig) -> None:
    await _proxy_mode(rig, ProxyMode.DELAY)


async def _dynamodb_healthy(rig: Rig) -> None:
    await _proxy_mode(rig, ProxyMode.PASS)
    assert rig.proxy is not None
    rig.evidence = rig.proxy.faulted_traffic


async def _redis_kill(rig: Rig) -> None:
    from ses_core.testing.redis_server import RedisServer

    assert isinstance(rig.redis, RedisServer)
    rig.redis.kill()
    rig.evidence += 1


async def _redis_restart(rig: Rig) -> None:
    from ses_core.testing.redis_server import RedisServer

    assert isinstance(rig.redis, RedisServer)
    await asyncio.to_thread(rig.redis.start)


#: While SIGTERM arrives, the upstream holds each message this long after its final '.', so
#: that transactions are really in flight during the drain.
IN_FLIGHT_STALL = 1.5


async def _relay_sigterm(rig: Rig) -> None:
    stall = Fault.stall(Stage.END_OF_DATA, IN_FLIGHT_STALL)
    rig.upstream.faults.set(stall, times=None, duration=IN_FLIGHT_STALL)
    await asyncio.sleep(IN_FLIGHT_STALL / 3)
    rig.relay.terminate()
    rig.sigterm_at = time.monotonic()
    # Evidence: transactions that were held upstream while the relay was told to stop.
    rig.evidence = sum(1 for f in rig.upstream.faults.applied if f == stall)
    # In-flight transactions get RELAY_GRACE_PERIOD (10 s here); then the process must be gone.
    await rig.relay.wait_exit(timeout=30.0)


async def _relay_restart(rig: Rig) -> None:
    if rig.relay.alive:
        return  # it did not exit: recorded by the exit code check, nothing to restart
    await asyncio.to_thread(rig.relay.start)


def _fixed(seconds: float) -> Callable[[Profile], float]:
    return lambda profile: seconds


def _faults(profile: Profile) -> float:
    return profile.fault_seconds


def _scenarios() -> tuple[Scenario, ...]:
    rows = []

    def add(key: str, title: str, steps: tuple[FaultStep, FaultStep], **options: object) -> None:
        options.setdefault("seconds", _faults)
        options.setdefault("readiness", Expect.READY)
        rows.append(Scenario(key, title, steps[0], steps[1], **options))  # type: ignore[arg-type]

    add(
        "drop_before_mail",
        "upstream drops the connection before MAIL",
        _script(Fault.drop(Stage.MAIL)),
    )
    add("drop_after_rcpt", "upstream drops after RCPT (at DATA)", _script(Fault.drop(Stage.DATA)))
    add(
        "drop_during_data", "upstream drops while the body arrives", _script(Fault.drop(Stage.BODY))
    )
    add(
        "drop_after_dot",
        "upstream drops after the final '.' before replying (ambiguous)",
        _script(Fault.drop(Stage.END_OF_DATA)),
        duplicates_allowed=True,
    )
    add(
        "reply_421",
        "`421` mid-session (at MAIL)",
        _script(Fault.reply(Stage.MAIL, *SES_MAX_MESSAGES)),
    )
    add(
        "reply_451",
        "`451 Temporary service failure` after the body",
        _script(Fault.reply(Stage.END_OF_DATA, *SES_TEMPORARY_FAILURE)),
    )
    add(
        "throttle_storm",
        "`454 Throttling failure: Maximum sending rate exceeded` storm",
        _script(Fault.reply(Stage.END_OF_DATA, *SES_THROTTLED)),
        seconds=lambda p: p.storm_seconds,
    )
    add(
        "daily_quota",
        "`454 Throttling failure: Daily message quota exceeded`",
        _script(Fault.reply(Stage.MAIL, *SES_DAILY_QUOTA)),
    )
    add(
        "tls_failure",
        "TLS handshake failure (STARTTLS)",
        _script(Fault.tls_failure(), drop_sessions=True),
        readiness=Expect.NOT_READY,
    )
    add(
        "bad_credentials",
        "`535 Authentication Credentials Invalid`",
        _script(Fault.reply(Stage.AUTH, *SES_BAD_CREDENTIALS), drop_sessions=True),
        readiness=Expect.NOT_READY,
    )
    add(
        "upstream_down",
        "upstream down (listener closed), then back",
        (_upstream_down, _upstream_up),
        seconds=lambda p: p.outage_seconds,
        readiness=Expect.NOT_READY,
    )
    add(
        "permanent_554",
        "control: `554 Message rejected` for 20 recipients (permanent)",
        _script_times(Fault.reply(Stage.RCPT, *SES_NOT_VERIFIED), 20),
        permanent=True,
    )
    add(
        "dynamodb_errors",
        "DynamoDB blacklist answers HTTP 500",
        (_dynamodb_errors, _dynamodb_healthy),
        readiness=Expect.NOT_READY,
        needs=Needs.DYNAMODB,
        unique_recipients=True,
        clients_see_4xx=True,
    )
    add(
        "dynamodb_slow",
        "DynamoDB blacklist 2-second latency",
        (_dynamodb_slow, _dynamodb_healthy),
        # Long enough for readiness probes (each now takes 2 s) to answer during the fault.
        seconds=lambda p: max(p.fault_seconds, 6.0),
        needs=Needs.DYNAMODB,
        unique_recipients=True,
    )
    add(
        "redis_killed",
        "Redis (shared rate limiter) killed, restarted",
        (_redis_kill, _redis_restart),
        readiness=Expect.NOT_READY,
        needs=Needs.REDIS,
        clients_see_4xx=True,
    )
    add(
        "relay_sigterm",
        "relay sent SIGTERM mid-load, restarted",
        (_relay_sigterm, _relay_restart),
        seconds=_fixed(1.0),
        readiness=Expect.NOT_READY,
        restarts=True,
    )
    return tuple(rows)


SCENARIOS: tuple[Scenario, ...] = _scenarios()
BY_KEY = {s.key: s for s in SCENARIOS}
#: The load row: no fault, the profile's full load (memory must stay flat).
LOAD_TITLE = "none (plain load)"


# --- running a row -----------------------------------------------------------------------------


def relay_settings(upstream: SmtpUpstream, certificates: TestCertificates) -> dict[str, str]:
    """Relay environment pointing at the stand-in: fast rate, 10 s max wait, 10 s grace."""
    return {
        **upstream_environ(upstream, certificates.ca_file),
        "SERVER_FQDN": "relay.reliability.test",
        "RELAY_LOG_LEVEL": "WARNING",
        "RELAY_UPSTREAM_TIMEOUT": "10",
        "RELAY_POOL_SIZE": "8",
        "SES_RATE_LIMIT": "100000",
        "RELAY_RATE_BURST": "1000",
        "RELAY_MAX_WAIT": "10",
        "RELAY_GRACE_PERIOD": "10",
        "RELAY_SESSION_TIMEOUT": "60",
    }


@contextlib.asynccontextmanager
async def rig(needs: Needs, workdir: Path) -> AsyncIterator[Rig]:
    """Start the stand-in upstream, the extra dependency and the relay process; stop them all."""
    certificates = TestCertificates.create(str(workdir))
    upstream = SmtpUpstream(
        certificates.server_context(),
        credentials=(UPSTREAM_USER, UPSTREAM_PASSWORD),
        port=free_port(),
    )
    await upstream.start()
    env = relay_settings(upstream, certificates)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(upstream.stop)
        proxy: FaultProxy | None = None
        redis: object | None = None
        if needs is Needs.DYNAMODB:
            proxy = await stack.enter_async_context(_dynamodb(env))
        elif needs is Needs.REDIS:
            redis = stack.enter_context(_redis(env))
        relay = RelayProcess(env, log_path=workdir / "relay.log", ops_endpoint=True)
        stack.push_async_callback(relay.astop)  # also when it never became ready
        await asyncio.to_thread(relay.start)
        yield Rig(upstream, relay, proxy=proxy, redis=redis)


@contextlib.asynccontextmanager
async def _dynamodb(env: dict[str, str]) -> AsyncIterator[FaultProxy]:
    from ses_core.testing.moto_dynamodb import TEST_REGION, MotoServer, create_blacklist_table

    with MotoServer() as moto:
        # moto's state is process-wide: start from nothing whatever ran before.
        await asyncio.to_thread(moto.reset)
        await asyncio.to_thread(create_blacklist_table, moto.client(), "blacklist")
        host, _, port = moto.endpoint_url.removeprefix("http://").partition(":")
        # The relay's /readyz probe looks this address up through the same proxy: faults it
        # alone met must not count as the fault reaching mail traffic.
        proxy = FaultProxy(host, int(port), delay=2.0, probe_marker=b"readiness-probe@example.com")
        await proxy.start()
        env.update(
            {
                "USE_BLACKLIST": "true",
                "DYNAMODB_TABLE": "blacklist",
                "AWS_ENDPOINT_URL": proxy.url,
                "AWS_DEFAULT_REGION": TEST_REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
            }
        )
        try:
            yield proxy
        finally:
            await proxy.stop()


@contextlib.contextmanager
def _redis(env: dict[str, str]) -> Iterator[object]:
    from ses_core.testing.redis_server import RedisServer

    with RedisServer() as server:
        env.update({"REDIS_URL": server.url, "RELAY_REDIS_UNAVAILABLE": "fail"})
        yield server


async def wait_ready(relay: RelayProcess, timeout: float) -> bool:
    """Poll `/readyz` until it answers 200 (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await relay.readyz() == 200:
            return True
        await asyncio.sleep(0.2)
    return False


def load_plan(
    rig_: Rig, profile: Profile, *, messages: int, connections: int, tag: str, unique: bool
) -> LoadPlan:
    """The client's plan against this rig's relay."""
    return LoadPlan(
        host="127.0.0.1",
        port=rig_.relay.port,
        messages=messages,
        connections=connections,
        run_id=f"{tag}-{os.getpid()}-{time.monotonic_ns()}",
        recipients=None if unique else 50,
        time_budget=profile.time_budget,
    )


async def run_scenario(
    scenario: Scenario, profile: Profile, workdir: Path | None = None
) -> Outcome:
    """Run one fault row under `profile` and check it (see the module docstring)."""
    with _workdir(workdir) as folder:
        async with rig(scenario.needs, folder) as rig_:
            relay = rig_.relay
            if not await wait_ready(relay, RECOVERY_TIMEOUT):
                message = f"relay never became ready: {relay.log_tail()}"
                raise RuntimeError(message)
            pid, pss_start = relay.pid, relay.pss()
            plan = load_plan(
                rig_,
                profile,
                messages=profile.fault_messages,
                connections=profile.fault_connections,
                tag=scenario.key,
                unique=scenario.unique_recipients,
            )
            client = LoadClient(plan)
            poller = ReadinessPoller(relay)
            load = asyncio.create_task(client.run())
            watchdog = asyncio.create_task(_stop_if_relay_dies(rig_, client, scenario.restarts))
            try:
                await _until_progress(client, load, int(plan.messages * FAULT_AFTER), profile)
                fault_started = time.monotonic()
                poller.start()
                await scenario.start(rig_)
                await asyncio.sleep(scenario.seconds(profile))
                fault_ended = time.monotonic()
                await scenario.stop(rig_)
                await poller.stop()
                result = await asyncio.wait_for(load, profile.time_budget + 60)
            finally:
                await poller.stop()
                watchdog.cancel()
                if not load.done():
                    load.cancel()
            ready_after = await wait_ready(relay, RECOVERY_TIMEOUT)
            alive = relay.alive
            pss_end = relay.pss() if alive else 0
            same_pid = alive and relay.pid == pid
            during = tuple(poller.between(fault_started, fault_ended))
            tally = tally_deliveries(result, (m.message_id for m in rig_.upstream.messages))
            outcome = Outcome(
                scenario=scenario,
                profile=profile,
                result=result,
                tally=tally,
                evidence=rig_.evidence,
                readiness_during=during,
                sigterm_at=rig_.sigterm_at,
                ready_after=ready_after,
                relay_alive=alive,
                same_pid=same_pid,
                exit_codes=tuple(relay.exit_codes),
                pss_start=pss_start,
                pss_end=pss_end,
                problems=(),
            )
            problems = tuple(problems_of(outcome, rig_))
            if problems:
                log.error("%s: %s\nrelay log tail:\n%s", scenario.key, problems, relay.log_tail())
            return attrs.evolve(outcome, problems=problems)


async def run_load(profile: Profile, workdir: Path | None = None) -> Outcome:
    """The plain load row: the profile's full load, no fault; exactly once and flat memory."""
    scenario = Scenario("load", LOAD_TITLE, _nothing, _nothing, _fixed(0.0), Expect.READY)
    with _workdir(workdir) as folder:
        async with rig(Needs.NOTHING, folder) as rig_:
            relay = rig_.relay
            if not await wait_ready(relay, RECOVERY_TIMEOUT):
                message = f"relay never became ready: {relay.log_tail()}"
                raise RuntimeError(message)
            pid, pss_start = relay.pid, relay.pss()
            plan = load_plan(
                rig_,
                profile,
                messages=profile.load_messages,
                connections=profile.load_connections,
                tag="load",
                unique=False,
            )
            poller = ReadinessPoller(relay, interval=1.0)
            poller.start()
            client = LoadClient(plan)
            watchdog = asyncio.create_task(_stop_if_relay_dies(rig_, client, False))
            load = asyncio.create_task(client.run())
            try:
                await _until_progress(client, load, plan.messages // 2, profile)
                pss_mid = relay.pss() if relay.alive else 0
                result = await load
            finally:
                watchdog.cancel()
                load.cancel()
                await poller.stop()
            pss_end = relay.pss() if relay.alive else 0
            tally = tally_deliveries(result, (m.message_id for m in rig_.upstream.messages))
            outcome = Outcome(
                scenario=scenario,
                profile=profile,
                result=result,
                tally=tally,
                evidence=1,
                readiness_during=tuple(poller.polls),
                sigterm_at=None,
                ready_after=await wait_ready(relay, RECOVERY_TIMEOUT),
                relay_alive=relay.alive,
                same_pid=relay.alive and relay.pid == pid,
                exit_codes=tuple(relay.exit_codes),
                pss_start=pss_start,
                pss_end=pss_end,
                problems=(),
                pss_mid=pss_mid,
            )
            problems = tuple(problems_of(outcome, rig_))
            return attrs.evolve(outcome, problems=problems)


async def _stop_if_relay_dies(rig_: Rig, client: LoadClient, restarts: bool) -> None:
    """Stop the load at once if the relay process ends on its own: retrying against nothing
    until the time budget runs out would only hide the failure behind a long wait."""
    while True:
        await asyncio.sleep(0.5)
        if not rig_.relay.alive and not (restarts and rig_.sigterm_at is not None):
            code = await rig_.relay.wait_exit(1.0)
            log.error("relay process ended (status %s): %s", code, rig_.relay.log_tail())
            client.stop()
            return


async def _nothing(rig_: Rig) -> None:
    return None


async def _until_progress(
    client: LoadClient, load: asyncio.Task[LoadResult], acked: int, profile: Profile
) -> None:
    deadline = time.monotonic() + profile.time_budget
    while client.progress < acked and not load.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if load.done():
        load.result()  # re-raise a crash of the client


@contextlib.contextmanager
def _workdir(folder: Path | None) -> Iterator[Path]:
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="relay-reliability-") as name:
        yield Path(name)


def problems_of(outcome: Outcome, rig_: Rig | None = None) -> list[str]:
    """Every promise the run broke, one line each (empty: all held)."""
    scenario, result, tally = outcome.scenario, outcome.result, outcome.tally
    stats = result.stats
    found = []
    if tally.lost:
        found.append(f"{tally.lost} message(s) answered 250 never reached the upstream")
    if tally.foreign:
        found.append(f"{tally.foreign} unknown Message-ID(s) at the upstream")
    if tally.duplicated and not scenario.duplicates_allowed:
        found.append(f"{tally.duplicated} message(s) delivered more than once")
    if scenario.duplicates_allowed and tally.extra_copies > outcome.evidence:
        found.append(
            f"{tally.extra_copies} duplicate copies but only {outcome.evidence} ambiguous drops"
        )
    refused = result.number(Verdict.REFUSED)
    if scenario.permanent:
        if refused != outcome.evidence or refused == 0:
            found.append(
                f"{refused} message(s) refused with 5xx, expected {outcome.evidence} "
                "(one per permanent upstream refusal)"
            )
    elif stats.replies_5xx:
        codes = {c: n for c, n in stats.codes.items() if c >= 500}
        found.append(f"5xx answered for a transient fault: {codes}")
    gave_up = result.number(Verdict.GAVE_UP)
    if gave_up:
        sample = [s.last_reply for s in result.states if s.verdict is Verdict.GAVE_UP][:3]
        found.append(f"{gave_up} message(s) never acked within the retry budget (last: {sample})")
    if outcome.evidence <= 0:
        found.append("the fault was never exercised")
    if scenario.clients_see_4xx and not stats.replies_4xx:
        found.append(
            "no client was told to retry (4xx) although the relay cannot absorb this fault"
        )
    if scenario.restarts:
        if outcome.exit_codes[:1] != (0,):
            found.append(f"relay did not exit 0 on SIGTERM: exit codes {outcome.exit_codes}")
        if not outcome.relay_alive:
            found.append("restarted relay is not running")
    else:
        if not outcome.relay_alive:
            found.append(f"relay process died: exit codes {outcome.exit_codes}")
        elif not outcome.same_pid:
            found.append("relay process was replaced")
    during = [p.status for p in outcome.readiness_during]
    if not during:
        found.append("no /readyz poll completed during the fault")
    if scenario.readiness is Expect.NOT_READY and all(s == 200 for s in during):
        found.append(f"/readyz stayed 200 during the fault ({len(during)} polls)")
    if scenario.readiness is Expect.NOT_READY and outcome.readiness_during:
        # Once the fault has had time to show, readiness must keep saying so (no flapping back
        # to 200 while the dependency is still unusable).
        settled = outcome.readiness_during[0].at + READINESS_SETTLE
        late = [p.status for p in outcome.readiness_during if p.at >= settled]
        if 200 in late and not scenario.restarts:
            found.append(f"/readyz flapped back to 200 during the fault: {late}")
    if scenario.readiness is Expect.READY and any(s != 200 for s in during):
        found.append(f"/readyz not 200 during a transaction-level fault: {sorted(set(during))}")
    if outcome.sigterm_at is not None:
        # A poll begun well after the signal must not find a draining relay ready.
        late = [
            p.status
            for p in outcome.readiness_during
            if p.at > outcome.sigterm_at + SIGNAL_DELIVERY
        ]
        if 200 in late:
            found.append("/readyz answered 200 after SIGTERM (while draining)")
    if not outcome.ready_after:
        found.append(f"/readyz not 200 within {RECOVERY_TIMEOUT:.0f} s after the fault")
    if outcome.relay_alive and not scenario.restarts:
        growth = outcome.pss_end - outcome.pss_start
        if growth > PSS_GROWTH_LIMIT:
            found.append(f"relay PSS grew by {growth / MIB:.1f} MiB")
        if outcome.pss_mid and outcome.pss_end - outcome.pss_mid > SECOND_HALF_GROWTH_LIMIT:
            grown = (outcome.pss_end - outcome.pss_mid) / MIB
            found.append(f"relay PSS grew by {grown:.1f} MiB over the second half of the load")
    return found


# --- the table ---------------------------------------------------------------------------------

COLUMNS = (
    "fault",
    "sent",
    "acked",
    "lost",
    "duplicated",
    "4xx seen",
    "5xx seen",
    "conn. errors",
    "/readyz during",
    "PSS start→end MiB",
    "seconds",
    "outcome",
)


def markdown_table(outcomes: list[Outcome]) -> str:
    """The fault matrix as a markdown table."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for outcome in outcomes:
        row = outcome.row()
        lines.append("| " + " | ".join(row[c].replace("|", "\\|") for c in COLUMNS) + " |")
    return "\n".join(lines)
