"""Print an scrypt hash for `RELAY_AUTH_USERS`: `relay hash-password [user]`.

The password is read without echo (or from stdin when it is not a terminal), so it never lands in
shell history. The output is the `user:hash` entry to put in `RELAY_AUTH_USERS`.
`python -m relay.hash_password [user]` still works where the sources are importable.
"""

from __future__ import annotations

import getpass
import sys

from relay.auth import hash_password


def main(argv: list[str] | None = None) -> int:
    """Read a password, print `user:hash` (or the bare hash without a user); return 0."""
    args = sys.argv[1:] if argv is None else argv
    user = args[0] if args else None
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password refused", file=sys.stderr)
        return 1
    hashed = hash_password(password)
    print(f"{user}:{hashed}" if user else hashed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
