"""What keepalived's dumps say, as frozen dataclasses (parsed by vrrp_json.py, check_data.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lvsprobe.model import Forward, IPAddress, Protocol


class VrrpState(enum.IntEnum):
    """An instance's state, VRRP_STATE_* in keepalived's vrrp.h."""

    INIT = 0
    BACKUP = 1
    MASTER = 2
    FAULT = 3
    DELETED = 97
    STOP = 98

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Vip:
    """A virtual address of an instance; `is_set` when keepalived has it on the interface."""

    address: IPAddress
    is_set: bool


@dataclass(frozen=True, slots=True)
class VrrpInstance:
    """One vrrp_instance block, as keepalived.json has it."""

    name: str
    vrid: int
    interface: str
    state: VrrpState
    base_priority: int
    effective_priority: int
    vips: tuple[Vip, ...]
    last_transition_s: float | None  # Unix time; absent before keepalived 2.1
    become_master: int
    release_master: int
    adverts_received: int
    adverts_sent: int


@dataclass(frozen=True, slots=True)
class CheckedRealServer:
    """A real_server block and what the checkers last found (keepalived_check.data)."""

    address: IPAddress
    port: int
    forward: Forward
    weight: int
    inhibit_on_failure: bool
    alive: bool
    failed_checkers: int


@dataclass(frozen=True, slots=True)
class CheckedVirtualServer:
    """A virtual_server block: by address and port, by fwmark, or by group name.

    `protocol` is None for `protocol none` (fwmark services); `family` is 4, 6 or None when
    keepalived does not tell (a group of both families).
    """

    address: IPAddress | None
    port: int
    fwmark: int
    group: str | None
    protocol: Protocol | None
    family: int | None
    alive: bool
    quorum_up: bool
    real_servers: tuple[CheckedRealServer, ...]
