"""The wire formats between the host and the guest agent (stdlib only: the guest imports it).

Two virtio-serial ports:

* `lvsprobe.control`: JSON objects, one per line. The host sends requests
  `{"id": N, "op": "run", ...}`; the agent answers `{"id": N, "ok": true, ...}` or
  `{"id": N, "ok": false, "error": "..."}`, in any order. Bytes travel base64-encoded. The agent
  announces itself once with `{"id": 0, "event": "ready", ...}`.
* `lvsprobe.mux`: TCP connections multiplexed as frames `!IBI` (connection id, kind, length) +
  payload. OPEN carries JSON `{"ns": NS, "port": PORT}` from the host; DATA carries bytes; EOF
  is a half-close of the sender's direction; CLOSE ends the connection (payload: a reason).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

CONTROL_PORT = "lvsprobe.control"
MUX_PORT = "lvsprobe.mux"

FRAME_HEADER = struct.Struct("!IBI")
OPEN, DATA, EOF, CLOSE = 1, 2, 3, 4
MAX_FRAME = 1 << 20


def encode_message(message: dict[str, Any]) -> bytes:
    """One control-channel line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    """Parse one control-channel line; ValueError if it is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def encode_frame(conn_id: int, kind: int, payload: bytes = b"") -> bytes:
    """One mux frame."""
    return FRAME_HEADER.pack(conn_id, kind, len(payload)) + payload


class FrameReader:
    """Cuts a byte stream into (conn_id, kind, payload) frames; sans-IO."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        frames = []
        while len(self._buf) >= FRAME_HEADER.size:
            conn_id, kind, length = FRAME_HEADER.unpack_from(self._buf)
            if length > MAX_FRAME or kind not in (OPEN, DATA, EOF, CLOSE):
                raise ValueError(f"bad mux frame header: kind {kind}, length {length}")
            end = FRAME_HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((conn_id, kind, bytes(self._buf[FRAME_HEADER.size : end])))
            del self._buf[:end]
        return frames
