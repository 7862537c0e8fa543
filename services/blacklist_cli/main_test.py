"""Tests for the blacklist CLI end to end: real SQLite files, moto DynamoDB, stubbed SES v2."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from blacklist_cli.clients import Boto3Clients
from blacklist_cli.commands import ExitCode
from blacklist_cli.main import main
from ses_core.blacklist import BlacklistEntry, BlacklistEvent, BlacklistReason
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.testing.moto_dynamodb import create_blacklist_table

REGION = "us-east-1"
T1 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class Run:
    """The outcome of one CLI run."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err


class FakeTty(io.StringIO):
    """A stderr that claims to be a terminal, so progress bars are drawn."""

    def isatty(self) -> bool:
        return True


class FixedClients:
    """Hands out prepared clients by service name, recording the regions asked for."""

    def __init__(self, **clients: Any) -> None:
        self.clients = clients
        self.regions: list[tuple[str, str | None]] = []

    def client(self, service: str, region: str | None) -> Any:
        self.regions.append((service, region))
        return self.clients[service]


def cli(*argv: str, clients: Any = None, stderr: io.StringIO | None = None) -> Run:
    """Run main() with captured output."""
    out = io.StringIO()
    err = stderr if stderr is not None else io.StringIO()
    code = main(list(argv), clients=clients, stdout=out, stderr=err, sleep=lambda s: None)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a SQLite blacklist file that does not exist yet."""
    return tmp_path / "blacklist.sqlite3"


def seed(db: Path, *entries: BlacklistEntry, events: tuple[BlacklistEvent, ...] = ()) -> None:
    """Write entries and events into a real SQLite file."""
    blacklist = SqliteBlacklist(db)
    try:
        for entry in entries:
            blacklist.put(entry)
        for event in events:
            blacklist.record(event)
    finally:
        blacklist.close()


def bounce(address: str, when: datetime = T1) -> BlacklistEvent:
    """A Permanent bounce event."""
    return BlacklistEvent(
        address=address,
        reason=BlacklistReason.BOUNCE,
        detail="Permanent/General",
        feedback_id=f"fb-{address}",
        message_id="m-1",
        timestamp=when,
    )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region; nothing can reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def table(aws_env: None) -> Iterator[Any]:
    """A moto DynamoDB table with the original schema; yields the client."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_blacklist_table(client, "blacklist")
        yield client


# -- SQLite ------------------------------------------------------------------------------------


def test_add_check_remove_round_trip_on_sqlite(db: Path) -> None:
    """add creates the file, check exits 1 while blacklisted, remove makes check exit 0."""
    added = cli("add", "--sqlite", str(db), "Bob@Example.com", "--detail", "asked by phone")
    assert added.code == ExitCode.OK and added.out == "bob@example.com: added (manual)\n"
    checked = cli("check", "--sqlite", str(db), "bob@example.com", "ann@example.com")
    assert checked.code == ExitCode.NEGATIVE
    lines = checked.out.splitlines()
    assert lines[0].startswith("bob@example.com: BLACKLISTED (manual, asked by phone; 1 event(s)")
    assert lines[1] == "ann@example.com: not blacklisted"
    assert cli("remove", "--sqlite", str(db), "BOB@example.com").code == ExitCode.OK
    assert cli("check", "--sqlite", str(db), "bob@example.com").code == ExitCode.OK


def test_check_json_output(db: Path) -> None:
    """check --format json prints one object per address with the entry or null."""
    seed(db, events=(bounce("jane@example.com"),))
    run = cli("check", "--sqlite", str(db), "--format", "json", "jane@example.com", "x@example.com")
    first, second = (json.loads(line) for line in run.out.splitlines())
    assert first["blacklisted"] is True
    assert first["entry"]["detail"] == "Permanent/General"
    assert first["entry"]["first_seen"] == "2024-03-01T12:00:00+00:00"
    assert second == {"address": "x@example.com", "blacklisted": False, "entry": None}


def test_add_keeps_existing_entries_unless_replace(db: Path) -> None:
    """add never silently overwrites a bounce's history; --replace does."""
    seed(db, events=(bounce("jane@example.com"),))
    kept = cli("add", "--sqlite", str(db), "jane@example.com")
    assert kept.out == "jane@example.com: already blacklisted (bounce); kept\n"
    replaced = cli(
        "add", "--sqlite", str(db), "--replace", "--reason", "imported", "jane@example.com"
    )
    assert replaced.code == ExitCode.OK
    blacklist = SqliteBlacklist(db)
    entry = blacklist.get("jane@example.com")
    blacklist.close()
    assert entry is not None and entry.reason is BlacklistReason.IMPORTED


