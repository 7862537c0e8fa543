"""What the deploy tests share: where deploy/ and docs/ are, the external tools they run, the
overlays rendered by `kubectl kustomize`, and the metric names the alerts and the dashboard use.

The tools are found on PATH (plus /usr/local/bin, /usr/bin and /bin, since a Pants sandbox may
hand a test a short PATH) and a missing one fails the test with the install command, never skips
it: `kubectl` (with kustomize built in) and `promtool` (Debian package `prometheus`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

#: The repository root: this file's, or the Pants sandbox root where file targets land.
ROOT = next(
    (p for p in (Path(__file__).resolve().parents[2], Path.cwd()) if (p / "deploy").is_dir()),
    Path.cwd(),
)
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("single-local-spool", "replicas-sqs")
RULES = DEPLOY / "prometheus" / "ses-relay.rules.yaml"
RULES_TESTS = DEPLOY / "prometheus" / "ses-relay.rules_test.yaml"
PROMETHEUS_RULE = KUBERNETES / "base" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "ses-relay.json"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
README = ROOT / "README.md"

_INSTALL = {
    "kubectl": "kubectl 1.22 or later (kustomize built in): the `kubectl` package this kind of"
    " machine comes with, or the Kubernetes project's apt repository",
    "promtool": "apt-get install -y --no-install-recommends prometheus (Debian; provides promtool)",
}
_EXTRA_PATH = ("/usr/local/bin", "/usr/bin", "/bin")

#: Metric names the relay itself exposes all start with this prefix.
_RELAY_METRIC = re.compile(r"\brelay_[a-z0-9_]+\b")
#: Prometheus' own series the rules may use besides the relay's.
PROMETHEUS_SERIES = frozenset({"up"})


def tool(name: str) -> str:
    """The path of an external tool; fails (never skips) with how to install it."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    found = shutil.which(name, path=search)
    if found is None:
        message = f"{name} not found on PATH ({search}); install it: {_INSTALL[name]}"
        raise AssertionError(message)
    return found


def materialize(destination: Path) -> Path:
    """Copy deploy/kubernetes to `destination`, with every `secrets/*.env.example` template also
    copied to the `secrets/*.env` a user would fill in; the copy's root."""
    copy = destination / "kubernetes"
    shutil.copytree(KUBERNETES, copy, ignore=_filled_in_secrets)
    for template in copy.rglob("*.env.example"):
        shutil.copyfile(template, template.with_suffix(""))
    return copy


def _filled_in_secrets(directory: str, names: list[str]) -> set[str]:
    """A developer's real `secrets/*.env` (git-ignored) never reach a test."""
    if Path(directory).name != "secrets":
        return set()
    return {name for name in names if name.endswith(".env")}


def render(copy: Path, overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of one overlay of a `materialize`d copy; its objects."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(copy / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rule_groups() -> list[dict[str, Any]]:
    """The groups of the Prometheus rule file."""
    return list(yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"])


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rule file."""
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def dashboard_panels() -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, rows' nested panels included."""
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard's panels and template variables."""
    expressions = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            expressions.append(query["query"])
    return expressions


def relay_metric_names(expression: str) -> set[str]:
    """The relay's metric names an expression reads (`relay_...`)."""
    return set(_RELAY_METRIC.findall(expression))


def used_metric_names() -> set[str]:
    """Every relay metric name the alert rules and the dashboard use."""
    names: set[str] = set()
    for rule in alert_rules():
        names |= relay_metric_names(rule["expr"])
    for expression in dashboard_expressions():
        names |= relay_metric_names(expression)
    return names
