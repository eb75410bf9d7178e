"""keepalived_check.data, the checker process's dump on SIGUSR1 (check_data.c): text in,
virtual servers with their real servers' verdicts out.

The dump is keepalived's configuration printed for people: sections under
`------< Title >------` lines, and in "LVS Topology" a block per virtual server (one space of
indent) holding a block per real server (three). Inside a block every line is `key = value`
or `Key is VALUE` at three spaces; lines indented deeper belong to a nested item (notify
scripts, a sorry server, tracked files). A block must have each field exported, once, well
formed; a line outside any section or a block that lacks one is a ParseError with its line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from lvsprobe.errors import ParseError
from lvsprobe.keepalived.model import CheckedRealServer, CheckedVirtualServer
from lvsprobe.model import Forward, IPAddress, Protocol

SOURCE = "keepalived_check.data"
_SECTION = re.compile(r"------< (.+) >------")
_FIELD = re.compile(r"   (\S.*?)(?: = | is )(.*)")
_VS_VIP = re.compile(r" VS VIP = (\S+), VPORT = ([0-9]{1,10})")
_VS_FWMARK = re.compile(r" VS FWMARK = ([0-9]{1,10})")
_VS_GROUP = re.compile(r" VS GROUP = \[(.*)\]:([0-9]{1,10})")
# Counts are at most 20 digits (i64), so int() never meets a number too long to convert.
_RS = re.compile(
    r"   RIP = (\S+), RPORT = ([0-9]{1,10}), WEIGHT = (-?[0-9]{1,20}) EFF WEIGHT = (-?[0-9]{1,20})"
)
_COUNT = re.compile(r"[0-9]{1,10}")
_FAMILY = {"inet": 4, "inet6": 6, "IPv4 & IPv6": None, "unknown": None}
_PROTOCOL = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP, "none": None}
# dump_forwarding_method: the first word; TUN is followed by its type (", type = IPIP").
_FORWARD = {"NAT": Forward.MASQ, "DR": Forward.ROUTE, "TUN": Forward.TUNNEL}
_ON_OFF = {"ON": True, "OFF": False}


@dataclass
class _Block:
    """The lines of one virtual or real server block, as read."""

    line_no: int
    head: str
    fields: dict[str, tuple[int, str]] = field(default_factory=dict)
    real_servers: list[_Block] = field(default_factory=list)


def parse_keepalived_check_data(text: str) -> tuple[CheckedVirtualServer, ...]:
    """The virtual servers of a keepalived_check.data dump, in keepalived's order."""
    return tuple(_virtual_server(block) for block in _blocks(text))


def _blocks(text: str) -> list[_Block]:
    sections: list[str] = []
    servers: list[_Block] = []
    current: _Block | None = None
    for line_no, line in enumerate(text.split("\n"), 1):
        title = _SECTION.fullmatch(line.strip())
        if title is not None and line.startswith("------<"):
            sections.append(title.group(1))
            current = None
            continue
        if not sections:
            if line.strip():
                raise ParseError(SOURCE, line_no, line, "text before the first section")
            continue
        if sections[-1] != "LVS Topology":
            continue  # global settings, checkers, SSL, track files: not exported
        if title is not None:
            current = _start(title.group(1), line, line_no, servers, current)
        elif current is not None:
            _add_field(current, line, line_no)
        elif line.strip() and not line.startswith(" System is compiled with LVS"):
            raise ParseError(SOURCE, line_no, line, "outside a server block")
    if "Global definitions" not in sections:
        raise ParseError(SOURCE, None, None, "no 'Global definitions' section: not a checker dump")
    return servers


def _start(
    title: str, line: str, line_no: int, servers: list[_Block], current: _Block | None
) -> _Block | None:
    """A block header inside LVS Topology: a new virtual server, real server, or VS group."""
    if title == "Virtual server" and line.startswith(" ------<"):
        block = _Block(line_no, "")
        servers.append(block)
        return block
    if title == "Real server" and line.startswith("   ------<"):
        if not servers or current is None:
            raise ParseError(SOURCE, line_no, line, "real server outside a virtual server")
        block = _Block(line_no, "")
        servers[-1].real_servers.append(block)
        return block
    if title == "Virtual server group":
        return None  # groups are listed before the virtual servers that use them
    raise ParseError(SOURCE, line_no, line, f"unknown block {title!r}")


