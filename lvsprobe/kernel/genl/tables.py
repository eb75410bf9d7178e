"""Numbers and layouts of the generic-netlink family "IPVS" (include/uapi/linux/ip_vs.h).

Ids are declared by number with the header's names; how each attribute is laid out (size and
byte order: `BE16` ports, `BE32` IPv4 netmask, host order otherwise) is in `ipvs.py`'s
decoders, which use the codecs of `attrs.py`.
"""

from __future__ import annotations

import enum
import struct

from lvsprobe.kernel.genl.attrs import BE16, U8, U16, U32, U64, Codec

IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 0x1
GENL_ID_CTRL = 0x10
CTRL_VERSION = 1  # what libnl and the lab capture send in genlmsghdr.version
SOURCE = "genl IPVS"


class CtrlCmd(enum.IntEnum):
    """include/uapi/linux/genetlink.h (only what resolving a family needs)."""

    NEWFAMILY = 1
    GETFAMILY = 3


class CtrlAttr(enum.IntEnum):
    FAMILY_ID = 1
    FAMILY_NAME = 2
    VERSION = 3
    HDRSIZE = 4
    MAXATTR = 5
    OPS = 6
    MCAST_GROUPS = 7
    POLICY = 8
    OP_POLICY = 9
    OP = 10


class IPVSCmd(enum.IntEnum):
    """IPVS_CMD_*. Replies reuse NEW_SERVICE/NEW_DEST/NEW_DAEMON/SET_CONFIG/SET_INFO."""

    NEW_SERVICE = 1
    SET_SERVICE = 2
    DEL_SERVICE = 3
    GET_SERVICE = 4
    NEW_DEST = 5
    SET_DEST = 6
    DEL_DEST = 7
    GET_DEST = 8
    NEW_DAEMON = 9
    DEL_DAEMON = 10
    GET_DAEMON = 11
    SET_CONFIG = 12
    GET_CONFIG = 13
    SET_INFO = 14
    GET_INFO = 15
    ZERO = 16
    FLUSH = 17


READ_ONLY_CMDS = frozenset(
    {
        IPVSCmd.GET_SERVICE,
        IPVSCmd.GET_DEST,
        IPVSCmd.GET_DAEMON,
        IPVSCmd.GET_CONFIG,
        IPVSCmd.GET_INFO,
    }
)


class CmdAttr(enum.IntEnum):
    """IPVS_CMD_ATTR_*: top level of every IPVS message."""

    SERVICE = 1
    DEST = 2
    DAEMON = 3
    TIMEOUT_TCP = 4
    TIMEOUT_TCP_FIN = 5
    TIMEOUT_UDP = 6


class InfoAttr(enum.IntEnum):
    """IPVS_INFO_ATTR_*: top level of a GET_INFO reply (numbers collide with CmdAttr)."""

    VERSION = 1
    CONN_TAB_SIZE = 2


class SvcAttr(enum.IntEnum):
    """IPVS_SVC_ATTR_*."""

    AF = 1
    PROTOCOL = 2
    ADDR = 3
    PORT = 4
    FWMARK = 5
    SCHED_NAME = 6
    FLAGS = 7
    TIMEOUT = 8
    NETMASK = 9
    STATS = 10
    PE_NAME = 11
    STATS64 = 12


class DestAttr(enum.IntEnum):
    """IPVS_DEST_ATTR_*."""

    ADDR = 1
    PORT = 2
    FWD_METHOD = 3
    WEIGHT = 4
    U_THRESH = 5
    L_THRESH = 6
    ACTIVE_CONNS = 7
    INACT_CONNS = 8
    PERSIST_CONNS = 9
    STATS = 10
    ADDR_FAMILY = 11
    STATS64 = 12
    TUN_TYPE = 13
    TUN_PORT = 14
    TUN_FLAGS = 15


class DaemonAttr(enum.IntEnum):
    """IPVS_DAEMON_ATTR_*; kernels before ~4.3 send only STATE, MCAST_IFN and SYNC_ID."""

    STATE = 1
    MCAST_IFN = 2
    SYNC_ID = 3
    SYNC_MAXLEN = 4
    MCAST_GROUP = 5
    MCAST_GROUP6 = 6
    MCAST_PORT = 7
    MCAST_TTL = 8


class StatsAttr(enum.IntEnum):
    """IPVS_STATS_ATTR_*; PAD only aligns u64 values on some architectures."""

    CONNS = 1
    INPKTS = 2
    OUTPKTS = 3
    INBYTES = 4
    OUTBYTES = 5
    CPS = 6
    INPPS = 7
    OUTPPS = 8
    INBPS = 9
    OUTBPS = 10
    PAD = 11


ADDR_LEN = 16  # union nf_inet_addr: IPv4 uses the first 4 bytes
FLAGS = struct.Struct("=II")  # struct ip_vs_flags {flags, mask}
FWD_MASK = 0x7  # IP_VS_CONN_F_FWD_MASK
# struct ip_vs_stats nest (IPVS_*_ATTR_STATS): 32-bit counts and rates, but 64-bit bytes.
STATS32_CODECS = {
    StatsAttr.CONNS: U32,
    StatsAttr.INPKTS: U32,
    StatsAttr.OUTPKTS: U32,
    StatsAttr.INBYTES: U64,
    StatsAttr.OUTBYTES: U64,
    StatsAttr.CPS: U32,
    StatsAttr.INPPS: U32,
    StatsAttr.OUTPPS: U32,
    StatsAttr.INBPS: U32,
    StatsAttr.OUTBPS: U32,
}
# How each integer SERVICE attribute is laid out (ip_vs_genl_fill_service): the exact
# decoder and the columnar one (kernel/genl/service_table.py) both read them from here.
# ADDR is ADDR_LEN bytes, FLAGS is `FLAGS`, SCHED_NAME and PE_NAME NUL-terminated strings.
SVC_CODECS: dict[SvcAttr, Codec[int]] = {
    SvcAttr.AF: U16,
    SvcAttr.PROTOCOL: U16,
    SvcAttr.PORT: BE16,
    SvcAttr.FWMARK: U32,
    SvcAttr.TIMEOUT: U32,
}
# How each DEST attribute is laid out (ip_vs_genl_fill_dest): the exact decoder and the
# columnar one (kernel/genl/dest_table.py) both read them from here.
# ADDR is ADDR_LEN bytes of union nf_inet_addr (network order).
DEST_CODECS: dict[DestAttr, Codec[int]] = {
    DestAttr.PORT: BE16,
    DestAttr.FWD_METHOD: U32,
    DestAttr.WEIGHT: U32,
    DestAttr.U_THRESH: U32,
    DestAttr.L_THRESH: U32,
    DestAttr.ACTIVE_CONNS: U32,
    DestAttr.INACT_CONNS: U32,
    DestAttr.PERSIST_CONNS: U32,
    DestAttr.ADDR_FAMILY: U16,
    DestAttr.TUN_TYPE: U8,
    DestAttr.TUN_PORT: BE16,
    DestAttr.TUN_FLAGS: U16,
}
