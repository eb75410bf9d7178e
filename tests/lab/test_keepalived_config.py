"""keepalived in the lab without a VM: the config rendered from a topology (golden files,
checked by keepalived itself), the topology keys, the fault scripts.

Regenerate the golden configs after an intended change with
`LVSPROBE_UPDATE_GOLDEN=1 pytest tests/lab/test_keepalived_config.py` and review the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lvsprobe.errors import LabError, ParseError
from lvsprobe.lab import keepalived
from lvsprobe.lab.cluster import AddressPlan, build_script, keepalived_configs
from lvsprobe.lab.faults import Fault, FaultKind, inject_script, undo_script
from lvsprobe.lab.topology import (
    Ha,
    KeepalivedSettings,
    Mode,
    ServiceSpec,
    Topology,
    topology_from_dict,
)

GOLDEN = Path(__file__).parent.parent / "fixtures" / "keepalived"
NAT = Topology(ha=Ha.KEEPALIVED)
DR = Topology(
    mode=Mode.DR,
    ha=Ha.KEEPALIVED,
    sync=False,
    weights=(3, 1, 1),
    keepalived=KeepalivedSettings(
        advert_int_s=1.0, priorities=(120, 110), preempt=False, inhibit_on_failure=True, retry=2
    ),
    services=(
        ServiceSpec("tcp", 80, scheduler="wrr"),
        ServiceSpec("tcp", 443, persistence_s=300, netmask="255.255.255.0"),
        ServiceSpec(fwmark=5, ports=(80, 8080)),
        ServiceSpec("udp", 7, options=("-o",)),
        ServiceSpec("tcp", 80, family="ipv6", scheduler="sh", options=("-b", "sh-port")),
    ),
)
CASES = {"nat": NAT, "dr": DR}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("director", keepalived.DIRECTORS)
def test_config_matches_the_golden_file(case: str, director: str) -> None:
    text = keepalived_configs(AddressPlan(CASES[case]))[director]
    path = GOLDEN / f"{case}-{director}.conf"
    if os.environ.get("LVSPROBE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with LVSPROBE_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def test_config_shape() -> None:
    lvs1, lvs2 = (keepalived_configs(AddressPlan(NAT))[d] for d in keepalived.DIRECTORS)
    assert "priority 150" in lvs1 and "priority 100" in lvs2
    assert "lvs_sync_daemon e0 VI_LVS id 7" in lvs1 and "nopreempt" not in lvs1
    assert "198.18.1.254/24 dev e0" in lvs1  # the NAT gateway floats with the VIP
    assert lvs1.count("HTTP_GET") == 6 and "TCP_CHECK" in lvs1
    dr = keepalived_configs(AddressPlan(DR))["lvs2"]
    assert "nopreempt" in dr and "lvs_sync_daemon" not in dr and "198.18.1.254" not in dr
    assert (
        "inhibit_on_failure" in dr and "virtual_server fwmark 5" in dr and "connect_port 80" in dr
    )
    assert "persistence_granularity 255.255.255.0" in dr and "ops" in dr and "sh-port" in dr
    assert "real_server 198.18.1.11 80 {\n        weight 3" in dr


@pytest.mark.needs_bin("keepalived", "unshare", "ip")
@pytest.mark.parametrize("case", sorted(CASES))
def test_keepalived_accepts_the_config(case: str, tmp_path: Path) -> None:
    """`keepalived -t` in a throw-away network namespace that has an e0 (no IPVS needed)."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived_configs(AddressPlan(CASES[case]))["lvs1"])
    script = f"ip link add e0 type veth peer name e1 && keepalived -t -f {conf}"
    proc = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "Operation not permitted" in proc.stderr or "unshare failed" in proc.stderr:
        pytest.skip(f"no user+network namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr


def test_a_broken_config_is_refused_by_keepalived(tmp_path: Path) -> None:
    if shutil.which("keepalived") is None or shutil.which("unshare") is None:
        pytest.skip("keepalived missing: `make test` installs it")
    conf = tmp_path / "keepalived.conf"
    text = keepalived_configs(AddressPlan(NAT))["lvs1"].replace("delay_loop", "delay_lop", 1)
    conf.write_text(text)
    script = f"ip link add e0 type veth peer name e1 && keepalived -t -f {conf}"
    proc = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "Operation not permitted" in proc.stderr:
        pytest.skip("no user+network namespace here")
    assert proc.returncode != 0 and "delay_lop" in proc.stderr


def test_build_starts_keepalived_instead_of_ipvsadm() -> None:
    script = build_script(AddressPlan(NAT), python="/usr/bin/python3")
    assert "ipvsadm -R" not in script and "--start-daemon" not in script
    assert script.count("exec keepalived --dont-fork --dont-release-ipvs") == 2  # stop keeps conns
    assert "addr add 198.18.1.100/24 dev e0" not in script  # keepalived adds the VIP
    assert "lvs1 never became MASTER" in script
    manual = build_script(AddressPlan(Topology()), python="/usr/bin/python3")
    assert "keepalived" not in manual and "ipvsadm -R" in manual


def test_topology_keys() -> None:
    topo = topology_from_dict(
        {
            "ha": "keepalived",
            "keepalived": {
                "advert_int": 1,
                "priorities": [200, 100],
                "preempt": False,
                "inhibit_on_failure": True,
            },
        }
    )
    assert topo.ha is Ha.KEEPALIVED and topo.keepalived.advert_int_s == 1.0
    assert topo.keepalived.priorities == (200, 100) and not topo.keepalived.preempt
    assert "keepalived" in topo.describe()


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"ha": "vrrp"}, "ha"),
        ({"keepalived": {"advert_int": 0}}, "keepalived.advert_int"),
        ({"keepalived": {"advert_int": "fast"}}, "keepalived.advert_int"),
        ({"keepalived": {"priorities": [255, 1]}}, "keepalived.priorities"),
        ({"keepalived": {"priorities": [100]}}, "keepalived.priorities"),
        ({"keepalived": {"priorities": [True, 1]}}, "keepalived.priorities"),
        ({"keepalived": {"retry": -1}}, "keepalived.retry"),
        ({"keepalived": {"delay_loop": 0}}, "keepalived.delay_loop"),
        ({"keepalived": {"colour": 1}}, "keepalived.colour"),
        ({"keepalived": [1]}, "keepalived"),
        ({"ha": "keepalived", "services": [{"port": 80, "options": ["-x"]}]}, "options"),
    ],
)
def test_bad_keepalived_keys_are_named(doc: dict, key: str) -> None:
    with pytest.raises(ParseError, match=key.replace(".", r"\.")):
        topology_from_dict(doc)