def _add_field(block: _Block, line: str, line_no: int) -> None:
    if not block.head:
        block.head = line
        block.fields["@head"] = (line_no, line)
        return
    match = _FIELD.fullmatch(line)
    if match is None:
        return  # a nested item (deeper indent) or an empty line
    key = match.group(1)
    if key in block.fields:
        raise ParseError(SOURCE, line_no, line, f"{key!r} twice in one block")
    block.fields[key] = (line_no, match.group(2))


def _value(block: _Block, key: str, choices: Mapping[str, object] | None = None) -> tuple[int, str]:
    if key not in block.fields:
        raise ParseError(SOURCE, block.line_no, block.head, f"block without {key!r}")
    line_no, value = block.fields[key]
    if choices is not None and value not in choices:
        raise ParseError(SOURCE, line_no, value, f"unknown {key!r}")
    return line_no, value


def _flag(block: _Block, key: str) -> bool:
    """`alive = 1`: keepalived prints a bool or a counter's truth as %d."""
    line_no, value = _value(block, key)
    if value not in ("0", "1"):
        raise ParseError(SOURCE, line_no, value, f"{key!r} is not 0 or 1")
    return value == "1"


def _number(text: str, line_no: int, line: str, what: str, maximum: int) -> int:
    number = int(text)
    if not 0 <= number <= maximum:
        raise ParseError(SOURCE, line_no, line, f"{what} out of range 0..{maximum}")
    return number


def _address(text: str, line_no: int, line: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ParseError(SOURCE, line_no, line, "not an address") from None


def _virtual_server(block: _Block) -> CheckedVirtualServer:
    line_no, head = _value(block, "@head")
    address: IPAddress | None = None
    port = fwmark = 0
    group = None
    if vip := _VS_VIP.fullmatch(head):
        address = _address(vip.group(1), line_no, head)
        port = _number(vip.group(2), line_no, head, "VPORT", 65535)
    elif mark := _VS_FWMARK.fullmatch(head):
        fwmark = _number(mark.group(1), line_no, head, "FWMARK", (1 << 32) - 1)
    elif grp := _VS_GROUP.fullmatch(head):
        group = grp.group(1)
        port = _number(grp.group(2), line_no, head, "port", 65535)
    else:
        raise ParseError(SOURCE, line_no, head, "expected 'VS VIP', 'VS FWMARK' or 'VS GROUP'")
    family = _FAMILY[_value(block, "Address family", _FAMILY)[1]]
    return CheckedVirtualServer(
        address=address,
        port=port,
        fwmark=fwmark,
        group=group,
        protocol=_PROTOCOL[_value(block, "protocol", _PROTOCOL)[1]],
        family=family,
        alive=_flag(block, "alive"),
        quorum_up=_flag(block, "quorum_state_up"),
        real_servers=tuple(_real_server(rs) for rs in block.real_servers),
    )


def _real_server(block: _Block) -> CheckedRealServer:
    line_no, head = _value(block, "@head")
    rs = _RS.fullmatch(head)
    if rs is None:
        raise ParseError(SOURCE, line_no, head, "expected 'RIP = ..., RPORT = ..., WEIGHT = ...'")
    fwd_line, method = _value(block, "forwarding method")
    forward = _FORWARD.get(method.split(",")[0])
    if forward is None:
        raise ParseError(SOURCE, fwd_line, method, "unknown forwarding method")
    failed_line, failed = _value(block, "num failed checkers")
    if _COUNT.fullmatch(failed) is None:
        raise ParseError(SOURCE, failed_line, failed, "'num failed checkers' is not a count")
    return CheckedRealServer(
        address=_address(rs.group(1), line_no, head),
        port=_number(rs.group(2), line_no, head, "RPORT", 65535),
        forward=forward,
        weight=int(rs.group(3)),
        inhibit_on_failure=_ON_OFF[_value(block, "Inhibit on failure", _ON_OFF)[1]],
        alive=_flag(block, "alive"),
        failed_checkers=_number(failed, failed_line, failed, "failed checkers", (1 << 32) - 1),
    )
