"""`lvsprobe names from-kubernetes`: kubectl's Services -> the exporter's names file."""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import ParseError
from lvsprobe.exporter import kube_names
from lvsprobe.exporter.kube_names import load_kubectl_json, parse_kubectl_services
from lvsprobe.exporter.names import NameKey, encode_names, format_name_key, read_names

FIXTURE = Path(__file__).parents[1] / "fixtures/kubernetes/kubectl-get-svc-A.json"
NODES = (ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5"))


def fixture_doc() -> Any:
    return json.loads(FIXTURE.read_text())


def spelled(names: dict[NameKey, str]) -> dict[str, str]:
    return {format_name_key(k): v for k, v in names.items()}


CLUSTER = {
    "10.96.0.1:443/tcp": "default/kubernetes:https",
    "10.96.18.40:80/tcp": "ingress-nginx/ingress-nginx-controller:http",
    "10.96.18.40:443/tcp": "ingress-nginx/ingress-nginx-controller:https",
    "10.96.0.10:53/udp": "kube-system/kube-dns:dns",
    "10.96.0.10:53/tcp": "kube-system/kube-dns:dns-tcp",
    "10.96.0.10:9153/tcp": "kube-system/kube-dns:metrics",
    "10.96.200.15:80/tcp": "shop/frontend:http",
    "203.0.113.10:80/tcp": "shop/frontend:http",  # load-balancer ingress (ipMode VIP)
    "10.96.44.4:8080/tcp": "shop/legacy",  # an unnamed port
    "192.0.2.50:8080/tcp": "shop/legacy",  # externalIPs
    "10.96.120.7:80/tcp": "shop/web:http",  # dual stack: both families
    "[fd00:10:96::a7]:80/tcp": "shop/web:http",
    "10.96.33.2:80/tcp": "shop/web-nodeport:http",
    "10.96.33.2:443/tcp": "shop/web-nodeport:https",
    "[fd00:10:96::1:2]:80/tcp": "shop/web-v6:http",
    "10.96.70.70:3868/sctp": "telecom/gateway:diameter",
    "10.96.70.70:1812/udp": "telecom/gateway:radius",
}
NODE_PORTS = {
    "10.0.0.5:31080/tcp": "ingress-nginx/ingress-nginx-controller:http",
    "10.0.0.5:31443/tcp": "ingress-nginx/ingress-nginx-controller:https",
    "10.0.0.5:31380/tcp": "shop/frontend:http",
    "10.0.0.5:30080/tcp": "shop/web-nodeport:http",
    "10.0.0.5:30443/tcp": "shop/web-nodeport:https",
    "[fd00::5]:30900/tcp": "shop/web-v6:http",  # an IPv6-only Service: the IPv6 node address
    "10.0.0.5:31868/sctp": "telecom/gateway:diameter",
    "10.0.0.5:31812/udp": "telecom/gateway:radius",
}
NOT_NAMED = {
    "ExternalName Services": 1,
    "headless Services (clusterIP None)": 1,
    "load-balancer ingress by hostname only": 1,
    "load-balancer ingress with ipMode Proxy": 1,
}


def test_every_address_kube_proxy_programs_is_named() -> None:
    result = parse_kubectl_services(fixture_doc(), "svc.json", NODES)
    assert spelled(result.names) == CLUSTER | NODE_PORTS
    assert result.services == 11
    assert result.skipped == NOT_NAMED
    assert result.conflicts == ()


def test_node_ports_without_node_ips_are_counted_not_guessed() -> None:
    result = parse_kubectl_services(fixture_doc(), "svc.json")
    assert spelled(result.names) == CLUSTER
    assert result.skipped == NOT_NAMED | {"nodePorts (no --node-ip given)": len(NODE_PORTS)}


def test_one_service_and_a_service_list_also_do() -> None:
    doc = fixture_doc()
    one = parse_kubectl_services(doc["items"][0], "svc.json")
    assert spelled(one.names) == {"10.96.0.1:443/tcp": "default/kubernetes:https"}
    for item in doc["items"]:  # the API's ServiceList leaves kind out of its items
        del item["kind"]
    listed = parse_kubectl_services({**doc, "kind": "ServiceList"}, "svc.json", NODES)
    assert spelled(listed.names) == CLUSTER | NODE_PORTS


def test_two_services_on_one_address_keep_the_first_and_say_so() -> None:
    doc = fixture_doc()
    web = next(i for i in doc["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalIPs"] = ["192.0.2.50"]
    web["spec"]["ports"][0]["port"] = 8080
    result = parse_kubectl_services(doc, "svc.json")
    assert spelled(result.names)["192.0.2.50:8080/tcp"] == "shop/legacy"
    assert result.conflicts == ("192.0.2.50:8080/tcp: shop/legacy and shop/web:http",)


def _set(path: str, value: object) -> Any:
    doc = fixture_doc()
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "a v1 List of Services), got a JSON array"),
        ({"kind": "Pod"}, "got kind 'Pod'"),
        ({"kind": "List", "items": {}}, "items: expected a list, got a JSON object"),
        (_set("items.0", "svc"), "items[0]: expected a Service object, got 'svc'"),
        (_set("items.0.kind", "Endpoints"), "items[0]: kind 'Endpoints', expected Service"),
        (_set("items.0.metadata.name", None), "items[0].metadata.name: expected a string"),
        (_set("items.0.spec.ports.0.port", 0), "(default/kubernetes).spec.ports[0].port: expected"),
        (_set("items.0.spec.ports.0.port", "443"), "a port 1..65535, got '443'"),
        (_set("items.0.spec.ports.0.port", True), "a port 1..65535, got True"),
        (_set("items.0.spec.ports.0.protocol", "ICMP"), "TCP, UDP, SCTP, got 'ICMP'"),
        (_set("items.0.spec.clusterIPs", ["10.96.0.300"]), "clusterIPs[0]: expected an IP"),
        (_set("items.0.spec.clusterIPs", "10.96.0.1"), "clusterIPs: expected a list"),
        (_set("items.5.spec.externalIPs", [7]), "externalIPs[0]: expected an IP address, got 7"),
        (_set("items.4.status.loadBalancer.ingress.0.ip", "x"), "ingress[0].ip: expected an IP"),
        (_set("items.8.spec.ports.0.nodePort", 70000), "ports[0].nodePort: expected a port"),
    ],
)
def test_wrong_shape_names_the_item_and_field(doc: object, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_kubectl_services(doc, "svc.json", NODES)
    message = str(info.value)
    assert message.startswith("svc.json: ") and reason in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"apiVersion: v1\nkind: List\n", "not JSON"),  # kubectl -o yaml
        (b'{"kind": "List", "items": [', "not JSON"),  # truncated
        (b"\xff\xfe\xfa", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_not_json_is_one_error(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        load_kubectl_json(data, "svc.json")
    assert "\n" not in str(info.value)


def test_huge_input_is_refused_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_names, "MAX_INPUT_BYTES", 1 << 20)
    with pytest.raises(ParseError, match="larger than 1,048,576 bytes"):
        load_kubectl_json(b" " * ((1 << 20) + 1), "svc.json")


def _mutations() -> st.SearchStrategy[Any]:
    """The fixture with one value anywhere replaced by arbitrary JSON."""
    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    value = st.recursive(leaf, lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids))

    @st.composite
    def mutated(draw: st.DrawFn) -> Any:
        doc = fixture_doc()
        node = doc
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            keys = list(range(len(node))) if isinstance(node, list) else sorted(node)
            key = draw(st.sampled_from(keys))
            if not isinstance(node[key], dict | list) or not draw(st.booleans()):
                node[key] = draw(value)
                return doc
            node = node[key]
        return doc

    return mutated()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_mutated_input_raises_only_parse_error(doc: Any) -> None:
    with contextlib.suppress(ParseError):
        parse_kubectl_services(copy.deepcopy(doc), "svc.json", NODES)


