"""Generic-netlink reader of the kernel's IPVS state: an own small codec over AF_NETLINK.

Why not pyroute2 (0.9.7): its `update` sends DEL, `dest("get")` fails, `from_message()`
returns class defaults for short keys, the tunnel port is byte-swapped, the IPv6 netmask is
mis-decoded, GET_DAEMON/CONFIG/INFO are not decoded (docs/kernel/netlink.md#why-not-pyroute2). The
codec here is smaller, read-only by construction, and decodes all of them.

- `attrs`: netlink message and attribute TLV walk/encode (pure).
- `tables`: the numbers of include/uapi/linux/ip_vs.h (IntEnums).
- `ipvs`: decoders into `lvsprobe.model` (the exact, readable reference; pure).
- `requests`: the read-only request builders, and GET_DEST's patched template.
- `replies`: the inverse encoders (kernel-format replies, for round-trip tests).
- `layout`: records split by a learned struct (the exact decoder's fast way to attributes).
- `runs`: a dump's usual datagrams recognised by their headers; its records kept as bytes.
- `columns`: records of one layout cut into columns by bytes slices (what the two below share).
- `service_table`: GET_SERVICE records decoded column-wise into `Service` objects.
- `dest_table`: GET_DEST records decoded column-wise into a `RealServerTable`.
- `socket`: `IPVSNetlink`, the only module that does I/O.
- `simulated`: `SimulatedKernel`, a transport framing replies as 6.1 does (scale tests,
  benchmarks).
- `capture`: `CapturedIPVS`, an `IPVSNetlink` replaying a captured conversation file.
"""
