"""The alert rules: valid for Prometheus, unit-tested with `promtool test rules`, shipped
identically in the PrometheusRule, covering what issue 18 asks to page on, and each linked to
its runbook section in docs/runbooks.md and listed in the README's operations table."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.manifests import (
    PROMETHEUS_RULE,
    README,
    RULES,
    RULES_TESTS,
    RUNBOOKS,
    alert_rules,
    relay_metric_names,
    rule_groups,
    tool,
)

#: What the issue asks to be paged on, and a metric (and label value) an alert must read for it.
REQUIRED = {
    "queue age": "relay_queue_oldest_age_seconds",
    "queue depth growing": "relay_queue_recipients",
    "undelivered recipients": 'relay_queue_deliveries_total{outcome="expired"}',
    "bounced (refused) recipients": 'relay_queue_deliveries_total{outcome="refused"}',
    "sustained throttling": 'relay_queue_retries_total{reason="throttled"}',
    "upstream unreachable": 'relay_queue_retries_total{reason=~"connection',
    "blacklist store errors": "relay_blacklist_errors_total",
    "AUTH failure spikes": "relay_auth_failures_total",
    "daily quota above 80%": "relay_ses_daily_quota_used_ratio) > 0.8",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; its completed process."""
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_rule_file_is_valid_for_prometheus() -> None:
    """`promtool check rules` accepts the rule file."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules` on synthetic series: each alert fires when it should, with its
    labels and annotations, and stays quiet when it should."""
    result = promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """No alert is left out of the promtool tests."""
    tests = yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    names = {rule["alert"] for rule in alert_rules()}
    assert names == fires
    assert names <= quiet


def test_prometheus_rule_ships_the_same_groups() -> None:
    """The Operator's PrometheusRule carries exactly the rule file's groups."""
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert (
        resource["spec"]["groups"] == rule_groups()
    ), f"{PROMETHEUS_RULE} differs from {RULES}: edit both"


def test_alerts_cover_what_the_issue_asks_for() -> None:
    """Queue age and growth, undelivered and refused recipients, throttling, SES unreachable,
    blacklist errors, AUTH failure spikes and the daily quota above 80% each have an alert."""
    expressions = " ".join(" ".join(rule["expr"].split()) for rule in alert_rules())
    missing = [need for need, fragment in REQUIRED.items() if fragment not in expressions]
    assert not missing


def test_every_alert_links_to_its_runbook_section() -> None:
    """Each alert's runbook_url ends in docs/runbooks.md#<anchor> of a heading of that document
    named after the alert, and every alert is unique."""
    headings = [
        line.lstrip("#").strip()
        for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    ]
    anchors = {github_anchor(h): h for h in headings}
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path.endswith("/docs/runbooks.md"), url
        assert anchors.get(anchor) == rule["alert"], f"no '## {rule['alert']}' in {RUNBOOKS}"


def test_every_alert_reads_relay_metrics_or_the_scrape() -> None:
    """An alert reads the relay's own metrics (or `up` for the scrape itself)."""
    for rule in alert_rules():
        assert relay_metric_names(rule["expr"]) or rule["expr"].startswith("up{"), rule["alert"]


def test_readme_operations_table_links_every_alert_to_its_runbook() -> None:
    """The README's alert table has one row per alert, linking to its runbook section."""
    readme = README.read_text(encoding="utf-8")
    for rule in alert_rules():
        name = rule["alert"]
        row = f"| [`{name}`](docs/runbooks.md#{name.lower()}) | {rule['labels']['severity']} |"
        assert row in readme, f"README.md lacks the row of {name}"
