"""The exporter's event loop: what wakes a task (a socket, a Signal, a deadline), cancelling,
and work handed over from other threads. Deadlines here are short and every wait is bounded;
nothing asserts on speed."""

from __future__ import annotations

import gc
import socket
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from lvsprobe.exporter.reactor import (
    READ,
    Cancelled,
    Loop,
    Signal,
    SocketStream,
    Wait,
    run,
)


def test_a_deadline_throws_timeout_into_the_task() -> None:
    async def waits() -> str:
        try:
            await Wait(signal=Signal(), deadline=Loop.time() + 0.01)
        except TimeoutError:
            return "timed out"
        return "woken"

    assert run(waits()) == "timed out"


def test_a_socket_or_a_signal_wakes_whichever_comes_first() -> None:
    left, right = socket.socketpair()
    with left, right:
        signal = Signal()

        async def waits() -> list[str]:
            woken = [await Wait(left, READ, signal=signal)]
            right.send(b"x")
            woken.append(await Wait(left, READ, signal=Signal()))
            return woken

        signal.set()
        assert run(waits()) == ["signal", "io"]


def test_a_stream_reads_what_arrives_and_times_out_on_silence() -> None:
    left, right = socket.socketpair()
    with right:
        stream = SocketStream(left)

        async def reads() -> bytes:
            right.sendall(b"hello")
            data = await stream.recv(100, Loop.time() + 5)
            with pytest.raises(TimeoutError):
                await stream.recv(100, Loop.time() + 0.01)
            return data

        assert run(reads()) == b"hello"
        stream.close()


def test_a_cancelled_task_lets_go_of_its_socket_at_once() -> None:
    """A socket closed right after its task is cancelled may get its number reused by the
    next accept: the loop must not still hold it."""
    loop = Loop()
    left, right = socket.socketpair()
    ended: list[str] = []

    async def waits_forever() -> None:
        try:
            await Wait(left, READ)
        except Cancelled:
            ended.append("cancelled")
            raise

    task = loop.spawn(waits_forever())
    loop.call_soon(lambda: None)
    loop.call_later(0.0, loop.stop)
    loop.run_forever()
    loop.cancel(task)
    left.close()
    again, other = socket.socketpair()  # may reuse the closed number
    with again, other, right:

        async def reads() -> str:
            try:
                other.send(b"x")
                return await Wait(again, READ)
            finally:
                loop.stop()

        follow = loop.spawn(reads())
        loop.run_forever()
    loop.close()
    assert ended == ["cancelled"] and task.done and follow.result == "io"


def test_work_from_threads_reaches_the_loop() -> None:
    loop = Loop()

    async def offloaded() -> int:
        try:
            with ThreadPoolExecutor(1) as pool:
                return await loop.in_thread(pool, sum, [1, 2, 3])
        finally:
            loop.stop()

    task = loop.spawn(offloaded())
    loop.run_forever()
    loop.close()
    assert task.result == 6
    with pytest.raises(RuntimeError):  # a closed loop takes no more work
        loop.call_soon_threadsafe(print)


def test_an_interrupt_inside_a_task_ends_the_loop() -> None:
    """Ctrl-C may land while a task runs: it must stop the exporter, not the task alone."""
    loop = Loop()

    async def interrupted() -> None:
        raise KeyboardInterrupt

    loop.spawn(interrupted())
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.close()


def test_a_failing_callback_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callback's bug (a flight's hand-over, a timer, an accept) must cost that callback,
    never the exporter: before, the error left run_forever and the server stopped."""
    loop = Loop()

    def broken() -> None:
        raise RuntimeError("a bug in a callback")

    async def after() -> str:
        try:
            await Wait(signal=Signal(), deadline=Loop.time() + 0.05)
        except TimeoutError:
            return "still running"
        return "woken"

    loop.call_soon(broken)
    loop.call_later(0.0, broken)
    task = loop.spawn(after())
    loop.call_later(0.1, loop.stop)
    with caplog.at_level("ERROR", logger="lvsprobe.exporter"):
        loop.run_forever()
    loop.close()
    assert task.result == "still running"
    assert [r.getMessage() for r in caplog.records].count(
        "exporter loop: a callback failed; the loop goes on"
    ) == 2


def test_a_wait_on_a_closed_socket_is_the_tasks_error_not_the_loops() -> None:
    sock, other = socket.socketpair()
    other.close()
    sock.close()

    async def waits_on_closed() -> str:
        try:
            await Wait(sock, READ, deadline=Loop.time() + 5)
        except ValueError:
            return "told"
        return "woken"

    assert run(waits_on_closed()) == "told"


def test_a_wait_woken_early_lets_go_of_its_timer() -> None:
    """Waits with a far deadline woken by their signal: before, each one's timer (holding
    the task and what it held) stayed in the heap until the deadline, an hour here."""
    loop = Loop()

    async def waits(times: int) -> None:
        for _ in range(times):
            signal = Signal()
            loop.call_soon(signal.set)
            await Wait(signal=signal, deadline=Loop.time() + 3600)

    short = weakref.ref(loop.spawn(waits(1)))
    many = loop.spawn(waits(1000))
    loop.call_later(0.2, loop.stop)
    loop.run_forever()
    loop.close()
    assert many.done
    gc.collect()
    assert short() is None
