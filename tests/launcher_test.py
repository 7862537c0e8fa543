"""The ./pants launcher's own checks, run offline against fakes: nothing is downloaded or built.

Each test copies the launcher into a temporary build root with its own pants.toml and cache dir,
and runs it with a PATH holding only the few tools it calls, so no real Python 3.9, pip or pyenv
can be reached. Where a test needs a bootstrapped cache, it plants a fake venv whose `python`
echoes its arguments and whose `pex` writes a known file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[1] / "pants"
if (
    not LAUNCHER.exists()
):  # under Pants the file target is materialised relative to the sandbox root
    LAUNCHER = Path("pants")

PANTS_VERSION = "2.17.1"
PEX_NAME = "pex-v2.1.137"
#: What the fake `pex` writes; each build root's pants.toml pins a fingerprint for it.
FAKE_PEX = b"#!/bin/sh\necho fake pex PEX\n"
#: The commands the launcher (and the fakes) call: the only ones on their PATH.
TOOLS = (
    "cat",
    "chmod",
    "cut",
    "dirname",
    "flock",
    "mkdir",
    "mktemp",
    "mv",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "stat",
    "touch",
)
TIMEOUT = 30


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def _build_root(tmp_path: Path, pinned: bytes = FAKE_PEX) -> Path:
    """A build root holding the launcher and a pants.toml that expects `pinned` as the pex PEX."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(LAUNCHER, root / "pants")
    sha = hashlib.sha256(pinned).hexdigest()
    (root / "pants.toml").write_text(
        f'[GLOBAL]\npants_version = "{PANTS_VERSION}"\n\n[pex-cli]\nknown_versions = [\n'
        f'  "v2.1.137|linux_x86_64|{sha}|{len(pinned)}",\n]\n',
        encoding="utf-8",
    )
    return root


def _bootstrapped_cache(tmp_path: Path, name: str = "cache", pex_delay: float = 0) -> Path:
    """A cache dir whose Pants venv is complete; its fake pex logs each build to pex-builds.log."""
    cache = tmp_path / name
    venv = cache / f"pants-{PANTS_VERSION}"
    _script(venv / "bin" / "python", 'echo "fake pants: $*"')
    source = tmp_path / "fake-pex-output"
    source.write_bytes(FAKE_PEX)
    _script(
        venv / "bin" / "pex",
        f'echo build >> "{tmp_path}/pex-builds.log"; sleep {pex_delay}\n'
        'while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\n'
        f'cat "{source}" > "$out"',
    )
    (venv / ".bootstrap-complete").touch()
    return cache


def _environment(tmp_path: Path, cache: Path, **extra: str) -> dict[str, str]:
    tools = tmp_path / "bin"
    if not tools.exists():
        tools.mkdir()
        for tool in TOOLS:
            found = shutil.which(tool)
            assert found is not None, f"{tool} is needed to run the launcher"
            (tools / tool).symlink_to(found)
    return {
        "PATH": str(tools),
        "HOME": str(tmp_path / "home"),
        "PYENV_ROOT": str(tmp_path / "pyenv"),
        "PANTS_BOOTSTRAP_CACHE": str(cache),
        **extra,
    }


def _launch(root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.Popen(
        [bash, str(root / "pants"), "--version"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, stdout, stderr


def _run(root: Path, env: dict[str, str]) -> tuple[int, str, str]:
    return _finish(_launch(root, env))


@pytest.mark.parametrize(
    "python",
    ["/bin/false", sys.executable, "/nonexistent/python3.9"],
    ids=["false", "cpython-3.11", "missing"],
)
def test_bootstrap_python_that_is_not_cpython_39_is_refused_by_name(
    tmp_path: Path, python: str
) -> None:
    """A wrong PANTS_BOOTSTRAP_PYTHON fails with one line naming it, before any cache is made."""
    root = _build_root(tmp_path)
    cache = tmp_path / "cache"
    env = _environment(tmp_path, cache, PANTS_BOOTSTRAP_PYTHON=python)

    returncode, _, stderr = _run(root, env)

    assert returncode != 0
    [line] = stderr.strip().splitlines()
    assert f"PANTS_BOOTSTRAP_PYTHON={python} is not a CPython 3.9" in line
    assert not cache.exists()
    assert not (root / ".pants-bootstrap").exists()


def test_a_cpython_39_bootstrap_python_reaches_pants(tmp_path: Path) -> None:
    """An interpreter that answers as CPython 3.9 passes the check and Pants runs."""
    root = _build_root(tmp_path)
    (root / ".pants-bootstrap").mkdir()
    (root / ".pants-bootstrap" / PEX_NAME).write_bytes(FAKE_PEX)
    cache = _bootstrapped_cache(tmp_path)
    python39 = _script(tmp_path / "python3.9", "exit 0")
    env = _environment(tmp_path, cache, PANTS_BOOTSTRAP_PYTHON=str(python39))

    returncode, stdout, stderr = _run(root, env)

    assert (returncode, stderr) == (0, "")
    assert stdout.strip().endswith("/bin/pants --version")


def test_pex_pex_is_built_under_a_private_name_and_renamed_once_verified(tmp_path: Path) -> None:
    """The verified PEX appears at its final name; no temporary file is left behind."""
    root = _build_root(tmp_path)
    env = _environment(tmp_path, _bootstrapped_cache(tmp_path))

    returncode, _, stderr = _run(root, env)

    assert returncode == 0, stderr
    built = root / ".pants-bootstrap" / PEX_NAME
    assert built.read_bytes() == FAKE_PEX
    assert built.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in built.parent.iterdir()) == [".lock", PEX_NAME]


def test_pex_pex_with_an_unexpected_fingerprint_is_not_installed(tmp_path: Path) -> None:
    """A build whose sha256 differs from pants.toml fails, says so and installs nothing."""
    root = _build_root(tmp_path, pinned=b"what pants.toml expects")
    env = _environment(tmp_path, _bootstrapped_cache(tmp_path))

    returncode, _, stderr = _run(root, env)

    assert returncode == 1
    assert hashlib.sha256(FAKE_PEX).hexdigest() in stderr
    assert [p.name for p in (root / ".pants-bootstrap").iterdir()] == [".lock"]


def test_runs_with_different_cache_dirs_build_the_pex_pex_once(tmp_path: Path) -> None:
    """Two concurrent runs of one checkout with two cache dirs share the checkout's lock."""
    root = _build_root(tmp_path)
    first = _launch(root, _environment(tmp_path, _bootstrapped_cache(tmp_path, "a", 0.5)))
    second = _launch(root, _environment(tmp_path, _bootstrapped_cache(tmp_path, "b", 0.5)))

    results = [_finish(process) for process in (first, second)]

    assert [returncode for returncode, _, _ in results] == [0, 0], results
    assert (tmp_path / "pex-builds.log").read_text(encoding="utf-8").split() == ["build"]
    assert (root / ".pants-bootstrap" / PEX_NAME).read_bytes() == FAKE_PEX
