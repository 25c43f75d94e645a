"""The trio throttle: virtual-time rates, FIFO fairness, nested limits, throttled streams."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from opendistro.errors import ConfigError, LocalProtocolError
from opendistro.io.throttle import Throttle, ThrottledStream

KIB = 1024
MIB = 1024 * 1024


async def test_unlimited_acquire_is_just_a_checkpoint(autojump_clock: trio.abc.Clock) -> None:
    throttle = Throttle(None, parent=Throttle(None))
    start = trio.current_time()
    with trio.testing.assert_checkpoints():
        await throttle.acquire(100 * MIB)
    assert trio.current_time() == start


async def test_one_acquirer_moves_at_the_rate(autojump_clock: trio.abc.Clock) -> None:
    throttle = Throttle(256 * KIB)
    start = trio.current_time()
    await throttle.acquire(64 * KIB)  # the initial burst
    assert trio.current_time() == start
    await throttle.acquire(4 * MIB)
    assert trio.current_time() - start == pytest.approx(16.0)


async def test_many_acquirers_share_fairly_and_finish_at_total_over_rate(
    autojump_clock: trio.abc.Clock,
) -> None:
    rate = 256 * KIB
    each = 1 * MIB
    chunk = 16 * KIB
    counts = [0] * 5
    progress_at_half: list[list[int]] = []
    finished: list[float] = []
    start = trio.current_time()
    throttle = Throttle(rate)

    async def pull(index: int) -> None:
        while counts[index] < each:
            await throttle.acquire(chunk)
            counts[index] += chunk
        finished.append(trio.current_time() - start)

    async def snapshot() -> None:
        await trio.sleep(len(counts) * each / rate / 2)
        progress_at_half.append(list(counts))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(snapshot)
        for index in range(len(counts)):
            nursery.start_soon(pull, index)

    total = len(counts) * each
    assert max(finished) == pytest.approx(total / rate, abs=0.5)
    # Fair sharing: nobody finishes much before the others, and halfway through
    # everyone has about the same share.
    assert min(finished) >= 0.8 * max(finished)
    (halfway,) = progress_at_half
    assert min(halfway) >= 0.8 * max(halfway) > 0


async def test_a_big_writer_does_not_starve_a_small_one(autojump_clock: trio.abc.Clock) -> None:
    throttle = Throttle(128 * KIB)
    small_done = 0
    big_finished = trio.Event()
    small_when_big_finished: list[int] = []

    async def big() -> None:
        await throttle.acquire(2 * MIB)
        small_when_big_finished.append(small_done)
        big_finished.set()

    async def small() -> None:
        nonlocal small_done
        while not big_finished.is_set():
            await throttle.acquire(64 * KIB)
            small_done += 64 * KIB

    async with trio.open_nursery() as nursery:
        nursery.start_soon(big)
        nursery.start_soon(small)
    # Both got about 2 MiB by the time the big one was through, not 0 and 2 MiB.
    assert small_when_big_finished[0] == pytest.approx(2 * MIB, rel=0.2)


async def test_parent_caps_the_sum_of_two_children(autojump_clock: trio.abc.Clock) -> None:
    parent = Throttle(256 * KIB)
    children = [Throttle(None, parent=parent), Throttle(1 * MIB, parent=parent)]
    moved = [0, 0]
    start = trio.current_time()

    async def pull(index: int) -> None:
        while moved[index] < 1 * MIB:
            await children[index].acquire(16 * KIB)
            moved[index] += 16 * KIB

    async with trio.open_nursery() as nursery:
        for index in range(2):
            nursery.start_soon(pull, index)
    elapsed = trio.current_time() - start
    # 2 MiB under a 256 KiB/s parent: about 8 s, though each child alone allows more.
    assert elapsed == pytest.approx(8.0, abs=0.5)


async def test_strict_child_keeps_its_own_limit_under_a_parent(
    autojump_clock: trio.abc.Clock,
) -> None:
    parent = Throttle(256 * KIB)
    slow = Throttle(64 * KIB, parent=parent)
    fast = Throttle(None, parent=parent)
    moved = {"slow": 0, "fast": 0}

    async def pull(name: str, throttle: Throttle) -> None:
        while True:
            await throttle.acquire(16 * KIB)
            moved[name] += 16 * KIB

    with trio.move_on_after(20.0):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull, "slow", slow)
            nursery.start_soon(pull, "fast", fast)
    # The slow torrent gets its 64 KiB/s; the fast one takes what the parent has left.
    assert moved["slow"] == pytest.approx(20 * 64 * KIB, rel=0.2)
    assert moved["fast"] == pytest.approx(20 * 192 * KIB, rel=0.2)
    assert moved["slow"] + moved["fast"] <= 20 * 256 * KIB + 3 * 64 * KIB


async def test_raising_the_rate_wakes_a_waiter_early(autojump_clock: trio.abc.Clock) -> None:
    throttle = Throttle(1 * KIB)
    start = trio.current_time()

    async def raise_rate() -> None:
        await trio.sleep(1.0)
        throttle.set_rate(1 * MIB)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(raise_rate)
        await throttle.acquire(128 * KIB)  # at 1 KiB/s the second 64 KiB would take 64 s
    assert trio.current_time() - start == pytest.approx(1.0, abs=0.1)
    throttle.set_rate(None)
    assert throttle.rate is None


async def test_lowering_the_rate_makes_a_waiter_wait_longer(
    autojump_clock: trio.abc.Clock,
) -> None:
    throttle = Throttle(64 * KIB)
    start = trio.current_time()

    async def lower_rate() -> None:
        await trio.sleep(0.5)
        throttle.set_rate(16 * KIB)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lower_rate)
        await throttle.acquire(128 * KIB)
    # Half of the second 64 KiB was repaid at 64 KiB/s; the other 32 KiB takes 2 s at 16 KiB/s.
    assert trio.current_time() - start == pytest.approx(2.5)


async def test_a_cancelled_acquirer_leaves_the_queue_working(
    autojump_clock: trio.abc.Clock,
) -> None:
    throttle = Throttle(64 * KIB)
    await throttle.acquire(64 * KIB)  # empty the burst
    with trio.move_on_after(0.5) as scope:
        await throttle.acquire(10 * MIB)
    assert scope.cancelled_caught
    start = trio.current_time()
    await throttle.acquire(16 * KIB)
    # It waited for the booking the cancelled caller kept (1 s from its start),
    # then for its own 16 KiB, and was not blocked behind the 10 MiB.
    assert trio.current_time() - start == pytest.approx(0.75, abs=0.01)


def test_a_throttle_can_be_made_and_changed_outside_trio() -> None:
    throttle = Throttle(64 * KIB)
    throttle.set_rate(128 * KIB)

    async def use() -> float:
        start = trio.current_time()
        await throttle.acquire(128 * KIB + 64 * KIB)
        return trio.current_time() - start

    elapsed = trio.run(use, clock=trio.testing.MockClock(autojump_threshold=0))
    assert elapsed == pytest.approx(1.0)


async def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(ConfigError):
        Throttle(0)
    with pytest.raises(LocalProtocolError):
        await Throttle(1000.0).acquire(-1)
    with pytest.raises(LocalProtocolError):
        Throttle(1000.0).charge(-1)
    a, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ConfigError):
        ThrottledStream(a, quantum=0)
    first = Throttle(1000.0)
    second = Throttle(1000.0, parent=first)
    first.parent = second
    with pytest.raises(ConfigError):
        await first.acquire(1)


def _payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        data = await stream.receive_some()
        assert data, "stream ended early"
        received += data
    return bytes(received)


async def test_throttled_upload_over_memory_streams(autojump_clock: trio.abc.Clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = ThrottledStream(left, upload=Throttle(256 * KIB))
    payload = _payload(1 * MIB)
    start = trio.current_time()
    received: list[bytes] = []

    async def receive() -> None:
        received.append(await _receive_exactly(right, len(payload)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await sender.send_all(payload)
    assert received == [payload]
    assert trio.current_time() - start == pytest.approx(4.0, abs=0.5)


async def test_throttled_download_over_memory_streams(autojump_clock: trio.abc.Clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = ThrottledStream(right, download=Throttle(256 * KIB))
    payload = _payload(1 * MIB)
    start = trio.current_time()
    await left.send_all(payload)  # memory streams buffer without limit
    assert await _receive_exactly(receiver, len(payload)) == payload
    assert trio.current_time() - start == pytest.approx(4.0, abs=0.5)
    await left.send_eof()
    assert await receiver.receive_some() == b""


async def test_throttled_stream_caps_reads_at_the_quantum(autojump_clock: trio.abc.Clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = ThrottledStream(right, download=Throttle(1 * MIB), quantum=1000)
    await left.send_all(b"x" * 5000)
    assert len(await receiver.receive_some()) == 1000
    assert len(await receiver.receive_some(300)) == 300
    with pytest.raises(ValueError):
        await receiver.receive_some(0)


async def test_throttled_stream_rejects_concurrent_senders(
    autojump_clock: trio.abc.Clock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = ThrottledStream(left, upload=Throttle(64 * KIB))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send_all, b"a" * (256 * KIB))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await sender.send_all(b"b")
        nursery.cancel_scope.cancel()
    assert b"b" not in await right.receive_some()


async def test_half_close_and_close_pass_through(autojump_clock: trio.abc.Clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = ThrottledStream(left, upload=Throttle(64 * KIB))
    await sender.send_all(b"")
    await sender.send_all(b"hello")
    await sender.send_eof()
    assert await _receive_exactly(right, 5) == b"hello"
    assert await right.receive_some() == b""
    await sender.aclose()


async def test_throttled_upload_over_real_tcp() -> None:
    payload = _payload(2 * MIB)
    received: list[bytes] = []
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    async def serve_one(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with listener:
            task_status.started()
            stream = await listener.accept()
            async with stream:
                received.append(await _receive_exactly(stream, len(payload)))

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_one)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with ThrottledStream(tcp, upload=Throttle(4 * MIB)) as sender:
            start = trio.current_time()
            await sender.send_all(payload)
            elapsed = trio.current_time() - start
    assert received == [payload]
    # 2 MiB less the default 0.4 MiB burst at 4 MiB/s takes at least 0.4 s.
    # Only a lower bound: a slow machine can take longer, never shorter.
    assert elapsed >= 0.35