def test_remove_of_unknown_address_exits_1(db: Path) -> None:
    """remove says so and exits 1 when an address was not blacklisted."""
    seed(db, events=(bounce("jane@example.com"),))
    run = cli("remove", "--sqlite", str(db), "jane@example.com", "ghost@example.com")
    assert run.code == ExitCode.NEGATIVE
    assert run.out == "jane@example.com: removed\nghost@example.com: was not blacklisted\n"


def test_list_table_and_filters(db: Path) -> None:
    """list filters by reason, domain (with subdomains) and last-seen time."""
    seed(
        db,
        BlacklistEntry.manual("ops@corp.example", now=datetime(2024, 1, 1, tzinfo=UTC)),
        events=(
            bounce("a@mail.corp.example", datetime(2024, 5, 1, tzinfo=UTC)),
            bounce("b@other.example", datetime(2024, 6, 1, tzinfo=UTC)),
        ),
    )
    table = cli("list", "--sqlite", str(db))
    header, *rows = table.out.splitlines()
    assert header.split() == ["ADDRESS", "REASON", "DETAIL", "COUNT", "FIRST_SEEN", "LAST_SEEN"]
    assert len(rows) == 3
    assert "Permanent/General" in table.out

    def addresses(*extra: str) -> list[str]:
        run = cli("list", "--sqlite", str(db), "--format", "json", *extra)
        assert run.code == ExitCode.OK
        return sorted(json.loads(line)["address"] for line in run.out.splitlines())

    assert addresses("--reason", "bounce") == ["a@mail.corp.example", "b@other.example"]
    assert addresses("--reason", "manual", "--reason", "imported") == ["ops@corp.example"]
    assert addresses("--domain", "CORP.example") == ["a@mail.corp.example", "ops@corp.example"]
    assert addresses("--since", "2024-05-15") == ["b@other.example"]
    assert len(addresses("--limit", "2")) == 2


def test_list_of_empty_file_prints_only_the_header(db: Path) -> None:
    """An empty blacklist lists as a bare header row."""
    seed(db)
    assert cli("list", "--sqlite", str(db)).out.split() == [
        "ADDRESS",
        "REASON",
        "DETAIL",
        "COUNT",
        "FIRST_SEEN",
        "LAST_SEEN",
    ]


# -- errors and exit codes ---------------------------------------------------------------------


def test_invalid_address_is_a_one_line_usage_error(db: Path) -> None:
    """A bad address exits 2 with one line naming it, before the store is touched."""
    run = cli("add", "--sqlite", str(db), "ok@example.com", "not-an-address")
    assert run.code == ExitCode.USAGE
    assert run.err.startswith("error: invalid address 'not-an-address': ")
    assert run.err.count("\n") == 1
    assert not db.exists()


