"""The packaged Lambda zip itself works: unpacked alone, imported and invoked against moto.

Unit tests exercise the sources; this test exercises what is deployed. It takes the zip Pants
built (`./pants package services/blacklist_lambda:lambda` writes
`dist/services.blacklist_lambda/blacklist-lambda-<version>.zip`; as a
`runtime_package_dependencies` of this test it appears under `services.blacklist_lambda/` in the
test's working directory), or the path in `LAMBDA_ZIP`. A missing zip is a failure, never a
skip: a test that silently does not run proves nothing.

The handler runs in a separate interpreter started with `-I -S` (no site-packages, no
PYTHONPATH), whose `sys.path` is the standard library, the unpacked zip, and a directory holding
only what the Lambda runtime itself provides (boto3, botocore and their dependencies). So any
module missing from the zip fails the import here exactly as it would in AWS. boto3 in that
interpreter reaches a moto server on 127.0.0.1 through `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ses_core.blacklist import BlacklistReason
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.testing import feedback_docs as fx
from ses_core.testing.moto_dynamodb import TEST_REGION, MotoServer, create_blacklist_table

#: The zip's name carries the release version (README "Releases"); the newest one is tested.
ZIP_CANDIDATES = (
    "services.blacklist_lambda/blacklist-lambda-*.zip",
    "dist/services.blacklist_lambda/blacklist-lambda-*.zip",
)
MAX_ZIP_BYTES = 1_000_000
#: What the python3.11 Lambda runtime ships: boto3, botocore and their dependencies.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
#: Modules the zip must not carry (the runtime provides them; they would blow the size budget).
EXCLUDED = ("boto3", "botocore", "s3transfer", "moto", "pytest")
TABLE = "blacklist"
SENDER = "alerts@example.com"
SUBPROCESS_TIMEOUT = 120

INVOKE = r"""
import json, sys
unpacked, runtime = sys.argv[1], sys.argv[2]
sys.path[:0] = [unpacked, runtime]
import lambda_function
import attrs, email_validator, ses_core
for module in (lambda_function, attrs, email_validator, ses_core):
    assert module.__file__.startswith(unpacked), (module.__name__, module.__file__)
import boto3
assert boto3.__file__.startswith(runtime), boto3.__file__
events = json.load(sys.stdin)
results = [lambda_function.handler(event, None) for event in events]
print(json.dumps(results))
"""


def find_zip() -> Path:
    """The packaged zip: $LAMBDA_ZIP, else the Pants output path relative to the working dir."""
    explicit = os.environ.get("LAMBDA_ZIP")
    if explicit:
        path = Path(explicit)
        assert path.is_file(), f"LAMBDA_ZIP={explicit} is not a file"
        return path
    for candidate in ZIP_CANDIDATES:
        found = sorted(Path.cwd().glob(candidate), key=lambda path: path.stat().st_mtime)
        if found:
            return found[-1].relative_to(Path.cwd())
    tried = ", ".join(str(Path.cwd() / candidate) for candidate in ZIP_CANDIDATES)
    pytest.fail(
        "the packaged Lambda zip was not found (tried "
        f"{tried}). Run `./pants package services/blacklist_lambda:lambda` or set LAMBDA_ZIP; "
        "under `./pants test` the zip comes from this test's runtime_package_dependencies."
    )


@pytest.fixture(scope="module")
def lambda_zip() -> Path:
    """Path of the zip under test."""
    return find_zip()


@pytest.fixture
def unpacked(lambda_zip: Path, tmp_path: Path) -> Path:
    """The zip extracted into a fresh, otherwise empty directory."""
    target = tmp_path / "lambda"
    target.mkdir()
    with zipfile.ZipFile(lambda_zip) as archive:
        for name in archive.namelist():
            assert not name.startswith("/") and ".." not in Path(name).parts, name
        archive.extractall(target)
    return target


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    """A directory that exposes only the packages the Lambda runtime provides."""
    target = tmp_path / "runtime"
    target.mkdir()
    for name in RUNTIME_PROVIDED:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        source = Path(module.__file__)
        if source.name == "__init__.py":
            (target / name).symlink_to(source.parent, target_is_directory=True)
        else:
            (target / source.name).symlink_to(source)
    return target


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto HTTP server on 127.0.0.1 with the blacklist table and a verified alert sender."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with MotoServer() as server:
        server.reset()  # moto's state is process-wide: start from nothing
        create_blacklist_table(server.client(), TABLE)
        ses = boto3.client("ses", region_name=TEST_REGION, endpoint_url=server.endpoint_url)
        ses.verify_email_identity(EmailAddress=SENDER)
        yield server


def invoke(
    unpacked: Path, runtime_dir: Path, server: MotoServer, events: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """Import `lambda_function` from the unpacked zip in a clean interpreter and call it."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": TEST_REGION,
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(unpacked.parent / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(unpacked.parent / "no-aws-credentials"),
        "SES_REGION": TEST_REGION,
        "EMAIL_FROM": SENDER,
        "EMAIL_TO": "ops@example.com",
        "DYNAMODB_TABLE": TABLE,
    }
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", INVOKE, str(unpacked), str(runtime_dir)],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        env=env,
        cwd=unpacked.parent,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def test_zip_is_small_and_excludes_what_the_runtime_provides(lambda_zip: Path) -> None:
    """The zip stays under 1 MB, has the fixed handler module and ships no boto3/botocore."""
    size = lambda_zip.stat().st_size
    assert size < MAX_ZIP_BYTES, f"{lambda_zip} is {size} bytes; the budget is {MAX_ZIP_BYTES}"
    with zipfile.ZipFile(lambda_zip) as archive:
        names = archive.namelist()
    assert "lambda_function.py" in names
    assert "blacklist_lambda/handler.py" in names
    top_level = {name.split("/", 1)[0] for name in names}
    assert not top_level & set(EXCLUDED), sorted(top_level & set(EXCLUDED))
    assert not [name for name in names if name.endswith("_test.py")]


