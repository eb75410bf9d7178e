"""exporters/kubernetes: every manifest is valid against the Kubernetes schemas (offline), and
the pieces fit together: each PodMonitor/ServiceMonitor selects the workload it is meant for,
on a port that workload serves, with a basic-auth Secret whose password the web config that
workload mounts accepts (the Secrets as make-secrets.py writes them)."""

from __future__ import annotations

import base64
import subprocess
import sys
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lvsprobe import __version__
from lvsprobe.cli.export import DEFAULT_PORT, export
from lvsprobe.exporter.webconfig import read_web_config

KUBERNETES = Path(__file__).resolve().parents[2] / "exporters" / "kubernetes"
MANIFESTS = sorted(p.name for p in KUBERNETES.glob("*.yaml"))
# The oldest and the newest Kubernetes whose schemas kubernetes-validate ships and we support.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
MONITORING = "monitoring.coreos.com/v1"
# The prometheus-operator fields these manifests use; the operator's CRD schemas are not
# shipped offline, so a typo in a field name is caught here instead.
MONITOR_SPEC_KEYS = {"namespaceSelector", "selector", "podMetricsEndpoints", "endpoints"}
ENDPOINT_KEYS = {"port", "path", "scheme", "interval", "scrapeTimeout", "basicAuth", "relabelings"}
WORKLOAD_KINDS = {"DaemonSet", "Deployment", "StatefulSet", "Pod"}
IMAGE = f"localhost/lvsprobe-export:{__version__}"


def _load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]


