"""The Kubernetes manifests render, validate offline and keep their promises.

Each overlay of deploy/kubernetes is rendered with `kubectl kustomize` (from a copy whose
`secrets/*.env` are the committed `*.env.example` templates), every core object is validated
against the Kubernetes OpenAPI schemas bundled by `kubernetes-validate` (strict: unknown fields
fail), the custom resources (ServiceMonitor, PrometheusRule) are checked for the fields the
Prometheus Operator needs, and the promises of issue 18 are asserted on the rendered objects:
probes, grace period, hardening, secrets, network policy, disruption budget, storage.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from relay import variables as v
from relay.auth import hash_password
from relay.config import RelayConfig
from ses_core.testing.certs import TestCertificates
from tests.deploy.manifests import OVERLAYS, RUNBOOKS, alert_rules, materialize, render

#: Kubernetes versions the core objects must validate against: an old one still in providers'
#: extended support, and the newest the schemas bundle knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
WORKLOADS = {"Deployment", "StatefulSet"}
SECRET_VARIABLES = {
    "AWS_SMTP_PASSWORD",
    "AWS_SMTP_USERNAME",
    "RELAY_AUTH_USERS",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
}

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Objects]:
    """Every overlay rendered once: overlay name -> its objects."""
    tree = materialize(tmp_path_factory.mktemp("deploy"))
    return {overlay: render(tree, overlay) for overlay in OVERLAYS}


def find(objects: Objects, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of one kind (and name)."""
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def relay_workload(objects: Objects) -> dict[str, Any]:
    """The one Deployment or StatefulSet running the relay."""
    [workload] = [
        o for o in objects if o["kind"] in WORKLOADS and o["metadata"]["name"] == "ses-relay"
    ]
    return workload


def relay_container(objects: Objects) -> dict[str, Any]:
    """The relay container of the relay workload."""
    [container] = relay_workload(objects)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def config(objects: Objects) -> dict[str, str]:
    """The relay's non-secret settings: the generated ConfigMap's data."""
    [config_map] = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ses-relay-config")
    ]
    return dict(config_map["data"])


