"""Print how many SES notifications per second one core parses and decides on.

The workload is a realistic Permanent/General bounce (DSN fields, original headers, three
destinations) in a Lambda SNS event, given as JSON text, through `parse_feedback` and
`decide_suppression`. Three figures are printed:

- "repeated document": the same event every time. `EmailAddress.parse` has an LRU cache, so this
  measures cache hits for the address (the typical case for hot senders and SNS redeliveries).
- "distinct recipients": every event bounces a different, never-seen ASCII address, so each
  iteration pays full address validation once. This is the honest worst case for a realistic
  bounce.
- "international": every event bounces a different address with a non-ASCII local part and an
  IDN domain (IDNA conversion is far slower than ASCII checks). Informational: the issue's goal is
  for "a realistic bounce", and most bounces are ASCII, so no goal applies; the figure is printed
  so that nobody mistakes the ASCII figures for the international one.

Each is reported per second of this process's CPU time (what one dedicated core does; robust to
other processes sharing the machine) and per wall-clock second, and the first two with a verdict
against the goal (per CPU-second). Every loop is bounded by `--seconds` and `--count`.

Run: PYTHONPATH=libs:services:. python bench/parse_notifications.py [--seconds S] [--count N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import attrs

from ses_core.feedback import decide_suppression, parse_feedback
from ses_core.testing import feedback_docs as fixtures

GOAL_PER_SECOND = 20_000


def _event_text(recipient: str) -> str:
    return json.dumps(fixtures.lambda_sns_event(fixtures.bounce_with_dsn(recipient)))


@attrs.frozen
class Figures:
    """One workload's result: notifications, wall seconds and CPU seconds spent parsing."""

    count: int
    wall: float
    cpu: float

    @property
    def per_second_wall(self) -> float:
        """Throughput by the wall clock (drops when other processes share the core)."""
        return self.count / self.wall if self.wall else 0.0

    @property
    def per_second_cpu(self) -> float:
        """Throughput per second of this process's CPU time: what one dedicated core does."""
        return self.count / self.cpu if self.cpu else 0.0


def measure(payloads: Callable[[int], str], *, seconds: float, count: int) -> Figures:
    """Time parse + decision only (building the inputs is excluded), bounded by time and count."""
    done = 0
    wall = cpu = 0.0
    deadline = time.perf_counter() + seconds
    while done < count and time.perf_counter() < deadline:
        batch = [payloads(done + i) for i in range(min(500, count - done))]
        w0, c0 = time.perf_counter(), time.process_time()
        for text in batch:
            for record in parse_feedback(text):
                decision = decide_suppression(record.notification)
                if not decision.to_blacklist:
                    raise AssertionError("the benchmark bounce must blacklist its recipient")
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        done += len(batch)
    return Figures(count=done, wall=wall, cpu=cpu)


def _report(label: str, figures: Figures, *, goal: int | None) -> None:
    """Print one workload's figures, and its verdict against `goal` (None: informational)."""
    if goal is None:
        verdict = "informational, no goal"
    elif figures.per_second_cpu >= goal:
        verdict = f"goal {goal:,}/s met"
    else:
        verdict = f"goal {goal:,}/s NOT met"
    print(
        f"{label:<22} {figures.per_second_cpu:9,.0f}/s per CPU-second, "
        f"{figures.per_second_wall:9,.0f}/s wall clock ({figures.count:,} notifications): "
        f"{verdict}"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the three workloads, print the figures and verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per workload")
    parser.add_argument("--count", type=int, default=200_000, help="max notifications per workload")
    args = parser.parse_args(argv)

    repeated = _event_text("jane@example.com")
    measure(lambda _: repeated, seconds=0.2, count=2_000)  # warm-up: imports, caches
    same = measure(lambda _: repeated, seconds=args.seconds, count=args.count)
    run_id = time.time_ns()
    fresh = measure(
        lambda i: _event_text(f"user{i}.{run_id}@bench{i % 97}.example.com"),
        seconds=args.seconds,
        count=args.count,
    )
    international = measure(
        # Non-ASCII local part and IDN domain, both new every time: no cache hit is possible.
        lambda i: _event_text(f"jürgen.{i}.{run_id}@münchen-{i}.bücher.de"),
        seconds=args.seconds,
        count=args.count,
    )
    print("SES Permanent bounce in a Lambda SNS event, parse_feedback + decide_suppression:")
    _report("repeated document:", same, goal=GOAL_PER_SECOND)
    _report("distinct recipients:", fresh, goal=GOAL_PER_SECOND)
    _report("international:", international, goal=None)
    print(
        f"load average (1 min) during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