def test_fault_scripts_stamp_and_undo() -> None:
    plan = AddressPlan(NAT)
    for kind, target in (
        (FaultKind.STOP, "lvs1"),
        (FaultKind.FREEZE, "lvs1"),
        (FaultKind.LINK, "lvs1"),
        (FaultKind.KILL_BACKEND, "rs1"),
        (FaultKind.SLOW_BACKEND, "rs2"),
    ):
        fault = Fault(kind, target, max_s=30)
        inject, undo = inject_script(fault, plan, "py"), undo_script(fault, plan, "py")
        for text in (inject, undo):
            assert 'echo "started $EPOCHREALTIME"' in text and "effect" in text
        assert "(sleep 30;" in inject and fault.watchdog_file in inject
        assert f'kill "$(cat {fault.watchdog_file}' in undo
    link_undo = undo_script(Fault(FaultKind.LINK, "lvs1"), plan)
    assert "addr replace 2001:2:0:1::2/64 dev e0 nodad" in link_undo  # down took the IPv6 address
    assert "netem delay 4000ms" in inject_script(
        Fault(FaultKind.SLOW_BACKEND, "rs1", delay_ms=4000), plan
    )


def test_the_hand_move_refuses_a_keepalived_cluster() -> None:
    from lvsprobe.lab.lab import Lab

    lab = Lab(NAT, build=False)
    with pytest.raises(LabError, match="keepalived moves the VIPs"):
        lab.failover()