def secret_keys(objects: Objects, name: str) -> set[str]:
    """The keys of the Secret (generated names carry a hash suffix) named `name`."""
    [secret] = [o for o in find(objects, "Secret") if o["metadata"]["name"] == name]
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_one_namespace(rendered: dict[str, Objects], overlay: str) -> None:
    """`kubectl kustomize` renders the overlay; every namespaced object lands in ses-relay."""
    objects = rendered[overlay]
    assert find(objects, "Namespace", "ses-relay")
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "ses-relay", obj["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(
    rendered: dict[str, Objects], overlay: str, version: str
) -> None:
    """Every object but the Operator's custom resources validates strictly (offline schemas)."""
    core = [o for o in rendered[overlay] if o["kind"] not in CUSTOM_KINDS]
    assert len(core) >= 10
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_catches_a_misspelt_field(rendered: dict[str, Objects]) -> None:
    """The check is not vacuous: a misspelt probe field fails strict validation."""
    workload = copy.deepcopy(relay_workload(rendered["single-local-spool"]))
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(workload, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_the_relay_metrics_port(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """The ServiceMonitor has its required fields and selects a Service exposing `metrics`."""
    objects = rendered[overlay]
    [monitor] = find(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    wanted = spec["selector"]["matchLabels"]
    assert spec["endpoints"] and all(e["port"] for e in spec["endpoints"])
    selected = [
        s
        for s in find(objects, "Service")
        if wanted.items() <= s["metadata"].get("labels", {}).items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["ses-relay"]
    ports = {p["name"]: p for p in selected[0]["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in ports
    assert ports["metrics"]["port"] == v.RELAY_METRICS_PORT.default
    # The scrape's `job` label, which SesRelayDown's `up{job="ses-relay"}` selects.
    assert selected[0]["metadata"]["labels"][spec["jobLabel"]] == "ses-relay"
    [down] = [rule for rule in alert_rules() if rule["alert"] == "SesRelayDown"]
    assert 'job="ses-relay"' in down["expr"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_has_the_required_fields(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """The PrometheusRule: named groups of rules, each with `expr` and either `alert` (with a
    severity, a summary and a runbook link into docs/runbooks.md) or `record`."""
    [rule] = find(rendered[overlay], "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert isinstance(item["expr"], str) and item["expr"].strip()
            assert ("alert" in item) != ("record" in item), item
            if "alert" in item:
                assert item["labels"]["severity"] in {"warning", "critical"}
                assert item["annotations"]["summary"]
                assert "/docs/runbooks.md#" in item["annotations"]["runbook_url"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_hardened(rendered: dict[str, Objects], overlay: str) -> None:
    """Every pod: non-root, seccomp RuntimeDefault, no API token; every container: read-only
    root, no privilege escalation, all capabilities dropped, CPU/memory requests and a memory
    limit."""
    workloads = [o for o in rendered[overlay] if o["kind"] in WORKLOADS]
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert "memory" in resources["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_relay_probes_ports_and_measured_resources(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """Liveness on /healthz, readiness on /readyz, both on the metrics port; the ports are the
    relay's defaults (the image's); requests/limits from the measured footprint."""
    container = relay_container(rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"smtp": v.SMTP_PORT.default, "metrics": v.RELAY_METRICS_PORT.default}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "128Mi"}
    assert container["resources"]["limits"]["memory"] == "256Mi"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_relay_drain(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """terminationGracePeriodSeconds > preStop pause + RELAY_GRACE_PERIOD: the kubelet's
    SIGKILL never cuts the drain short."""
    objects = rendered[overlay]
    pod = relay_workload(objects)["spec"]["template"]["spec"]
    grace = float(config(objects).get("RELAY_GRACE_PERIOD", v.RELAY_GRACE_PERIOD.default))
    pre_stop = relay_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_secrets_only(rendered: dict[str, Objects], overlay: str) -> None:
    """SMTP credentials and AUTH hashes come from Secrets, the listener's certificate from the
    TLS Secret, and no secret setting sits in the ConfigMap."""
    objects = rendered[overlay]
    container = relay_container(objects)
    secret_refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
    keys = set().union(*(secret_keys(objects, name) for name in secret_refs))
    assert {"AWS_SMTP_USERNAME", "AWS_SMTP_PASSWORD", "RELAY_AUTH_USERS"} <= keys
    assert not SECRET_VARIABLES & set(config(objects))
    pod = relay_workload(objects)["spec"]["template"]["spec"]
    [tls] = [vol for vol in pod["volumes"] if vol["name"] == "tls"]
    assert tls["secret"]["secretName"] == "ses-relay-tls"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    settings = config(objects)
    assert settings["SSL_CERT_PATH"] == f"{mount['mountPath']}/tls.crt"
    assert settings["SSL_KEY_PATH"] == f"{mount['mountPath']}/tls.key"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_apps_on_smtp_and_monitoring_on_metrics(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """Ingress to the relay pods: the application namespace on the SMTP port, the monitoring
    namespace on the metrics port, nothing else."""
    [policy] = find(rendered[overlay], "NetworkPolicy", "ses-relay")
    pod_labels = relay_workload(rendered[overlay])["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    admitted = {
        (
            rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            port["port"],
        )
        for rule in policy["spec"]["ingress"]
        for port in rule["ports"]
    }
    assert admitted == {("apps", "smtp"), ("monitoring", "metrics")}
    assert all(len(rule["from"]) == 1 for rule in policy["spec"]["ingress"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budget_and_service_account(rendered: dict[str, Objects], overlay: str) -> None:
    """A PodDisruptionBudget covers the relay pods; the pods run as the ServiceAccount that
    carries the IRSA role annotation."""
    objects = rendered[overlay]
    pod_template = relay_workload(objects)["spec"]["template"]
    [budget] = find(objects, "PodDisruptionBudget")
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= pod_template["metadata"]["labels"].items()
    )
    assert budget["spec"]["maxUnavailable"] == 1
    [account] = find(objects, "ServiceAccount", pod_template["spec"]["serviceAccountName"])
    assert re.fullmatch(
        r"arn:aws:iam::\d{12}:role/.+",
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
    )


def test_single_replica_overlay_keeps_the_spool_on_a_claim(rendered: dict[str, Objects]) -> None:
    """One StatefulSet pod whose RELAY_SPOOL_DIR lies on its PersistentVolumeClaim, kept when the
    set is deleted or scaled down."""
    objects = rendered["single-local-spool"]
    workload = relay_workload(objects)
    assert workload["kind"] == "StatefulSet" and workload["spec"]["replicas"] == 1
    assert (
        find(objects, "Service", workload["spec"]["serviceName"])[0]["spec"]["clusterIP"] == "None"
    )
    settings = config(objects)
    assert settings["RELAY_SPOOL"] == "local" and settings["RELAY_DELIVERY"] == "queue"
    [claim] = workload["spec"]["volumeClaimTemplates"]
    [mount] = [
        m
        for m in relay_container(objects)["volumeMounts"]
        if m["name"] == claim["metadata"]["name"]
    ]
    assert Path(settings["RELAY_SPOOL_DIR"]).is_relative_to(mount["mountPath"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert workload["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert workload["spec"]["template"]["spec"]["securityContext"]["fsGroup"]


def test_replicas_overlay_shares_queue_and_rate(rendered: dict[str, Objects]) -> None:
    """A Deployment of N pods on the SQS spool, RELAY_REPLICAS = N, REDIS_URL carrying the Redis
    password from the Secret Redis itself requires."""
    objects = rendered["replicas-sqs"]
    workload = relay_workload(objects)
    settings = config(objects)
    assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] >= 2
    assert int(settings["RELAY_REPLICAS"]) == workload["spec"]["replicas"]
    assert settings["RELAY_SPOOL"] == "sqs"
    assert {"RELAY_SQS_QUEUE_URL", "RELAY_S3_BUCKET"} <= set(settings)
    env = {e["name"]: e for e in relay_container(objects)["env"]}
    password_secret = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
    assert env["REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@ses-relay-redis:6379/")
    assert list(env).index("REDIS_PASSWORD") < list(env).index("REDIS_URL")  # defined before use
    [redis] = find(objects, "Deployment", "ses-relay-redis")
    redis_pod = redis["spec"]["template"]["spec"]
    assert "requirepass" in " ".join(redis_pod["containers"][0]["args"])
    assert any(
        vol.get("secret", {}).get("secretName") == password_secret for vol in redis_pod["volumes"]
    )
    [redis_policy] = find(objects, "NetworkPolicy", "ses-relay-redis")
    [rule] = redis_policy["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "relay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_accepted_security_finding_is_explained_in_the_docs(
    rendered: dict[str, Objects], overlay: str
) -> None:
    """Each `checkov.io/skip*` annotation gives a reason, and its check id is explained in
    docs/runbooks.md's "Security scan" section."""
    docs = RUNBOOKS.read_text(encoding="utf-8")
    section = docs[docs.index("## Security scan") :]
    for obj in rendered[overlay]:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, reason = value.split("=", 1)
                assert len(reason) > 20, value
                assert f"`{check}`" in section, f"{check} is not explained in {RUNBOOKS}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_settings_are_a_valid_relay_configuration(
    rendered: dict[str, Objects], overlay: str, certificates: TestCertificates
) -> None:
    """The pod's environment (the image's listen addresses, the ConfigMap, the Secrets with real
    values in place of the templates' placeholders) is one the relay starts with: queue mode,
    STARTTLS with AUTH, and the ops endpoint on the port the probes use."""
    objects = rendered[overlay]
    container = relay_container(objects)
    environ = {"SMTP_HOST": "0.0.0.0", "RELAY_METRICS_HOST": "0.0.0.0"}  # the image's ENV
    environ.update(config(objects))
    environ.update(
        {
            "AWS_SMTP_USERNAME": "AKIAEXAMPLE",
            "AWS_SMTP_PASSWORD": "secret",
            "RELAY_AUTH_USERS": f"app:{hash_password('app-password', n=2**4)}",
            "SSL_CERT_PATH": certificates.cert_file,
            "SSL_KEY_PATH": certificates.key_file,
        }
    )
    for variable in container.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"].replace("$(REDIS_PASSWORD)", "pw")
    settings = RelayConfig.from_environ(environ)
    assert settings.queue.delivery == "queue"
    assert settings.queue.spool == config(objects)["RELAY_SPOOL"]
    assert settings.auth_users and settings.auth_required
    assert settings.tls_cert_path is not None
    assert settings.metrics_port == v.RELAY_METRICS_PORT.default
