"""keepalived's own view of a director: VRRP instances and the health checkers' verdicts.

Which of keepalived's interfaces, and why (keepalived 2.2.7, as Debian ships it):

* **Signal-triggered dumps** (chosen). Signal SIGRTMIN+2 (`keepalived --signum=JSON`) to the
  VRRP process and it writes keepalived.json: per VRRP instance its state, configured and
  effective priority, VIPs (each marked when set), last transition time, and counters of
  becoming and releasing MASTER. SIGUSR1 (`--signum=DATA`) to the checker process writes
  keepalived_check.data: per virtual server and real server whether the checkers find it
  alive. This is the only interface that has the checker verdicts without another daemon.
  From a sidecar it needs the pid files (a shared /run), the processes (a shared PID
  namespace: `shareProcessNamespace`, or the host's), the right to signal them (root, or
  CAP_KILL) and the dump directory (keepalived's TMPDIR, /tmp by default: a shared volume);
  the files are mode 0600 under keepalived's default umask, so read as root too. Each dump
  costs keepalived one pass over its data in its event loop (under a millisecond for a few
  instances and real servers) and one syslog line; the reader here triggers at most one per
  minimum interval and shares it between scrapes. It changes nothing in keepalived's state.
  Only SIGUSR1 and the JSON signal are ever sent: never SIGUSR2's neighbour that clears the
  stats, never one to a pid that is not keepalived's (see dump.py).
* **D-Bus, org.keepalived.Vrrp1**: per instance only Name and State (no priority, VIPs or
  counters) and nothing from the checker; it needs `enable_dbus`, a system bus reachable from
  the sidecar and a bus policy. Its read-only properties cost keepalived nothing per read,
  but the interface also exports methods that act (SendGarp, PrintData).
* **SNMP, KEEPALIVED-MIB over AgentX**: has everything, read-only, but needs snmpd as the
  master agent beside keepalived (`enable_snmp_vrrp`, `enable_snmp_checker`), an AgentX
  socket shared with it, and an SNMP client in the exporter.

Several keepalived instances on one host (one per director namespace) each need their own
pid file and dump directory: keepalived.json has a fixed name in keepalived's TMPDIR, so
instances that share a TMPDIR overwrite each other's (`data_use_instance` renames only the
.data files). Give each its own TMPDIR.
"""
