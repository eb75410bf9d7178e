"""The exporter's event loop: coroutines driven by one selector, without asyncio.

asyncio would do, but importing it loads ssl (and libcrypto with it, ~4 MB of RSS) and some
50 modules into every exporter, TLS or not. This loop has what the HTTP server needs and no
more: a task (a coroutine) waits for one `Wait` at a time, a socket ready, a `Signal` set or a
deadline passed, whichever comes first; other threads hand work over with
`call_soon_threadsafe`. Deadlines are `time.monotonic()` seconds; one that passes throws
TimeoutError into the task, and `Loop.cancel` throws `Cancelled`. A callback that raises is
logged and the loop goes on, as asyncio's does: one bad callback must not end the exporter.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor
from typing import Any, Generic, Literal, TypeVar

log = logging.getLogger("lvsprobe.exporter")

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
T = TypeVar("T")
# What a close reads and drops, at most (SocketStream.close).
_DRAIN_READS, _DRAIN_READ_BYTES = 16, 64 * 1024
Woken = Literal["io", "signal"]
# A timer's callback, in a box that `disarm` empties: the heap entry stays (removing from a
# heap is linear) but lets go of the task, and the heap is rebuilt once most are empty.
TimerBox = list[Callable[[], object] | None]
_COMPACT_MIN_TIMERS = 64


class Cancelled(BaseException):
    """Thrown into a task stopped from outside (its connection evicted, the loop closing).

    A BaseException, as asyncio's CancelledError: `except Exception` does not swallow it."""


class Signal:
    """Set once; wakes every task waiting on it then, and any that waits on it later. A
    state that changes repeatedly hands out a fresh Signal per change."""

    def __init__(self) -> None:
        self.is_set = False
        self._waiters: list[tuple[Task[Any], Wait]] = []

    def set(self) -> None:
        self.is_set = True
        waiters, self._waiters = self._waiters, []
        for task, wait in waiters:
            task.loop.call_soon(task.resume, wait, "signal", None)


class Wait:
    """What a task waits for: `sock` ready for `events`, `signal` set, or `deadline` passed
    (TimeoutError); `await Wait(...)` says which of the first two woke it."""

    __slots__ = ("deadline", "events", "signal", "sock", "timer")

    def __init__(
        self,
        sock: socket.socket | None = None,
        events: int = READ,
        signal: Signal | None = None,
        deadline: float | None = None,
    ) -> None:
        self.sock, self.events, self.signal, self.deadline = sock, events, signal, deadline
        self.timer: TimerBox | None = None

    def __await__(self) -> Generator[Wait, Woken, Woken]:
        return (yield self)


class Task(Generic[T]):
    """A coroutine run by a loop, one step per wake-up; `done` once it has returned."""

    def __init__(self, loop: Loop, coro: Coroutine[Wait, Any, T]) -> None:
        self.loop, self.coro = loop, coro
        self.waiting: Wait | None = None
        self.done = False
        self.cancelled = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def step(self, value: Woken | None, error: BaseException | None) -> None:
        while True:
            try:
                wait = self.coro.send(value) if error is None else self.coro.throw(error)
            except StopIteration as stop:
                self.done, self.result = True, stop.value
                return
            except Cancelled:
                self.done = True
                return
            except Exception as exc:
                self.done, self.error = True, exc
                return
            except BaseException:  # KeyboardInterrupt, SystemExit: they end the loop too
                self.done = True
                raise
            try:
                self.waiting = wait
                self.loop.arm(self, wait)
                return
            except (ValueError, KeyError, OSError) as exc:
                # A closed socket, or one another task watches: the task's error, not the loop's.
                self.waiting = None
                value, error = None, exc

    def resume(self, wait: Wait, value: Woken | None, error: BaseException | None) -> None:
        """Go on from `wait` if the task still waits on it (a wake-up may come late)."""
        if self.waiting is wait:
            self.loop.disarm(wait)
            self.waiting = None
            self.step(value, error)


