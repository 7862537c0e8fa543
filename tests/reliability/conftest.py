"""The `long` profile: selected by `--long`, `-m long` or RELIABILITY_LONG=1, else deselected.

CI runs the short profile inside `pants test ::`. Long variants carry `@pytest.mark.long` and are
*deselected*, not skipped, when not asked for: a skip would read as "something could not run",
while these simply are not part of the requested run.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add `--long` (run the long reliability profile too)."""
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="also run the long reliability profile (tests marked `long`)",
    )


def long_selected(config: pytest.Config) -> bool:
    """Whether this run asked for the long profile."""
    if config.getoption("--long", default=False):
        return True
    if os.environ.get("RELIABILITY_LONG", "") == "1":
        return True
    expression = str(config.getoption("-m", default="") or "")
    return "long" in expression and "not long" not in expression


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect `long` tests unless the long profile was asked for."""
    if long_selected(config):
        return
    deselected = [item for item in items if item.get_closest_marker("long") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.get_closest_marker("long") is None]
