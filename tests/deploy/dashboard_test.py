"""The Grafana dashboard: the panels issue 18 asks for, valid PromQL in every panel, a data
source chosen at import, and no two panels on top of each other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.manifests import dashboard, dashboard_expressions, dashboard_panels, tool

#: Panel -> a metric it must read (issue 18: throughput, replies by class, limiter wait, queue
#: depth and age, upstream latency, blacklist hits and cache ratio).
REQUIRED_PANELS = {
    "Throughput": "relay_queue_deliveries_total",
    "Replies by class": "relay_transactions_total",
    "Limiter wait": "relay_limiter_wait_seconds_bucket",
    "Queue depth": "relay_queue_messages",
    "Queue age": "relay_queue_oldest_age_seconds",
    "Upstream latency": "relay_upstream_latency_seconds_bucket",
    "Blacklist hits": "relay_blacklist_hits_total",
    "Blacklist cache hit ratio": "relay_blacklist_cache_hits_total",
}
#: Grafana's variables, replaced by what they stand for before promtool parses an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$pod": ".*"}


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    """Each required panel exists (by title prefix) and reads its metric."""
    panels = list(dashboard_panels())
    for title, metric in REQUIRED_PANELS.items():
        matching = [p for p in panels if p["title"].startswith(title)]
        assert matching, f"no panel titled {title!r}"
        assert any(metric in t["expr"] for p in matching for t in p["targets"]), title


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool accepts every panel and variable expression (as recording rules)."""
    rules = []
    for number, expression in enumerate(dashboard_expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        if expression.startswith("label_values("):
            expression = expression[len("label_values(") :].rsplit(",", 1)[0]
        rules.append({"record": f"dashboard:expression_{number}", "expr": expression})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) >= 20


def test_data_source_is_a_variable_and_panels_do_not_overlap() -> None:
    """Panels use the `datasource` variable (chosen at import), ids are unique, and no two
    panels share a grid cell."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels())
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
