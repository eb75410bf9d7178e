"""Generic-netlink reader of the kernel's IPVS state: an own small codec over AF_NETLINK.

Why not pyroute2 (0.9.7): its `update` sends DEL, `dest("get")` fails, `from_message()`
returns class defaults for short keys, the tunnel port is byte-swapped, the IPv6 netmask is
mis-decoded, GET_DAEMON/CONFIG/INFO are not decoded (docs/kernel/netlink.md#why-not-pyroute2). The
codec here is smaller, read-only by construction, and decodes all of them.

- `attrs`: netlink message and attribute TLV walk/encode (pure).
- `tables`: the numbers of include/uapi/linux/ip_vs.h (IntEnums).
- `ipvs`: decoders into `lvsprobe.model` and the read-only request builders (pure).
- `replies`: the inverse encoders (kernel-format replies, for round-trip tests).
- `socket`: `IPVSNetlink`, the only module that does I/O.
- `capture`: `CapturedIPVS`, an `IPVSNetlink` replaying a captured conversation file.
"""
