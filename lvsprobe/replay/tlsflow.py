"""Sans-IO TLS flow: a handshake through memory BIOs, then an inner flow (HTTP) inside.

Resumption: pass the session a previous flow of the same client saved; the flow reports
`tls_session_reused` and hands its own session back in a TlsSession event (TLS 1.3 sends
the ticket after the handshake, so the session is taken only after the reply was read).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from lvsprobe.replay.flows import FieldSet, Finished, Flow, Step


@dataclass(frozen=True, slots=True)
class TlsSession:
    """The session to offer on the client's next TLS flow."""

    session: ssl.SSLSession


class TlsFlow(Flow):
    kind = "tls"

    def __init__(
        self,
        inner: Flow,
        context: ssl.SSLContext,
        server_name: str | None,
        session: ssl.SSLSession | None = None,
    ):
        super().__init__(inner.matcher)
        self.inner = inner
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._in, self._out, server_hostname=server_name, session=session
        )
        self._handshaken = False
        self._inner_done = False

    def _wire(self) -> bytes:
        return self._out.read()

    def _handshake(self, now: float) -> Step:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return Step(send=self._wire())
        except ssl.SSLError as exc:
            return Step(send=self._wire(), events=[Finished(_tls_error(exc), str(exc))], done=True)
        self._handshaken = True
        events: list[Any] = [
            FieldSet("tls_session_reused", self._tls.session_reused),
            FieldSet("tls_version", self._tls.version()),
        ]
        inner = self.inner.start(now)
        return self._wrap(inner, events)

    def _wrap(self, inner: Step, events: list[Any]) -> Step:
        if inner.send:
            self._tls.write(inner.send)
        events = events + inner.events
        done = inner.done
        if done:
            self._inner_done = True
            session = self._tls.session
            if session is not None:
                events.append(TlsSession(session))
        return Step(
            send=self._wire(), events=events, done=done, wake_at=inner.wake_at, half_close=False
        )

    def start(self, now: float) -> Step:
        return self._handshake(now)

    def timer(self, now: float) -> Step:
        if not self._handshaken:
            return Step()
        return self._wrap(self.inner.timer(now), [])

    def receive(self, data: bytes, now: float) -> Step:
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        if not self._handshaken:
            if not data:
                return Step(events=[Finished("reset", "EOF during TLS handshake")], done=True)
            step = self._handshake(now)
            if step.done or not self._handshaken:
                return step
            pre = step
        else:
            pre = Step()
        plain = b""
        eof = False
        while True:
            try:
                chunk = self._tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                if "UNEXPECTED_EOF" in str(exc) or not data:
                    eof = True
                    break
                return Step(events=[*pre.events, Finished(_tls_error(exc), str(exc))], done=True)
            if not chunk:
                eof = True
                break
            plain += chunk
        if not data:
            eof = True
        events = list(pre.events)
        step = Step(send=pre.send)
        for piece in ([plain] if plain else []) + ([b""] if eof else []):
            if self._inner_done:
                break
            inner = self._wrap(self.inner.receive(piece, now), [])
            events += inner.events
            step = Step(send=step.send + inner.send, done=inner.done, wake_at=inner.wake_at)
        step.events = events
        return step


def _tls_error(exc: ssl.SSLError) -> str:
    reason = (exc.reason or "ssl").lower().replace("_", "-")
    return f"error:tls-{reason}"
