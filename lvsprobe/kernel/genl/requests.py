"""The read-only requests of the generic-netlink family "IPVS" (and the controller's GETFAMILY).

Read-only by construction: the only request builders are GET_SERVICE/GET_DEST/GET_DAEMON
dumps, GET_INFO, GET_CONFIG and the controller's GETFAMILY. No encoder exists for NEW, SET,
DEL, ZERO or FLUSH, and `_request` refuses any command outside `READ_ONLY_CMDS`. `ipvs`
re-exports them.
"""

from __future__ import annotations

import ipaddress
import struct

from lvsprobe.kernel.genl.attrs import (
    GENL_HDR,
    NLA_HDR,
    NLMSG_HDR,
    STRING,
    NlFlag,
    Where,
    encode_attr,
    encode_genl,
    encode_message,
    nla_align,
    walk_attrs,
)
from lvsprobe.kernel.genl.replies import encode_service_key
from lvsprobe.kernel.genl.tables import (
    ADDR_LEN,
    CTRL_VERSION,
    GENL_ID_CTRL,
    IPVS_GENL_NAME,
    IPVS_GENL_VERSION,
    READ_ONLY_CMDS,
    CmdAttr,
    CtrlAttr,
    CtrlCmd,
    IPVSCmd,
    SvcAttr,
)
from lvsprobe.model import Family, Protocol, ServiceKey

_DO = NlFlag.REQUEST | NlFlag.ACK
_DUMP = NlFlag.REQUEST | NlFlag.DUMP


def encode_get_family(seq: int, port_id: int = 0, name: str = IPVS_GENL_NAME) -> bytes:
    """CTRL_CMD_GETFAMILY by name. Resolving "IPVS" autoloads ip_vs: check /proc first."""
    body = encode_genl(
        CtrlCmd.GETFAMILY, CTRL_VERSION, encode_attr(CtrlAttr.FAMILY_NAME, STRING.encode(name))
    )
    return encode_message(GENL_ID_CTRL, _DO, seq, port_id, body)


def _request(
    family_id: int, cmd: IPVSCmd, flags: int, seq: int, port_id: int, attrs: bytes = b""
) -> bytes:
    if cmd not in READ_ONLY_CMDS:
        raise ValueError(f"lvsprobe never sends {cmd.name}: it only reads IPVS")
    return encode_message(
        family_id, flags, seq, port_id, encode_genl(cmd, IPVS_GENL_VERSION, attrs)
    )


def encode_get_info(family_id: int, seq: int, port_id: int = 0) -> bytes:
    return _request(family_id, IPVSCmd.GET_INFO, _DO, seq, port_id)


def encode_get_config(family_id: int, seq: int, port_id: int = 0) -> bytes:
    return _request(family_id, IPVSCmd.GET_CONFIG, _DO, seq, port_id)


def encode_get_services(family_id: int, seq: int, port_id: int = 0) -> bytes:
    """GET_SERVICE dump of every service of the socket's netns."""
    return _request(family_id, IPVSCmd.GET_SERVICE, _DUMP, seq, port_id)


def encode_get_dests(family_id: int, seq: int, key: ServiceKey, port_id: int = 0) -> bytes:
    """GET_DEST dump of one service's real servers (dump only; an unknown key dumps nothing)."""
    nest = encode_attr(CmdAttr.SERVICE, encode_service_key(key))
    return _request(family_id, IPVSCmd.GET_DEST, _DUMP, seq, port_id, nest)


class GetDestRequests:
    """GET_DEST dump requests of one family id, for a read that sends one per service.

    The request of a <protocol, address, port> key is `encode_get_dests`'s for a placeholder
    key, made once, with the sequence number and the key's four values put in at the places
    a walk of it found: one struct packs the whole message, the placeholder's other bytes
    passed in as they are (IPv4 and IPv6 keys have the same layout: ADDR is 16 bytes either
    way). fwmark keys are encoded the exact way.
    """

    def __init__(self, family_id: int) -> None:
        self.family_id = family_id
        placeholder = ServiceKey(Family.INET, Protocol.TCP, ipaddress.IPv4Address(0), 0)
        template = encode_get_dests(family_id, 0, placeholder)
        nest_at = NLMSG_HDR.size + GENL_HDR.size + NLA_HDR.size  # the SERVICE nest's body
        offsets, at = {}, nest_at
        for attr in walk_attrs(template[nest_at:], Where("GET_DEST template")):
            offsets[attr.type] = at + NLA_HDR.size
            at += nla_align(NLA_HDR.size + len(attr.payload))
        # Where `encode` puts its values, in the order of the bytes (encode_service_key's):
        # the sequence number, then the key's (the port as its two network-order bytes: a
        # struct has one byte order).
        places = [
            (_SEQ_AT, "I"),
            (offsets[SvcAttr.AF], "H"),
            (offsets[SvcAttr.PROTOCOL], "H"),
            (offsets[SvcAttr.ADDR], f"{ADDR_LEN}s"),
            (offsets[SvcAttr.PORT], "2s"),
        ]
        if places != sorted(places):
            raise AssertionError(f"GET_DEST template's values out of order: {places}")
        fmt, pieces, at = ["="], [], 0
        for offset, code in places:
            fmt += (f"{offset - at}s", code)
            pieces.append(template[at:offset])
            at = offset + struct.calcsize("=" + code)
        fmt.append(f"{len(template) - at}s")
        pieces.append(template[at:])
        self._struct = struct.Struct("".join(fmt))
        self._pieces = pieces

    def encode(self, seq: int, key: ServiceKey) -> bytes:
        """The request for `key`, as `encode_get_dests(family_id, seq, key)` makes it."""
        if key.fwmark or key.family is None or key.protocol is None or key.address is None:
            return encode_get_dests(self.family_id, seq, key)
        head, after_seq, after_family, after_protocol, after_address, tail = self._pieces
        return self._struct.pack(
            head,
            seq,
            after_seq,
            key.family,
            after_family,
            key.protocol,
            after_protocol,
            key.address.packed,
            after_address,
            key.port.to_bytes(2, "big"),
            tail,
        )


_SEQ_AT = 8  # nlmsghdr: len u32, type u16, flags u16, then seq


def encode_get_daemons(family_id: int, seq: int, port_id: int = 0) -> bytes:
    return _request(family_id, IPVSCmd.GET_DAEMON, _DUMP, seq, port_id)
