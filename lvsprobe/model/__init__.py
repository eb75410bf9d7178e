"""The snapshot model every reader produces and every consumer reads.

- `values`: the kernel's enumerations and small frozen records (a service key, counters,
  one real server as an object);
- `realservers`: real servers as columns (`RealServerTable`), the form both readers fill;
- `service_rows`: a service's rows of that table (`RealServerRows`), with the explicit
  `objects()` view;
- `addresses`: a table's (family, int) addresses to objects and text;
- `snapshot`: services, the connection-table summary and the rest of a namespace's state.
"""

from lvsprobe.model.addresses import address_number, address_object, address_texts
from lvsprobe.model.realservers import (
    RATE_FIELDS,
    STAT_FIELDS,
    RealServerTable,
    TableBuilder,
    frozen_records,
)
from lvsprobe.model.service_rows import RealServerRows
from lvsprobe.model.snapshot import (
    TEMPLATE_STATES,
    Conn,
    ConnCountKey,
    ConnSummary,
    Daemon,
    Service,
    Slab,
    Snapshot,
    SourceFailure,
    Timeouts,
    Unread,
    is_template_entry,
)
from lvsprobe.model.values import (
    DaemonState,
    Family,
    Forward,
    IPAddress,
    Origin,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    ServiceFlag,
    ServiceKey,
    Stats,
    Tunnel,
)

__all__ = [
    "RATE_FIELDS",
    "STAT_FIELDS",
    "TEMPLATE_STATES",
    "Conn",
    "ConnCountKey",
    "ConnSummary",
    "Daemon",
    "DaemonState",
    "Family",
    "Forward",
    "IPAddress",
    "Origin",
    "Persistence",
    "Protocol",
    "Rates",
    "RealServer",
    "RealServerRows",
    "RealServerTable",
    "Service",
    "ServiceFlag",
    "ServiceKey",
    "Slab",
    "Snapshot",
    "SourceFailure",
    "Stats",
    "TableBuilder",
    "Timeouts",
    "Tunnel",
    "Unread",
    "address_number",
    "address_object",
    "address_texts",
    "frozen_records",
    "is_template_entry",
]