def test_zip_name_carries_the_version_it_was_built_with(lambda_zip: Path) -> None:
    """`blacklist-lambda-<tag>.zip`, where <tag> is the image-tag form of the version inside."""
    with zipfile.ZipFile(lambda_zip) as archive:
        generated = archive.read("ses_core/_version.py").decode()
    found = re.search(r'^VERSION = "([^"]+)"$', generated, re.M)
    assert found is not None, generated
    tag = found.group(1).replace(".dev0+", "-")  # 0.0.0.dev0+g<sha> -> 0.0.0-g<sha>; x.y.z as is
    if os.environ.get("LAMBDA_ZIP") is None:
        assert lambda_zip.name == f"blacklist-lambda-{tag}.zip"


def test_unpacked_zip_writes_bounce_to_dynamodb(
    unpacked: Path, runtime_dir: Path, moto_server: MotoServer
) -> None:
    """The unpacked artifact, invoked with an SNS bounce event, writes the entry to the table."""
    events = [fx.lambda_sns_event(fx.bounce_with_dsn("Artifact@Example.com"))]
    result = invoke(unpacked, runtime_dir, moto_server, events)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [None]
    entry = DynamoDBBlacklist(TABLE, client=moto_server.client()).get("artifact@example.com")
    assert entry is not None
    assert entry.reason is BlacklistReason.BOUNCE
    assert entry.detail == "Permanent/General"
    assert entry.feedback_id == fx.BOUNCE_FEEDBACK_ID


def test_unpacked_zip_reports_sqs_batch_and_skips_malformed(
    unpacked: Path, runtime_dir: Path, moto_server: MotoServer
) -> None:
    """From the artifact, an SQS batch yields batchItemFailures and skips the malformed record."""
    events = [fx.sqs_event(fx.sns_envelope(fx.complaint_with_feedback()), "{broken")]
    result = invoke(unpacked, runtime_dir, moto_server, events)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"batchItemFailures": []}]
    assert '"event": "malformed_record"' in result.stderr
    entry = DynamoDBBlacklist(TABLE, client=moto_server.client()).get("richard@example.com")
    assert entry is not None and entry.reason is BlacklistReason.COMPLAINT


def test_unpacked_zip_fails_loudly_when_the_table_is_missing(
    unpacked: Path, runtime_dir: Path, moto_server: MotoServer
) -> None:
    """The artifact's handler raises (never returns) when the table is gone, even if the alert
    cannot be sent either (the reset also forgot the SES identity)."""
    moto_server.reset()
    events = [fx.lambda_sns_event(fx.bounce_with_dsn())]
    result = invoke(unpacked, runtime_dir, moto_server, events)
    assert result.returncode != 0
    assert "could not send the admin alert" in result.stderr
    assert "BlacklistUnavailable" in result.stderr.rsplit("Traceback", 1)[-1]
    assert "table not found" in result.stderr