class Loop:
    """One thread's selector, timers and callbacks. `run_forever` until `stop`."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._ready: deque[Callable[[], object]] = deque()  # thread-safe appends
        self._timers: list[tuple[float, int, TimerBox]] = []
        self._emptied_timers = 0  # entries in `_timers` whose box `disarm` emptied
        self._order = itertools.count()
        self._stopping = False
        self._closed = False
        self._wake_in, self._wake_out = socket.socketpair()
        for end in (self._wake_in, self._wake_out):
            end.setblocking(False)
        self._selector.register(self._wake_in, READ, self._drain_wakes)

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def spawn(self, coro: Coroutine[Wait, Any, T]) -> Task[T]:
        """Run `coro` as a task, from its first step on the next turn of the loop."""
        task = Task(self, coro)
        self.call_soon(task.step, None, None)
        return task

    def cancel(self, task: Task[Any]) -> None:
        """Throw Cancelled into the task; what it waited on (its socket) is let go now."""
        task.cancelled = True
        wait = task.waiting
        if wait is not None and not task.done:
            self.disarm(wait)
            task.waiting = None
            self.call_soon(task.step, None, Cancelled())

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        self._ready.append(lambda: callback(*args))

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """From any thread; RuntimeError once the loop is closed."""
        if self._closed:
            raise RuntimeError("the loop is closed")
        self.call_soon(callback, *args)
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            self._wake_out.send(b"\0")

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> None:
        self._push_timer(self.time() + delay_s, callback)

    def _push_timer(self, deadline: float, callback: Callable[[], object]) -> TimerBox:
        box: TimerBox = [callback]
        heapq.heappush(self._timers, (deadline, next(self._order), box))
        return box

    def add_reader(self, sock: socket.socket, callback: Callable[[], object]) -> None:
        """Call `callback` whenever `sock` is readable (a listening socket: accept)."""
        self._selector.register(sock, READ, callback)

    def remove_reader(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)

    async def in_thread(self, executor: Executor, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` run in `executor`, awaited without blocking the loop."""
        done = Signal()
        future = executor.submit(fn, *args)

        def finished(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                self.call_soon_threadsafe(done.set)

        future.add_done_callback(finished)
        await Wait(signal=done)
        return future.result()

    def arm(self, task: Task[Any], wait: Wait) -> None:
        if task.cancelled:
            task.waiting = None
            self.call_soon(task.step, None, Cancelled())
            return
        if wait.sock is not None:
            self._selector.register(wait.sock, wait.events, task)
        if wait.signal is not None:
            if wait.signal.is_set:
                self.call_soon(task.resume, wait, "signal", None)
            else:
                wait.signal._waiters.append((task, wait))
        if wait.deadline is not None:
            wait.timer = self._push_timer(
                wait.deadline, lambda: task.resume(wait, None, TimeoutError())
            )

    def disarm(self, wait: Wait) -> None:
        """Let go of a wait's socket and timer (a signal's entry is dropped when it is set: a
        stale one finds the task waiting on something else)."""
        if wait.sock is not None:
            self._selector.unregister(wait.sock)
        box = wait.timer
        if box is not None and box[0] is not None:
            box[0] = None
            self._emptied_timers += 1
            emptied = self._emptied_timers
            if emptied > _COMPACT_MIN_TIMERS and emptied * 2 > len(self._timers):
                self._timers = [entry for entry in self._timers if entry[2][0] is not None]
                heapq.heapify(self._timers)
                self._emptied_timers = 0

    def stop(self) -> None:
        self._stopping = True

    def run_forever(self) -> None:
        self._stopping = False
        while not self._stopping:
            for _ in range(len(self._ready)):
                self._call(self._ready.popleft())
            if self._stopping:
                break
            timeout = 0.0 if self._ready else self._until_next_timer()
            for key, _ in self._selector.select(timeout):
                if isinstance(key.data, Task):
                    task = key.data
                    if task.waiting is not None:
                        task.resume(task.waiting, "io", None)
                else:
                    self._call(key.data)
            now = self.time()
            while self._timers and self._timers[0][0] <= now:
                box = heapq.heappop(self._timers)[2]
                callback, box[0] = box[0], None
                if callback is None:
                    self._emptied_timers -= 1
                else:
                    self._call(callback)

    @staticmethod
    def _call(callback: Callable[[], object]) -> None:
        """A callback, its error logged (KeyboardInterrupt and SystemExit end the loop)."""
        try:
            callback()
        except Exception:
            log.exception("exporter loop: a callback failed; the loop goes on")

    def _until_next_timer(self) -> float | None:
        while self._timers and self._timers[0][2][0] is None:  # emptied: no wake-up for it
            heapq.heappop(self._timers)
            self._emptied_timers -= 1
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - self.time())

    def _drain_wakes(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_in.recv(4096):
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._selector.close()
        self._wake_in.close()
        self._wake_out.close()


def run(coro: Coroutine[Wait, Any, T]) -> T:
    """Run a coroutine on a loop of its own to its end (tests, tools): its result or error."""
    loop = Loop()

    async def whole() -> T:
        try:
            return await coro
        finally:
            loop.stop()

    task = loop.spawn(whole())
    try:
        loop.run_forever()
    finally:
        loop.close()
    if task.error is not None:
        raise task.error
    return task.result  # type: ignore[return-value]


class SocketStream:
    """A connected socket, read and written without blocking by the task that owns it,
    each call within a deadline. `want` is the readiness the last call that could not go on
    waits for (TLS may need to write before it can read, and the reverse)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.want = READ

    async def handshake(self, deadline: float | None) -> None:
        """Plain TCP has none (TLSStream's does)."""

    def recv_nowait(self, max_bytes: int) -> bytes | None:
        """What has arrived (b"" at the peer's end), or None if nothing yet."""
        return self._attempt(self.sock.recv, max_bytes, READ)

    def send_nowait(self, data: memoryview) -> int | None:
        """The bytes the kernel took, or None if it takes none now."""
        return self._attempt(self.sock.send, data, WRITE)

    def _attempt(self, call: Callable[[Any], T], arg: Any, blocked_on: int) -> T | None:
        """`call(arg)`, or None with `want` set to what the socket must become to go on;
        `want` is back to READ (waiting for the client) once a call went through."""
        try:
            result = call(arg)
        except BlockingIOError:
            self.want = blocked_on
            return None
        self.want = READ
        return result

    async def recv(self, max_bytes: int, deadline: float | None) -> bytes:
        while (data := self.recv_nowait(max_bytes)) is None:
            await Wait(self.sock, self.want, deadline=deadline)
        return data

    async def send_all(self, data: bytes | memoryview, deadline: float | None) -> None:
        """Every byte handed to the kernel: nothing is left in user space when it returns."""
        view = memoryview(data)
        while view:
            sent = self.send_nowait(view)
            if sent is None:
                await Wait(self.sock, self.want, deadline=deadline)
            else:
                view = view[sent:]

    def reset(self) -> None:
        """Close with a reset: what the kernel still holds to send (megabytes, for a client
        that stopped reading) is dropped now, rather than kept by an orphaned socket for
        minutes."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        """Close after taking what the client sent that was not read (a request too big, a
        body): unread bytes make the kernel answer the close with a reset, which can destroy
        the answer still on its way to the client."""
        with contextlib.suppress(OSError):
            for _ in range(_DRAIN_READS):
                if not self.recv_nowait(_DRAIN_READ_BYTES):
                    break
        self.sock.close()
