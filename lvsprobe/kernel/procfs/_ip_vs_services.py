"""Service lines of /proc/net/ip_vs, read exactly (a table has few; see `ip_vs`).

`ip_vs_info_seq_show` (ip_vs_ctl.c) prints a service as `"%s  %08X:%04X %s %s "` (IPv4),
`"%s  [%pI6]:%04X %s "` (IPv6) or `"FWM  %08X %s %s"` (fwmark), then
`"persistent %d %08X\n"` or a newline: a variable number of columns. Quirks are in
docs/kernel/procfs.md#ip_vs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.model import (
    Family,
    IPAddress,
    Persistence,
    Protocol,
    RealServer,
    ServiceFlag,
    ServiceKey,
)

_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
# IP_VS_SCHEDNAME_MAXLEN is 16 including the NUL.
_SCHEDULER = re.compile(r"[A-Za-z0-9_]{1,15}")
_I32 = (-(1 << 31), (1 << 31) - 1)


@dataclass(frozen=True)
class ServiceLine:
    protocol: Protocol | None
    address: IPAddress | None
    port: int
    fwmark: int
    scheduler: str
    one_packet: bool
    timeout_jiffies: int | None
    netmask: int | None
    line: str


class ServiceLines:
    """Service lines decoded in this parse, taken from the last one's when they repeat (a
    service line holds no counter, so a scrape decodes only the lines that are new)."""

    _KIND = "net/ip_vs service lines"

    def __init__(self, cache: ParseCache | None) -> None:
        self.cache = cache
        self.known = cache.previous(self._KIND) if cache is not None else {}
        self.decoded: dict[str, ServiceLine] = {}

    def read(self, line: str) -> ServiceLine:
        service = self.known.get(line) or service_line(line)
        self.decoded[line] = service
        return service

    def keep(self) -> None:
        if self.cache is not None:
            self.cache.keep(self._KIND, self.decoded)


def service_line(line: str) -> ServiceLine:
    """`TCP  0A000001:0050 rr [ops] [persistent <jiffies> <mask>]`, or `FWM  %08X …`.

    Printed by ip_vs_info_seq_show as `"%s  %08X:%04X %s %s "` (IPv4), `"%s  [%pI6]:%04X %s "`
    (IPv6) or `"FWM  %08X %s %s"`, then `"persistent %d %08X\n"` or a newline: a variable
    number of columns, read exactly (a table has few).
    """
    fields = line.split()
    if len(fields) < 3:
        raise ValueError(f"expected at least 3 fields on a service line, got {len(fields)}")
    proto_name, where, scheduler, *flags = fields
    protocol: Protocol | None = None
    addr: IPAddress | None = None
    svc_port = fwmark = 0
    if proto_name == "FWM":
        fwmark = _hex.hex_number(where, _hex.U32_MAX)
        if fwmark == 0:
            raise ValueError("fwmark service with mark 0")
    elif proto_name in _PROTOCOLS:
        protocol = _PROTOCOLS[proto_name]
        addr, svc_port = _hex.bracketed_endpoint(where)
    else:
        raise ValueError(f"unknown service protocol {proto_name!r} (expected TCP, UDP, SCTP, FWM)")
    if not _SCHEDULER.fullmatch(scheduler):
        raise ValueError(f"bad scheduler name {scheduler!r}")
    one_packet = bool(flags) and flags[0] == "ops"
    if one_packet:
        flags = flags[1:]
    timeout = netmask = None
    if flags:
        if flags[0] != "persistent" or len(flags) != 3:
            raise ValueError(f"unexpected service flags {' '.join(flags)!r}")
        # `persistent %d`: svc->timeout (unsigned jiffies) printed signed; undo the sign.
        timeout = _hex.decimal(flags[1], *_I32) & _hex.U32_MAX
        netmask = _hex.hex_number(flags[2], _hex.U32_MAX)
    return ServiceLine(
        protocol, addr, svc_port, fwmark, scheduler, one_packet, timeout, netmask, line
    )


ServiceHead = tuple[ServiceKey, ServiceFlag, Persistence | None]


def service_head(
    line: ServiceLine, line_no: int, dests: list[RealServer | range], source: str
) -> ServiceHead:
    """Key, flags and persistence of a service; an fwmark service takes its family from
    its real servers.

    /proc prints `FWM  %08X` with no address family. When every real server has the same
    family, that is taken as the service's (a heterogeneous tunnel, 3.18+, could make this
    guess wrong); with no real servers or mixed families `family` stays None.
    """
    family: Family | None
    if line.address is not None:
        family = Family.INET6 if line.address.version == 6 else Family.INET
    else:
        # A range of rows stands for real servers of the fast path: IPv4.
        families = {Family.INET if isinstance(d, range) else d.family for d in dests}
        family = families.pop() if len(families) == 1 else None
    flags = ServiceFlag.HASHED
    persistence = None
    if line.timeout_jiffies is not None and line.netmask is not None:
        flags |= ServiceFlag.PERSISTENT
        try:
            prefix_len = netmask_prefix_len(line.netmask, family)
        except ValueError as exc:
            raise ParseError(source, line_no, line.line, str(exc)) from exc
        persistence = Persistence(
            timeout_s=None, timeout_jiffies=line.timeout_jiffies, prefix_len=prefix_len
        )
    if line.one_packet:
        flags |= ServiceFlag.ONEPACKET
    key = ServiceKey(family, line.protocol, line.address, line.port, line.fwmark)
    return key, flags, persistence


def netmask_prefix_len(mask: int, family: Family | None) -> int:
    """The persistence netmask field (`%08X` of ntohl(svc->netmask)) as a prefix length.

    IPv4: a contiguous netmask, FFFFFF00 -> 24. IPv6: the field holds a raw prefix length
    (ip_vs_ctl.c `plen = (__force __u32) u->netmask`) that ipvsadm sent in host order, so a
    little-endian host shows ntohl(128) = 80000000 and a big-endian one 00000080; both are
    accepted. An fwmark service of unknown family is read as IPv4 when the value is a valid
    IPv4 netmask, else as an IPv6 prefix length.
    """
    if family is not Family.INET6:
        inverted = ~mask & _hex.U32_MAX
        if inverted & (inverted + 1) == 0:
            return 32 - inverted.bit_length()
        if family is Family.INET:
            raise ValueError(f"persistence netmask {mask:08X} is not contiguous")
    if 1 <= mask <= 128:
        return mask
    swapped = int.from_bytes(mask.to_bytes(4, "little"), "big")
    if 1 <= swapped <= 128:
        return swapped
    raise ValueError(f"persistence netmask {mask:08X} is no IPv6 prefix length (1..128)")
