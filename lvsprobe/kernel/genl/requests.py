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
    BE16,
    GENL_HDR,
    NLA_HDR,
    NLMSG_HDR,
    STRING,
    U16,
    Codec,
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
    key, made once, with the sequence number and the key's four values written over it at
    the places a walk of it found (IPv4 and IPv6 keys have the same layout: ADDR is 16
    bytes either way). fwmark keys are encoded the exact way.
    """

    def __init__(self, family_id: int) -> None:
        self.family_id = family_id
        placeholder = ServiceKey(Family.INET, Protocol.TCP, ipaddress.IPv4Address(0), 0)
        self._template = encode_get_dests(family_id, 0, placeholder)
        nest_at = NLMSG_HDR.size + GENL_HDR.size + NLA_HDR.size  # the SERVICE nest's body
        offsets, at = {}, nest_at
        for attr in walk_attrs(self._template[nest_at:], Where("GET_DEST template")):
            offsets[attr.type] = at + NLA_HDR.size
            at += nla_align(NLA_HDR.size + len(attr.payload))
        self._af_at = offsets[SvcAttr.AF]
        self._protocol_at = offsets[SvcAttr.PROTOCOL]
        self._addr_at = offsets[SvcAttr.ADDR]
        self._port_at = offsets[SvcAttr.PORT]

    def encode(self, seq: int, key: ServiceKey) -> bytes:
        """The request for `key`, as `encode_get_dests(family_id, seq, key)` makes it."""
        if key.fwmark or key.family is None or key.protocol is None or key.address is None:
            return encode_get_dests(self.family_id, seq, key)
        request = bytearray(self._template)
        _SEQ.pack_into(request, _SEQ_AT, seq)
        _U16.pack_into(request, self._af_at, key.family)
        _U16.pack_into(request, self._protocol_at, key.protocol)
        _ADDR.pack_into(request, self._addr_at, key.address.packed)
        _BE16.pack_into(request, self._port_at, key.port)
        return bytes(request)


def _packer(codec: Codec[int]) -> struct.Struct:
    assert codec.packer is not None  # an integer codec
    return codec.packer


_U16 = _packer(U16)
_BE16 = _packer(BE16)
_SEQ = struct.Struct("=I")
_SEQ_AT = 8  # nlmsghdr: len u32, type u16, flags u16, then seq
_ADDR = struct.Struct(f"{ADDR_LEN}s")  # pads an IPv4 address with zeros, as the kernel's


def encode_get_daemons(family_id: int, seq: int, port_id: int = 0) -> bytes:
    return _request(family_id, IPVSCmd.GET_DAEMON, _DUMP, seq, port_id)