@cache
def _generated_secrets() -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [sys.executable, str(KUBERNETES / "make-secrets.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def _everything() -> list[dict[str, Any]]:
    return [doc for name in MANIFESTS for doc in _load(name)] + list(_generated_secrets())


def _namespace(doc: dict[str, Any]) -> str:
    return str(doc["metadata"].get("namespace", "default"))


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    """metadata and spec of the pods a workload makes."""
    return doc if doc["kind"] == "Pod" else doc["spec"]["template"]


def _workloads() -> list[dict[str, Any]]:
    return [d for d in _everything() if d["kind"] in WORKLOAD_KINDS]


def _exporters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in _pod(doc)["spec"]["containers"] if c["name"] == "lvsprobe-export"]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels selectors are checked here"
    return selector["matchLabels"].items() <= labels.items()


def _secret(namespace: str, name: str) -> dict[str, str]:
    found = [
        d
        for d in _everything()
        if d["kind"] == "Secret" and _namespace(d) == namespace and d["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"Secret {namespace}/{name}: {len(found)} found"
    data = {k: base64.b64decode(v).decode() for k, v in found[0].get("data", {}).items()}
    return {**data, **found[0].get("stringData", {})}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", [*MANIFESTS, "make-secrets.py"])
def test_manifests_are_valid(name: str, version: str) -> None:
    docs = list(_generated_secrets()) if name == "make-secrets.py" else _load(name)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == MONITORING:
            spec = doc["spec"]
            assert set(spec) <= MONITOR_SPEC_KEYS, doc["metadata"]["name"]
            for endpoint in spec.get("podMetricsEndpoints", spec.get("endpoints")):
                assert set(endpoint) <= ENDPOINT_KEYS, doc["metadata"]["name"]
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']} {where}: {exc.message}")


def _monitored_pods(monitor: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container port) pairs a monitor's single endpoint reaches."""
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames", [_namespace(monitor)])
    if monitor["kind"] == "PodMonitor":
        (endpoint,) = spec["podMetricsEndpoints"]
        pods = [
            w
            for w in _workloads()
            if _namespace(w) in namespaces
            and _matches(spec["selector"], _pod(w)["metadata"]["labels"])
        ]
        return [
            (w, port)
            for w in pods
            for c in _pod(w)["spec"]["containers"]
            for port in c.get("ports", [])
            if port["name"] == endpoint["port"]
        ]
    (endpoint,) = spec["endpoints"]
    services = [
        d
        for d in _everything()
        if d["kind"] == "Service"
        and _namespace(d) in namespaces
        and _matches(spec["selector"], d["metadata"]["labels"])
    ]
    out = []
    for service in services:
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        for w in _workloads():
            labels = _pod(w)["metadata"]["labels"]
            if _namespace(w) == _namespace(service) and service["spec"]["selector"].items() <= (
                labels.items()
            ):
                out += [
                    (w, cp)
                    for c in _pod(w)["spec"]["containers"]
                    for cp in c.get("ports", [])
                    if port["targetPort"] in (cp["name"], cp["containerPort"])
                ]
    return out


def _monitors() -> list[dict[str, Any]]:
    return [d for d in _everything() if d["apiVersion"] == MONITORING]


def test_every_exporter_is_monitored_once() -> None:
    monitored = [w["metadata"]["name"] for m in _monitors() for w, _ in _monitored_pods(m)]
    exporters = [w["metadata"]["name"] for w in _workloads() if _exporters(w)]
    assert sorted(monitored) == sorted(exporters) and len(exporters) == 2


@pytest.mark.parametrize("monitor", _monitors(), ids=lambda m: m["metadata"]["name"])
def test_monitor_reaches_its_exporter_with_its_credentials(
    monitor: dict[str, Any], tmp_path: Path
) -> None:
    reached = _monitored_pods(monitor)
    assert len(reached) == 1, f"{monitor['metadata']['name']} reaches {len(reached)} ports"
    workload, port = reached[0]
    (container,) = _exporters(workload)
    assert port in container["ports"] and port["containerPort"] == DEFAULT_PORT
    endpoint = next(
        iter(monitor["spec"].get("podMetricsEndpoints", monitor["spec"].get("endpoints")))
    )
    assert endpoint["scheme"] == "http" and endpoint["path"] == "/metrics"
    # The monitor's Secret is in its own namespace (prometheus-operator reads it there).
    auth = endpoint["basicAuth"]
    username = _secret(_namespace(monitor), auth["username"]["name"])[auth["username"]["key"]]
    password = _secret(_namespace(monitor), auth["password"]["name"])[auth["password"]["key"]]
    # The web config the exporter container reads, from the Secret mounted at its directory.
    (flag,) = [a for a in container["args"] if a.startswith("--web.config.file=")]
    config_path = PurePosixPath(flag.split("=", 1)[1])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in _pod(workload)["spec"]["volumes"] if v["name"] == mount["name"]]
    web_text = _secret(_namespace(workload), volume["secret"]["secretName"])[config_path.name]
    (tmp_path / config_path.name).write_text(web_text)
    web = read_web_config(tmp_path / config_path.name)
    assert web.tls is None  # else the endpoint's scheme and tlsConfig would have to match
    header = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    assert web.auth is not None and web.auth.check(header)
    assert not web.auth.check("Basic " + base64.b64encode(f"{username}:x".encode()).decode())


def _known_flags() -> set[str]:
    return {opt for param in export.params for opt in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("workload", _workloads(), ids=lambda w: w["metadata"]["name"])
def test_exporter_container(workload: dict[str, Any]) -> None:
    """Flags it has, its default port, NET_ADMIN only, no escalation, and health probes."""
    (container,) = _exporters(workload)
    assert _pod(workload)["spec"]["hostNetwork"] is True
    assert container["image"] == IMAGE
    for arg in container["args"]:
        assert arg.split("=", 1)[0] in _known_flags(), arg
    assert f"--web.listen-address=:{DEFAULT_PORT}" in container["args"]
    assert container["securityContext"] | {"seccompProfile": None} == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        "seccompProfile": None,
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert all(m.get("readOnly") for m in container["volumeMounts"])


def test_build_script_tags_the_image_the_manifests_use() -> None:
    script = (KUBERNETES.parent / "build-image.sh").read_text()
    assert "tag=${3:-localhost/lvsprobe-export:$version}" in script