def test_missing_sqlite_file_is_a_usage_error(db: Path) -> None:
    """Reading commands do not create an empty blacklist where the operator mistyped a path."""
    run = cli("check", "--sqlite", str(db), "a@example.com")
    assert run.code == ExitCode.USAGE
    assert "no SQLite blacklist at" in run.err
    assert not db.exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["check", "a@example.com"],
        ["check", "--sqlite", "x", "--table", "t", "a@example.com"],
        ["list", "--sqlite", "x", "--limit", "0"],
        ["list", "--sqlite", "x", "--since", "yesterday"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    """argparse errors (no command, no store, two stores, bad values) exit 2."""
    assert cli(*argv).code == ExitCode.USAGE


def test_invalid_domain_filter_is_a_usage_error(db: Path) -> None:
    """A domain that cannot be an e-mail domain is refused with exit 2."""
    seed(db)
    run = cli("list", "--sqlite", str(db), "--domain", "bad domain")
    assert run.code == ExitCode.USAGE and run.err.startswith("error: invalid domain")


def test_missing_credentials_exit_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without any AWS credentials the CLI says so in one line and exits 3."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    argv = ("check", "--table", "blacklist", "--region", REGION, "a@example.com")
    run = cli(*argv, clients=Boto3Clients())
    assert run.code == ExitCode.CREDENTIALS
    assert run.err.startswith("error: no usable AWS credentials")
    assert run.err.count("\n") == 1


def test_missing_region_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No --region and no configured region exits 2 with a hint."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    run = cli("check", "--table", "blacklist", "a@example.com", clients=Boto3Clients())
    assert run.code == ExitCode.USAGE
    assert run.err == "error: no AWS region: pass --region or set AWS_REGION\n"


def test_access_denied_exits_3() -> None:
    """Credentials AWS rejects (AccessDeniedException) exit 3 with AWS's code."""
    client = boto3.client(
        "dynamodb", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(client) as stubber:
        stubber.add_client_error("batch_get_item", "AccessDeniedException", "not allowed")
        argv = ("check", "--table", "blacklist", "a@example.com")
        run = cli(*argv, clients=FixedClients(dynamodb=client))
    assert run.code == ExitCode.CREDENTIALS
    assert "AccessDeniedException" in run.err


def test_missing_table_exits_4(table: Any) -> None:
    """A table that does not exist is an unavailable store: exit 4."""
    run = cli("check", "--table", "nope", "a@example.com", clients=FixedClients(dynamodb=table))
    assert run.code == ExitCode.UNAVAILABLE
    assert run.err.startswith("error: blacklist unavailable:") and "table not found" in run.err


# -- DynamoDB (moto) ---------------------------------------------------------------------------


def test_dynamodb_commands_against_moto(table: Any) -> None:
    """add, check, list and remove work against the original table schema."""
    clients = FixedClients(dynamodb=table)
    store = ("--table", "blacklist", "--region", "eu-west-1")
    assert cli("add", *store, "a@example.com", "b@example.com", clients=clients).code == 0
    assert cli("check", *store, "A@example.com", clients=clients).code == ExitCode.NEGATIVE
    listed = cli("list", *store, "--format", "json", clients=clients)
    assert sorted(json.loads(line)["address"] for line in listed.out.splitlines()) == [
        "a@example.com",
        "b@example.com",
    ]
    assert cli("remove", *store, "a@example.com", clients=clients).code == ExitCode.OK
    assert cli("check", *store, "a@example.com", clients=clients).code == ExitCode.OK
    assert clients.regions[0] == ("dynamodb", "eu-west-1")


def test_legacy_items_are_listed_as_imported(table: Any) -> None:
    """Items of the original service (only `email`) list as imported entries."""
    table.put_item(TableName="blacklist", Item={"email": {"S": "old@example.com"}})
    argv = ("list", "--table", "blacklist", "--format", "json")
    run = cli(*argv, clients=FixedClients(dynamodb=table))
    (entry,) = (json.loads(line) for line in run.out.splitlines())
    assert entry["address"] == "old@example.com" and entry["reason"] == "imported"


# -- SES suppression sync through the CLI ------------------------------------------------------


@pytest.fixture
def sesv2() -> Iterator[tuple[Any, Stubber]]:
    """A real sesv2 client with a Stubber (moto lacks the suppression-list APIs)."""
    client = boto3.client(
        "sesv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def listing(*addresses: str) -> dict[str, Any]:
    """A one-page ListSuppressedDestinations response."""
    return {
        "SuppressedDestinationSummaries": [
            {"EmailAddress": address, "Reason": "BOUNCE", "LastUpdateTime": T1}
            for address in addresses
        ]
    }


def test_import_ses_into_sqlite(db: Path, sesv2: tuple[Any, Stubber]) -> None:
    """import-ses creates the file, writes new entries and prints a summary."""
    client, stubber = sesv2
    stubber.add_response("list_suppressed_destinations", listing("a@example.com", "b@example.com"))
    clients = FixedClients(sesv2=client)
    run = cli("import-ses", "--sqlite", str(db), "--ses-region", "eu-west-1", clients=clients)
    assert run.code == ExitCode.OK
    assert run.out == (
        "SES suppression list -> blacklist: 2 read, wrote 2, 0 already present, 0 invalid, "
        "0 refused\n"
    )
    assert run.err == ""  # stderr is not a terminal: no progress bar
    assert clients.regions == [("sesv2", "eu-west-1")]
    assert cli("check", "--sqlite", str(db), "a@example.com").code == ExitCode.NEGATIVE


def test_import_ses_dry_run_lists_and_writes_nothing(db: Path, sesv2: tuple[Any, Stubber]) -> None:
    """import-ses --dry-run prints each planned entry and does not create the file."""
    client, stubber = sesv2
    stubber.add_response("list_suppressed_destinations", listing("a@example.com"))
    run = cli("import-ses", "--sqlite", str(db), "--dry-run", clients=FixedClients(sesv2=client))
    assert run.out.splitlines()[0] == "would write a@example.com (BOUNCE)"
    assert "would write 1" in run.out
    assert not db.exists()


def test_export_ses_from_dynamodb_with_progress_bar(table: Any, sesv2: tuple[Any, Stubber]) -> None:
    """export-ses puts missing addresses, and draws a progress bar when stderr is a terminal."""
    client, stubber = sesv2
    clients = FixedClients(dynamodb=table, sesv2=client)
    cli("add", "--table", "blacklist", "a@example.com", "b@example.com", clients=clients)
    stubber.add_response("list_suppressed_destinations", listing("b@example.com"))
    stubber.add_response(
        "put_suppressed_destination", {}, {"EmailAddress": "a@example.com", "Reason": "BOUNCE"}
    )
    tty = FakeTty()
    run = cli("export-ses", "--table", "blacklist", clients=clients, stderr=tty)
    assert run.code == ExitCode.OK
    assert "wrote 1, 1 already present" in run.out
    assert "export-ses" in run.err and "1/1" in run.err


def test_export_ses_refusals_exit_1(db: Path, sesv2: tuple[Any, Stubber]) -> None:
    """Addresses SES refuses are listed on stderr and the command exits 1."""
    client, stubber = sesv2
    seed(db, events=(bounce("a@example.com"),))
    stubber.add_response("list_suppressed_destinations", listing())
    stubber.add_client_error("put_suppressed_destination", "BadRequestException", "bad address")
    run = cli("export-ses", "--sqlite", str(db), clients=FixedClients(sesv2=client))
    assert run.code == ExitCode.NEGATIVE
    assert "refused by SES: a@example.com: bad address" in run.err


def test_export_ses_service_error_exits_4(db: Path, sesv2: tuple[Any, Stubber]) -> None:
    """An SES failure other than a refused address is reported in one line with exit 4."""
    client, stubber = sesv2
    seed(db, events=(bounce("a@example.com"),))
    stubber.add_client_error("list_suppressed_destinations", "TooManyRequestsException", "slow")
    run = cli("export-ses", "--sqlite", str(db), clients=FixedClients(sesv2=client))
    assert run.code == ExitCode.UNAVAILABLE
    assert run.err.startswith("error: AWS call failed:")


def test_export_ses_rejects_a_non_positive_rate(db: Path) -> None:
    """--rate 0 is a usage error."""
    seed(db)
    run = cli("export-ses", "--sqlite", str(db), "--rate", "0", clients=FixedClients())
    assert run.code == ExitCode.USAGE


# -- legacy key migration ----------------------------------------------------------------------


def test_migrate_keys_rewrites_mixed_case_legacy_items(table: Any) -> None:
    """Legacy mixed-case items move to normalised keys; an existing normalised entry wins."""
    clients = FixedClients(dynamodb=table)
    for raw in ("Bob@Example.com", "ALICE@example.com", "carol@example.com", "not-an-address"):
        table.put_item(TableName="blacklist", Item={"email": {"S": raw}})
    cli("add", "--table", "blacklist", "--replace", "alice@example.com", clients=clients)
    dry = cli("migrate-keys", "--table", "blacklist", "--dry-run", clients=clients)
    assert dry.code == ExitCode.OK
    assert "Bob@Example.com: would rewrite as bob@example.com" in dry.out
    assert table.scan(TableName="blacklist")["Count"] == 5
    run = cli("migrate-keys", "--table", "blacklist", clients=clients)
    assert run.code == ExitCode.OK
    assert run.out.splitlines()[-1] == (
        "blacklist: 5 items scanned, rewrote 1, 1 merged into existing entries, 1 invalid keys"
    )
    keys = sorted(item["email"]["S"] for item in table.scan(TableName="blacklist")["Items"])
    assert keys == ["alice@example.com", "bob@example.com", "carol@example.com", "not-an-address"]
    check = ("check", "--table", "blacklist", "--format", "json", "alice@example.com")
    alice = json.loads(cli(*check, clients=clients).out)
    assert alice["entry"]["reason"] == "manual"


def test_migrate_keys_refuses_sqlite(db: Path) -> None:
    """migrate-keys is a DynamoDB migration; on SQLite it is a usage error."""
    seed(db)
    run = cli("migrate-keys", "--sqlite", str(db))
    assert run.code == ExitCode.USAGE and "DynamoDB" in run.err
