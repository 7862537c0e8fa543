"""Run the relay's fault matrix and print it as the markdown table of docs/reliability.md.

Prints figures; it is not a test (the same rows run as tests in tests/reliability/). Each row
starts a recording SES stand-in, the relay as a process and, where needed, moto DynamoDB behind a
fault proxy or a redis-server, all on 127.0.0.1; injects the fault while the load client runs;
and reports messages sent, acked, lost, duplicated, 4xx/5xx replies seen, readiness during the
fault, relay PSS, and whether every promise held (see `tests.reliability.scenarios`).

Usage:
    PYTHONPATH=libs:services:. python bench/reliability_report.py --profile short
    PYTHONPATH=libs:services:. python bench/reliability_report.py --profile long
    PYTHONPATH=libs:services:. python bench/reliability_report.py --only throttle_storm,redis_killed

Exit status 1 when a row broke a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import platform
import shlex
import sys
import time

from tests.reliability.scenarios import (
    BY_KEY,
    PROFILES,
    SCENARIOS,
    Outcome,
    markdown_table,
    run_load,
    run_scenario,
)


async def _run(profile_name: str, keys: list[str], with_load: bool) -> list[Outcome]:
    profile = PROFILES[profile_name]
    outcomes = []
    if with_load:
        outcomes.append(await run_load(profile))
        _progress(outcomes[-1])
    for key in keys:
        outcomes.append(await run_scenario(BY_KEY[key], profile))
        _progress(outcomes[-1])
    return outcomes


def _progress(outcome: Outcome) -> None:
    row = outcome.row()
    print(
        f"  {outcome.scenario.key}: {row['acked']}/{row['sent']} acked, lost {row['lost']}, "
        f"dup {row['duplicated']}, {row['seconds']} s: {row['outcome']}",
        file=sys.stderr,
        flush=True,
    )


def main() -> int:
    """Parse arguments, run the rows, print the table; 1 if a row failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--only", default="", help="comma-separated row keys (default: all)")
    parser.add_argument("--no-load", action="store_true", help="skip the plain load row")
    args = parser.parse_args()
    keys = [k for k in args.only.split(",") if k] or [s.key for s in SCENARIOS]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(BY_KEY)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    with_load = not args.no_load and not args.only
    outcomes = asyncio.run(_run(args.profile, keys, with_load))
    elapsed = time.monotonic() - started
    profile = PROFILES[args.profile]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "PYTHONPATH=libs:services:. python bench/reliability_report.py " + shlex.join(
        sys.argv[1:]
    )
    print(
        f"Profile `{profile.name}` ({now}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {elapsed / 60:.1f} min): load row {profile.load_messages} "
        f"messages over {profile.load_connections} connections; fault rows "
        f"{profile.fault_messages} messages over {profile.fault_connections} connections, fault "
        f"{profile.fault_seconds:g} s (throttling storm {profile.storm_seconds:g} s, upstream "
        f"outage {profile.outage_seconds:g} s).\n"
    )
    print(markdown_table(outcomes))
    print(f"\nCommand: `{command}`")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
