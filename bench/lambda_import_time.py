"""Cold import time of the Lambda handler module, with boto3 already imported (goal: <= 150 ms).

Each run is a fresh interpreter that imports boto3 first (the Lambda runtime has it loaded
before our code runs), then times `import blacklist_lambda.handler`. Two figures are printed:
- "bytecode cached": __pycache__ is warm (a second cold start on a container image);
- "no bytecode": our modules (and, with --zip, everything in the zip) are imported from a fresh
  copy with no __pycache__ and writing disabled, as from a zip without .pyc files on Lambda's
  read-only filesystem: they are compiled during every cold import. The standard library and
  boto3 keep their bytecode, as in the Lambda runtime. (Without --zip, third-party packages
  from site-packages keep theirs too, so use --zip for the deployment figure.)

Usage:
    python bench/lambda_import_time.py [--runs 20] \
        [--zip dist/services.blacklist_lambda/blacklist-lambda-*.zip]

Without --zip the sources are imported (libs/ and services/ on sys.path); with --zip the zip is
unpacked into a temporary directory and imported from there (boto3 from this interpreter).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = "blacklist_lambda.handler"
GOAL_MS = 150.0
TIMEOUT = 60

PROBE = f"""
import time
import boto3
start = time.perf_counter()
import {MODULE}
print((time.perf_counter() - start) * 1000.0)
"""

BOTO3_PROBE = """
import time
start = time.perf_counter()
import boto3
print((time.perf_counter() - start) * 1000.0)
"""


def run_once(code: str, path: list[str], *, bytecode: bool) -> float:
    """Time one fresh interpreter; return milliseconds."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(path)
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def measure(code: str, path: list[str], runs: int, *, bytecode: bool) -> list[float]:
    """`runs` timings after one untimed run (warms the OS file cache and, if allowed, pycache)."""
    run_once(code, path, bytecode=bytecode)
    return [run_once(code, path, bytecode=bytecode) for _ in range(runs)]


def stage(zip_path: Path | None, target: Path) -> list[str]:
    """Put the code under test into `target` (no __pycache__); return the sys.path entries."""
    if zip_path is not None:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(target)
        return [str(target)]
    ignore = shutil.ignore_patterns("__pycache__", "*_test.py")
    shutil.copytree(REPO / "libs" / "ses_core", target / "ses_core", ignore=ignore)
    shutil.copytree(
        REPO / "services" / "blacklist_lambda", target / "blacklist_lambda", ignore=ignore
    )
    return [str(target)]


def describe(label: str, timings: list[float]) -> str:
    """One printed line: median, min and max."""
    median = statistics.median(timings)
    verdict = "ok" if median <= GOAL_MS else "OVER GOAL"
    return (
        f"{label:<44} median {median:7.1f} ms  min {min(timings):7.1f}  "
        f"max {max(timings):7.1f}  ({len(timings)} runs; goal <= {GOAL_MS:.0f} ms: {verdict})"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the figures; exit 0 (the goal is reported, not enforced)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per figure (default 20)")
    parser.add_argument("--zip", type=Path, help="measure the packaged zip instead of sources")
    args = parser.parse_args(argv)
    if args.zip is not None:
        source = f"zip {args.zip} ({args.zip.stat().st_size} bytes)"
    else:
        source = "sources (libs/ses_core, services/blacklist_lambda)"
    print(f"cold import of {MODULE} from {source}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="lambda-import-") as tmp:
        cached_path = stage(args.zip, Path(tmp) / "cached")
        reference = statistics.median(measure(BOTO3_PROBE, cached_path, args.runs, bytecode=True))
        print(f"{'(reference) import boto3 itself':<44} median {reference:7.1f} ms")
        cached = measure(PROBE, cached_path, args.runs, bytecode=True)
        print(describe("handler, boto3 preimported, bytecode cached", cached))
        fresh_path = stage(args.zip, Path(tmp) / "fresh")
        compiled = measure(PROBE, fresh_path, args.runs, bytecode=False)
        print(describe("handler, boto3 preimported, no bytecode", compiled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
