"""How many bytes each IPVS /proc and /sys file may hold before its reader refuses it.

Each bound is what the kernel can write there, with room to spare, so a symlink to /dev/zero,
a sparse file or a runaway capture costs a bounded read instead of all memory. Only the
connection table grows with traffic; its bound is a default the user can raise.
"""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# A service line and ~60 bytes per real server: room for millions of real servers.
IP_VS_MAX_BYTES = 256 * MIB
# Seven lines of at most five 16-digit numbers: ~300 bytes on every kernel.
IP_VS_STATS_MAX_BYTES = 4 * KIB
# A row of ~60 bytes per possible CPU: NR_CPUS = 8192 makes ~500 KiB.
IP_VS_STATS_PERCPU_MAX_BYTES = 1 * MIB
# One or two numbers, or a cpulist: every other CPU of 8192 printed is ~20 KiB.
SYSCTL_MAX_BYTES = 64 * KIB
# A row of ~110 bytes per cache: a few hundred caches make ~40 KiB, thousands still fit.
SLABINFO_MAX_BYTES = 8 * MIB
# A sysfs attribute is at most one page (64 KiB on arm64 and ppc64 kernels).
SYSFS_MAX_BYTES = 64 * KIB
# The kernel caps the connection table only by memory. 4 GiB of rows is ~55 million IPv4
# entries (~75 bytes a row) or ~25 million IPv6 ones; reading that takes minutes.
CONN_TABLE_DEFAULT_MAX_BYTES = 4 * GIB
# A row is at most ~450 bytes: three IPv6 addresses, and PEName/PEData (16 + 255 bytes, the
# SIP Call-ID). A read refuses a longer one before holding it across pieces.
CONN_TABLE_LINE_MAX_BYTES = 4 * KIB
# What a user passes to read a bigger table (export, status, replay).
CONN_TABLE_OPTION = "--max-conn-table-bytes"
