"""The README stays true: its quick start and its configuration table match the code."""

from __future__ import annotations

import re
from pathlib import Path

from relay.config import ENVIRONMENT_VARIABLES

README = Path(__file__).resolve().parents[1] / "README.md"
if not README.exists():  # under Pants the file target is materialised relative to the sandbox root
    README = Path("README.md")


def _env_table_rows() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- env-table:start")
    end = text.index("<!-- env-table:end -->")
    return [line for line in text[start:end].splitlines() if line.startswith("| `")]


def test_env_table_lists_every_variable_the_relay_reads_in_order() -> None:
    """Every row of relay.config.ENVIRONMENT_VARIABLES appears, verbatim, in the README table."""
    expected = [f"| `{n}` | {m} | {d} | `{e}` |" for n, m, d, e in ENVIRONMENT_VARIABLES]
    assert _env_table_rows() == expected


def test_quick_start_has_exactly_the_two_set_up_commands() -> None:
    """The first code block runs the relay and then every test, nothing else."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./pants run services/relay:relay", "./pants test ::"]
