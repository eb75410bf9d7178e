"""Hypothesis strategies more than one test module draws from (imported as
`tests.strategies`: pytest runs from the repository root)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from lvsprobe.model import Family, Forward, Rates, RealServer, Stats, Tunnel

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
maybe = st.none() | u32


@st.composite
def real_servers(draw: st.DrawFn) -> RealServer:
    """Any real server a reader can give: IPv4/IPv6, each optional field there or not."""
    v6 = draw(st.booleans())
    address = IPv6Address(draw(st.integers(0, 2**128 - 1))) if v6 else IPv4Address(draw(u32))
    return RealServer(
        address,
        draw(st.integers(0, 65535)),
        draw(st.sampled_from(Forward)),
        draw(u32),
        draw(st.integers(-(2**31), 2**31 - 1)),
        draw(u32),
        draw(maybe),
        draw(maybe),
        draw(maybe),
        draw(st.none() | st.builds(Stats, u64, u64, u64, u64, u64)),
        draw(st.none() | st.builds(Rates, u64, u64, u64, u64, u64)),
        draw(st.sampled_from([None, Family.INET6 if v6 else Family.INET])),
        draw(st.none() | st.builds(Tunnel, st.integers(0, 255), u32, u32)),
    )
