"""keepalived.json, the VRRP process's dump on SIGRTMIN+2 (vrrp_json.c): bytes in, instances out.

keepalived 2.2.7 writes one JSON array, an object per vrrp_instance with a "data" object
(configuration and state) and a "stats" object (counters). Only the fields exported are
checked; a missing or mistyped one is a ParseError naming the instance and the field.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping

from lvsprobe.errors import ParseError
from lvsprobe.keepalived.model import Vip, VrrpInstance, VrrpState

SOURCE = "keepalived.json"
_U64_MAX = (1 << 64) - 1
# format_ipaddress (vrrp_ipaddress.c): the words after the address that take a value.
_VIP_WORDS_WITH_VALUE = frozenset(
    {"brd", "dev", "scope", "label", "peer", "track_group", "preferred_lft"}
)


def parse_keepalived_json(data: bytes) -> tuple[VrrpInstance, ...]:
    """The instances of a keepalived.json dump, in keepalived's order."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise ParseError(SOURCE, None, None, f"not JSON: {_first_line(exc)}") from exc
    if not isinstance(doc, list):
        raise ParseError(SOURCE, None, None, f"expected an array, got {type(doc).__name__}")
    instances = tuple(_instance(item, index) for index, item in enumerate(doc))
    names = [inst.name for inst in instances]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ParseError(SOURCE, None, None, f"instance named twice: {duplicates[0]!r}")
    return instances


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _instance(item: object, index: int) -> VrrpInstance:
    where = f"instance #{index}"
    if not isinstance(item, dict):
        raise ParseError(SOURCE, None, None, f"{where}: expected an object")
    data = _object(item, "data", where)
    name = _string(data, "iname", where)
    where = f"instance {name!r}"
    stats = _object(item, "stats", where)
    state_number = _uint(data, "state", where)
    try:
        state = VrrpState(state_number)
    except ValueError:
        raise ParseError(SOURCE, None, None, f"{where}: unknown state {state_number}") from None
    vips = tuple(
        _vip(text, where) for key in ("vips", "evips") for text in _strings(data, key, where)
    )
    return VrrpInstance(
        name=name,
        vrid=_uint(data, "vrid", where, maximum=255),
        interface=_string(data, "ifp_ifname", where) if "ifp_ifname" in data else "",
        state=state,
        base_priority=_uint(data, "base_priority", where, maximum=255),
        effective_priority=_uint(data, "effective_priority", where, maximum=255),
        vips=vips,
        last_transition_s=_seconds(data, "last_transition", where),
        become_master=_uint(stats, "become_master", where),
        release_master=_uint(stats, "release_master", where),
        adverts_received=_uint(stats, "advert_rcvd", where),
        adverts_sent=_uint(stats, "advert_sent", where),
    )


def _object(parent: Mapping[str, object], key: str, where: str) -> dict[str, object]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise ParseError(SOURCE, None, None, f"{where}: {key!r} is not an object")
    return value


def _string(parent: Mapping[str, object], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str):
        raise ParseError(SOURCE, None, None, f"{where}: {key!r} is not a string")
    return value


def _strings(parent: Mapping[str, object], key: str, where: str) -> list[str]:
    """An optional array of strings (keepalived leaves out an empty one)."""
    value = parent.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ParseError(SOURCE, None, None, f"{where}: {key!r} is not an array of strings")
    return value


def _uint(parent: Mapping[str, object], key: str, where: str, maximum: int = _U64_MAX) -> int:
    value = parent.get(key)
    # bool is an int in Python; JSON true is no count.
    if type(value) is not int or not 0 <= value <= maximum:
        raise ParseError(
            SOURCE, None, None, f"{where}: {key!r} is not an integer 0..{maximum}: {value!r:.40}"
        )
    return value


def _seconds(parent: Mapping[str, object], key: str, where: str) -> float | None:
    if key not in parent:
        return None
    value = parent[key]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ParseError(SOURCE, None, None, f"{where}: {key!r} is not a time: {value!r:.40}")
    if not math.isfinite(value) or value < 0:
        raise ParseError(SOURCE, None, None, f"{where}: {key!r} is not a time: {value!r:.40}")
    return float(value)


def _vip(text: str, where: str) -> Vip:
    """`198.18.0.100/24 dev eth0 scope global set`: the address, and whether it is set."""
    words = text.split()
    if not words:
        raise ParseError(SOURCE, None, text, f"{where}: empty virtual address")
    try:
        address = ipaddress.ip_interface(words[0]).ip
    except ValueError:
        raise ParseError(SOURCE, None, text, f"{where}: not an address") from None
    flags: set[str] = set()
    rest = iter(words[1:])
    for word in rest:
        if word in _VIP_WORDS_WITH_VALUE:
            next(rest, None)
        else:
            flags.add(word)
    return Vip(address, "set" in flags)
