"""One module per IPVS /proc (and /sys) file: a pure `parse_*` and a small `read_*(root)` edge.

`root` is a directory laid out like /proc (`/proc` itself, or a fixture tree such as
tests/fixtures/kernel-6.1/nat/proc). Parsers raise `ParseError` naming the file and line;
readers raise `IPVSUnavailable` when the IPVS files are absent.
"""
