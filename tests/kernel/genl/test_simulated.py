"""The simulated kernel's generated services: the benchmarks' kube-proxy shape is the same
on every run (its tunnels were drawn from an unseeded generator, so two bench runs read
different tables)."""

from __future__ import annotations

from lvsprobe.kernel.genl.simulated import generated_services


def test_the_kube_shape_is_the_same_each_time() -> None:
    assert generated_services(30) == generated_services(30)
