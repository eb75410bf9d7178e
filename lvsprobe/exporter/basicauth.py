"""`basic_auth_users` of the web config: bcrypt hashes checked at start, 401s logged per client.

A hash bcrypt could never have written (a placeholder, a truncated paste, an MD5 htpasswd line)
is refused at start naming the user, since it would make every scrape a silent 401. At request
time every failure is a plain False, logged once per client and interval.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lvsprobe.exporter.yamlfile import Section, describe

log = logging.getLogger("lvsprobe.exporter")

HASH_HOWTO = (
    "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'  (or python3 -c 'import bcrypt, "
    "getpass; print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())')"
)
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# The 16 salt bytes take 22 characters and the 23 hash bytes 31, six bits each: the last
# character of the salt carries 2 bits and that of the hash 4, the rest being zero. bcrypt
# refuses any other salt ("Invalid salt"); no password ever matches any other hash.
_SALT_LAST = frozenset(_BCRYPT_ALPHABET[::16])
_HASH_LAST = frozenset(_BCRYPT_ALPHABET[::4])
_PREFIXES = ("$2a$", "$2b$", "$2y$")
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; the bcrypt package raises beyond it


def bcrypt_hash_problem(hashed: str) -> str | None:
    """Why `hashed` is not a hash bcrypt writes ($2y$10$ and 53 characters), or None."""
    if not hashed.startswith(_PREFIXES):
        if hashed.startswith("$apr1$"):
            return "an MD5 hash (htpasswd without -B), not bcrypt"
        return "not a bcrypt hash (those start $2y$, $2b$ or $2a$)"
    cost_text, sep, rest = hashed[4:].partition("$")
    if not sep or len(cost_text) != 2 or not set(cost_text) <= set("0123456789"):
        return "expected a two-digit cost after the $2y$"
    if not 4 <= int(cost_text) <= 31:
        return f"cost {cost_text} is outside bcrypt's 04..31"
    if len(rest) != 53:
        return f"expected 53 characters after {hashed[:7]}, got {len(rest)}"
    for position, char in enumerate(rest):
        if char not in _BCRYPT_ALPHABET:
            return f"{char!r} at position {position + 7} is not one of bcrypt's characters"
    if rest[21] not in _SALT_LAST or rest[52] not in _HASH_LAST:
        return "not a hash bcrypt can write (a placeholder?)"
    return None


def parse_basic_auth_users(users: Section) -> BasicAuth:
    """Users and their hashes; a ParseError naming the user for any unusable entry."""
    if not users.data:
        raise users.error(
            None,
            "is empty: refused rather than serve without authentication; add users, "
            f"or remove basic_auth_users to serve without authentication; {HASH_HOWTO}",
        )
    out: dict[str, bytes] = {}
    for user, hashed in users.data.items():
        if not isinstance(user, str):
            raise users.error(user, f"a user name is a string (quote it), got {describe(user)}")
        if ":" in user:
            raise users.error(user, "a user name with ':' can never log in (Basic splits at it)")
        if not isinstance(hashed, str):
            raise users.error(user, f"expected a bcrypt hash, got {describe(hashed)}; {HASH_HOWTO}")
        problem = bcrypt_hash_problem(hashed)
        if problem is not None:
            if "REPLACE" in hashed:
                problem += " (it is the example file's placeholder)"
            raise users.error(user, f"not a usable bcrypt hash: {problem}; {HASH_HOWTO}")
        out[user] = hashed.encode()
    return BasicAuth(out)


@dataclass
class RejectionLog:
    """Logs a 401 once per client and `interval_s`, with how many went unlogged meanwhile."""

    interval_s: float = 600.0
    max_clients: int = 4096  # a bound on memory when many addresses fail
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, client: str, reason: str) -> None:
        now = self.clock()
        with self._lock:
            logged_at, unlogged = self._last.pop(client, (None, 0))
            if logged_at is not None and now - logged_at < self.interval_s:
                self._last[client] = (logged_at, unlogged + 1)
                return
            if len(self._last) >= self.max_clients:
                del self._last[next(iter(self._last))]  # the one heard from longest ago
            self._last[client] = (now, 0)
        since = f"{unlogged} more since the last line; " if logged_at is not None else ""
        log.warning(
            "401 unauthorized: client=%s reason=%s (%sat most one line per client per %d s)",
            client,
            reason,
            since,
            self.interval_s,
        )


@dataclass(frozen=True)
class BasicAuth:
    """Users and bcrypt hashes; successful checks are cached (bcrypt is slow by design)."""

    users: Mapping[str, bytes]
    rejections: RejectionLog = field(default_factory=RejectionLog)
    _ok: set[tuple[str, bytes]] = field(default_factory=set, repr=False, compare=False)
    _ok_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # One bcrypt at a time, as the toolkit does: a flood of wrong passwords costs one core.
    _bcrypt_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def check(self, header: str | None, client: str | None = None) -> bool:
        """True when an `Authorization: Basic …` header names a user with the right password.

        Anything else is False, logged (rate-limited) with `client` and the reason.
        """
        problem = self._problem(header)
        if problem is None:
            return True
        self.rejections.note(client or "unknown", problem)
        return False

    def _problem(self, header: str | None) -> str | None:
        if not header:
            return "no credentials"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return "not Basic authorization"
        try:
            user_bytes, sep, password = base64.b64decode(token.strip(), validate=True).partition(
                b":"
            )
        except ValueError:  # binascii.Error, or a non-ASCII header (http.server decodes latin-1)
            return "malformed Basic credentials"
        if not sep:
            return "malformed Basic credentials (no ':')"
        user = user_bytes.decode("utf-8", "replace")
        shown = repr(user[:64])  # repr: a user name cannot forge log lines
        hashed = self.users.get(user)
        digest = hashlib.sha256(password).digest()
        if hashed is not None:
            with self._ok_lock:
                if (user, digest) in self._ok:
                    return None
        import bcrypt  # here: only a web config with users needs it

        # Unknown users and long passwords pay for a bcrypt too, so that timing tells nothing.
        with self._bcrypt_lock:
            ok = bcrypt.checkpw(password[:MAX_PASSWORD_BYTES], hashed or self._decoy())
        if hashed is None:
            return f"unknown user {shown}"
        if len(password) > MAX_PASSWORD_BYTES:
            return f"password of user {shown} is longer than bcrypt's {MAX_PASSWORD_BYTES} bytes"
        if not ok:
            return f"wrong password for user {shown}"
        with self._ok_lock:
            self._ok.add((user, digest))
        return None

    def _decoy(self) -> bytes:
        """A valid hash no password matches, at the highest cost configured."""
        cost = max((int(hashed[4:6]) for hashed in self.users.values()), default=10)
        return b"$2b$%02d$" % cost + b"." * 53
