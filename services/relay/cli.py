"""The relay's command line: the server and the operator tools, in one shipped entry point.

    relay [serve]                  run the relay (the default: the image's ENTRYPOINT is `relay`)
    relay hash-password [USER]     print a `user:hash` entry for RELAY_AUTH_USERS
    relay api-key create TABLE     create an API key in the DynamoDB API-key table
    relay check-config             validate the environment, print the settings (secrets masked)
    relay queue ACTION             list/show/retry/delete/requeue/redrive/stats the spool

The tools live in the PEX and the image with the server, so what the README tells an operator to
run is what ships. This module only parses; `relay.main` runs the server, the tools' own modules
do their work (imported when chosen, so `relay serve` pays nothing for them).
"""

from __future__ import annotations

import argparse
import os

from ses_core.version import VERSION

PROG = "relay"
SERVE = "serve"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; no subcommand means `serve`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SMTP relay in front of Amazon SES, configured by environment variables "
        "(see the README's configuration table). Without a command it runs the relay.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(SERVE, help="run the relay until SIGTERM/SIGINT (the default)")
    hashing = commands.add_parser(
        "hash-password",
        help="print `user:hash` for RELAY_AUTH_USERS (password from the terminal or stdin)",
        description="Read a password without echo (or one line from stdin when it is not a "
        "terminal) and print the scrypt `user:hash` entry for RELAY_AUTH_USERS.",
    )
    hashing.add_argument("user", nargs="?", help="the AUTH user name (omit for the bare hash)")
    api_key = commands.add_parser("api-key", help="manage keys in the DynamoDB API-key table")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", metavar="ACTION")
    api_key_commands.required = True
    create = api_key_commands.add_parser(
        "create",
        help="create a key; print it once (only its SHA-256 is stored)",
        description="Create an API key: the key is printed once, the table keeps its SHA-256. "
        "AWS credentials and region come from boto3's usual chain.",
    )
    from relay.api_keys import add_arguments

    add_arguments(create)
    commands.add_parser(
        "check-config",
        help="validate the environment as start-up does; print the settings, secrets masked",
        description="Exit 0 and print every setting as the relay would use it (passwords, "
        "hashes and URL passwords masked), or exit 2 with the configuration error line.",
    )
    queue = commands.add_parser(
        "queue",
        help="inspect and act on the spool (list, show, retry, delete, requeue, redrive, stats)",
        description="The queue of a queueing relay, like postqueue/postsuper: RELAY_SPOOL_DIR "
        "(or --spool-dir) names the local spool; safe while the relay runs.",
    )
    from relay.queue_cli import add_arguments as add_queue_arguments

    add_queue_arguments(queue)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `argv` (without the program name); `--help` and usage errors exit here."""
    return build_parser().parse_args(argv)


def wants_server(args: argparse.Namespace) -> bool:
    """Whether `args` asks for the relay itself."""
    return args.command in (None, SERVE)


def run_tool(args: argparse.Namespace) -> int:
    """Run the operator tool `args` names; its exit status."""
    if args.command == "hash-password":
        from relay.hash_password import main as hash_password

        return hash_password([args.user] if args.user else [])
    if args.command == "api-key":
        from relay.api_keys import create

        return create(args.table, user=args.user, description=args.description)
    if args.command == "check-config":
        from relay.check_config import check_config

        return check_config(os.environ)
    if args.command == "queue":
        from relay.queue_cli import run as run_queue

        return run_queue(args, os.environ)
    raise ValueError(f"not a tool: {args.command!r}")
