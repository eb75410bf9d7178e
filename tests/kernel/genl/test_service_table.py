"""SERVICE records decoded column-wise (`service_table`) give exactly what the exact decoder
gives one by one: the same services, or the same first error."""

from __future__ import annotations

import dataclasses
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs, replies, service_table
from lvsprobe.kernel.genl.attrs import nla_align
from lvsprobe.kernel.genl.runs import Run
from lvsprobe.kernel.genl.simulated import generated_services
from lvsprobe.kernel.genl.tables import CmdAttr
from lvsprobe.lab.scale import SCALE_SCHEDULERS
from lvsprobe.model import Persistence, RealServerRows, Service, ServiceFlag

from .test_ipvs_codec import services
from .test_layout import mutated

FID = 0x20


def _message(body: bytes) -> bytes:
    return replies.encode_record(FID, CmdAttr.SERVICE, body, 1, 0)


def _exact(messages: list[bytes]) -> object:
    """Each record decoded one by one (no layouts): the services, or the first error."""
    out = []
    try:
        for index, message in enumerate(messages, 1):
            nest = ipvs.top_level(message[20:], CmdAttr.SERVICE, index=index)
            out.append(ipvs.decode_service(nest, index=index))
    except ParseError as exc:
        return ("ParseError", str(exc))
    return out


def _runs(messages: list[bytes], per_datagram: int) -> list[Run]:
    """The messages in datagrams of up to `per_datagram`, as runs of one length."""
    runs = []
    for first in range(0, len(messages), per_datagram):
        part = messages[first : first + per_datagram]
        datagram = b"".join(m + bytes(nla_align(len(m)) - len(m)) for m in part)
        offset = 0
        for message in part:
            if runs and runs[-1].datagram is datagram and runs[-1].length == len(message):
                last = runs[-1]
                runs[-1] = Run(datagram, last.start, last.records + 1, last.length)
            else:
                runs.append(Run(datagram, offset, 1, len(message)))
            offset += nla_align(len(message))
    return runs


def _columnar(messages: list[bytes], per_datagram: int) -> object:
    with patch.object(service_table, "COLUMNAR_MIN_RECORDS", 0):
        try:
            fields = service_table.decode_service_runs(
                _runs(messages, per_datagram), ipvs.service_layouts()
            )
        except ParseError as exc:
            return ("ParseError", str(exc))
    return service_table.services_of(fields, [RealServerRows.of(())] * len(fields))


@settings(max_examples=300, deadline=None)
@given(
    first=services(),
    others=st.lists(st.tuples(services(), st.booleans()), max_size=12),
    per_datagram=st.integers(1, 6),
    data=st.data(),
)
def test_columnar_decode_is_the_exact_one(
    first: Service,
    others: list[tuple[Service, bool]],
    per_datagram: int,
    data: st.DataObject,
) -> None:
    """Records of one layout (the first one's values varied) and of others (IPv6, fwmark,
    persistent, PE names, no stats), some mutated byte-wise: the same as one by one."""
    bodies = [replies.encode_service(first)]
    for service, same_layout in others:
        if same_layout:
            service = dataclasses.replace(first, stats=service.stats, rates=service.rates)
        bodies.append(replies.encode_service(service))
    messages = [data.draw(st.one_of(st.just(_message(b)), mutated(_message(b)))) for b in bodies]
    assert _columnar(messages, per_datagram) == _exact(messages)


def test_a_big_dump_of_one_layout_with_odd_ones_between() -> None:
    """kube-proxy's shape with persistent, fwmark and IPv6 services among them, in order."""
    varied = iter(generated_services(300, seed=5))
    messages = []
    for n, service in enumerate(generated_services(3000)):
        if n % 97 == 3:
            service = next(varied)
        if n % 101 == 7:
            service = dataclasses.replace(service, flags=ServiceFlag.HASHED | ServiceFlag.SCHED1)
        messages.append(_message(replies.encode_service(service)))
    with patch.object(service_table, "_exact", side_effect=AssertionError("went exact")):
        got = _columnar(messages, 40)
    assert got == _exact(messages)
    assert isinstance(got, list) and len(got) == 3000


def test_a_bad_record_is_reported_as_the_exact_decoder_does() -> None:
    good = _message(replies.encode_service(generated_services(1)[0]))
    bad = bytearray(good)
    af = bad.find(bytes.fromhex("06000100"))  # AF's header
    bad[af + 4] = 7  # no such family
    messages = [good] * 70 + [bytes(bad)] + [good] * 5
    got = _columnar(messages, 10)
    assert got == _exact(messages)
    assert isinstance(got, tuple) and "AF: unknown address family 7" in got[1]
    assert "line 71" in got[1]


def test_the_lab_scale_mix_is_read_in_columns() -> None:
    """lab/scale.py's load (eight schedulers: names of 2 and 3 letters, one service in 7
    persistent, some with a netmask): a few layouts learned, not a record each decoded
    exactly."""
    messages = []
    for n, service in enumerate(generated_services(2000)):
        scheduler = SCALE_SCHEDULERS[n % len(SCALE_SCHEDULERS)]
        service = dataclasses.replace(service, scheduler=scheduler)
        if n % 7 == 0:
            persistence = Persistence(300, None, 24 if n % 14 == 0 else 32)
            service = dataclasses.replace(
                service, flags=service.flags | ServiceFlag.PERSISTENT, persistence=persistence
            )
        messages.append(_message(replies.encode_service(service)))
    exact_calls = []
    decode_one = service_table._decode_one

    def counted(*args: object) -> service_table.ServiceFields:
        exact_calls.append(args)
        return decode_one(*args)  # type: ignore[arg-type]

    with patch.object(service_table, "_decode_one", counted):
        got = _columnar(messages, 12)
    assert got == _exact(messages)
    assert len(exact_calls) <= 4