keys = st.one_of(
    st.tuples(
        st.sampled_from(["tcp", "udp", "sctp"]),
        st.ip_addresses(),
        st.integers(0, 65535),
        st.just(0),
    ),
    st.tuples(st.just(""), st.none(), st.just(0), st.integers(1, 0xFFFFFFFF)),
)
names_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, names_text, max_size=20))
def test_encoded_names_read_back_equal(
    tmp_path_factory: pytest.TempPathFactory, names: Any
) -> None:
    path = tmp_path_factory.mktemp("names") / "names.yml"
    path.write_text(encode_names(names, "a header\nof two lines"), encoding="utf-8")
    assert read_names(path).by_key == names


# --- the command -------------------------------------------------------------------------


def invoke(*args: str, stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, ["names", *args], input=stdin, catch_exceptions=False)


def test_cli_stdin_to_stdout_reads_back(tmp_path: Path) -> None:
    res = invoke("from-kubernetes", "--node-ip", "10.0.0.5", stdin=FIXTURE.read_bytes())
    assert res.exit_code == ExitCode.OK, res.stderr
    path = tmp_path / "names.yml"
    path.write_text(res.stdout)
    assert spelled(read_names(path).by_key) == CLUSTER | {
        k: v for k, v in NODE_PORTS.items() if k.startswith("10.")
    }
    assert res.stderr.startswith("24 names from 11 Services; not named: ExternalName Services: 1")


def test_cli_output_file_is_replaced_whole_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "names.yml"
    out.write_text("old: file\n")
    res = invoke("from-kubernetes", str(FIXTURE), "-o", str(out))
    assert res.exit_code == ExitCode.OK and res.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["names.yml"]  # no temporary left
    assert out.stat().st_mode & 0o777 == 0o644
    res = invoke("check", str(out))
    assert res.exit_code == ExitCode.OK
    assert res.stdout == f"{out}: {len(CLUSTER)} names\n"


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = invoke("from-kubernetes", stdin=b"<html>")
    assert res.exit_code == ExitCode.ERROR
    assert res.stderr.startswith("lvsprobe: stdin: not JSON") and res.stderr.count("\n") == 1
    monkeypatch.setattr(kube_names, "MAX_INPUT_BYTES", 1000)
    res = invoke("from-kubernetes", str(FIXTURE))
    assert res.exit_code == ExitCode.ERROR
    assert res.stderr == f"lvsprobe: {FIXTURE}: larger than 1,000 bytes\n"
    res = invoke("from-kubernetes", str(FIXTURE), "--node-ip", "10.0.0.256")
    assert res.exit_code == ExitCode.USAGE and "--node-ip" in res.stderr
    res = invoke("from-kubernetes", str(tmp_path / "missing.json"))
    assert res.exit_code == ExitCode.USAGE and "FILE" in res.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("10.0.0.1:80/tcpx: web\n")
    res = invoke("check", str(bad))
    assert res.exit_code == ExitCode.ERROR and "10.0.0.1:80/tcpx" in res.stderr
