"""Bandwidth limits for trio: a shared, FIFO-fair :class:`Throttle` and a stream that obeys it.

The arithmetic lives in :class:`opendistro.swarm.bandwidth.TokenBucket`; this
module only adds trio's clock, sleeping and queueing around it.

How sharing stays fair: a throttle grants at most
:data:`~opendistro.swarm.bandwidth.GRANT_QUANTUM` bytes at a time, and only to
the holder of a :class:`trio.StrictFIFOLock`. The holder books its quantum
(into debt if the bucket is empty) and sleeps the debt off *while holding the
lock*, so exactly one booking is ever outstanding and everyone else queues in
arrival order. A connection with a lot to send takes one quantum and rejoins
the back of the queue, so N busy connections get one quantum each per round.

Limits nest: a per-torrent throttle names the global one as ``parent``. A
grant passes its own throttle first and its parent after, so the global queue
only ever holds bytes their torrent already allows, and a slow torrent cannot
keep a place in the global queue while it waits on its own limit.

A cancelled :meth:`Throttle.acquire` keeps what it booked (the bytes count as
sent). That errs on the slow side, and never lets anyone exceed a limit.
"""

from __future__ import annotations

# trio 0.22 ships no type information; later releases do, hence unused-ignore.
import trio  # type: ignore[import-untyped, unused-ignore]

from ..errors import ConfigError, LocalProtocolError
from ..swarm.bandwidth import GRANT_QUANTUM, TokenBucket
from .wrapped_stream import WrappedStream

__all__ = ["Throttle", "ThrottledStream"]


def _trio_now_or(fallback: float) -> float:
    """trio's clock inside a run; outside one (configuring before ``trio.run``) ``fallback``."""
    try:
        return float(trio.current_time())
    except RuntimeError:
        return fallback


class Throttle:
    """A bandwidth limit shared by every connection it covers; FIFO-fair between them.

    ``rate`` is in bytes per second, ``None`` for unlimited. ``parent`` is a
    wider limit (e.g. the global one) that everything passing this throttle
    must pass too. A throttle may be created outside ``trio.run``; it starts
    with a full burst.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        parent: Throttle | None = None,
    ) -> None:
        self._bucket = TokenBucket(rate, burst=burst, now=_trio_now_or(0.0))
        self.parent = parent
        self._lock = trio.StrictFIFOLock()
        self._rate_changed = trio.Event()

    @property
    def rate(self) -> float | None:
        """This throttle's own rate in bytes per second (``None``: unlimited)."""
        return self._bucket.rate

    @property
    def burst(self) -> float:
        """Bytes that may pass at once after an idle spell."""
        return self._bucket.burst

    def set_rate(self, rate: float | None) -> None:
        """Change the limit now; a waiter already sleeping off a booking re-times its wait."""
        self._bucket.set_rate(rate, _trio_now_or(self._bucket.last_update))
        self._rate_changed.set()
        self._rate_changed = trio.Event()

    async def acquire(self, amount: int) -> None:
        """Wait until ``amount`` bytes may pass under this throttle and all its parents.

        Large amounts are granted a quantum at a time, taking turns with other
        callers. ``acquire(0)`` waits for this caller's turn and any debt left
        by :meth:`charge`, which is how a receiver paces itself before reading.
        Always a trio checkpoint; when nothing is limited, only that.
        """
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise LocalProtocolError(f"amount must be a non-negative integer, not {amount!r}")
        chain = self._chain()
        if all(throttle.rate is None for throttle in chain):
            await trio.lowlevel.checkpoint()
            return
        remaining = amount
        while True:
            grant = min(remaining, GRANT_QUANTUM)
            for throttle in chain:
                await throttle._take(grant)
            remaining -= grant
            if remaining <= 0:
                return

    def charge(self, amount: int) -> None:
        """Count ``amount`` bytes that already moved (e.g. just received) against every limit.

        Never waits: the debt is repaid by whoever next calls :meth:`acquire`
        on these throttles. Used where waiting afterwards could lose data.
        """
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise LocalProtocolError(f"amount must be a non-negative integer, not {amount!r}")
        for throttle in self._chain():
            bucket = throttle._bucket
            bucket.consume(amount, _trio_now_or(bucket.last_update))

    def _chain(self) -> list[Throttle]:
        chain: list[Throttle] = []
        throttle: Throttle | None = self
        while throttle is not None:
            if any(throttle is seen for seen in chain):
                raise ConfigError("throttle parents form a cycle")
            chain.append(throttle)
            throttle = throttle.parent
        return chain

    async def _take(self, amount: int) -> None:
        """Book ``amount`` here and sleep off the debt, holding the FIFO lock throughout."""
        if self._bucket.rate is None:
            return
        async with self._lock:
            now = trio.current_time()
            deadline = now + self._bucket.consume(amount, now)
            while True:
                changed = self._rate_changed
                with trio.move_on_at(deadline):
                    await changed.wait()
                if not changed.is_set():
                    return
                # Ours is the only outstanding booking, so the remaining debt is ours.
                now = trio.current_time()
                deadline = now + self._bucket.delay_until_available(0, now)


class ThrottledStream(WrappedStream):
    """A stream whose traffic passes an upload and/or a download :class:`Throttle`.

    ``send_all`` sends in slices of at most ``quantum`` bytes, acquiring each
    from ``upload`` first. ``receive_some`` first waits for its turn under
    ``download`` (and for earlier reads' debt), then reads at most ``quantum``
    bytes and charges what arrived. Charging after the read, without waiting,
    means a cancelled ``receive_some`` never swallows bytes that already
    arrived; the wait is paid on the next call, and a reader that stops
    reading lets TCP's window slow the sender down.

    Because a ``send_all`` spans several writes, a second concurrent sender
    raises :class:`trio.BusyResourceError`, as with trio's own streams.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        upload: Throttle | None = None,
        download: Throttle | None = None,
        quantum: int = GRANT_QUANTUM,
    ) -> None:
        if isinstance(quantum, bool) or not isinstance(quantum, int) or quantum < 1:
            raise ConfigError(f"quantum must be a positive integer, not {quantum!r}")
        super().__init__(stream)
        self.upload = upload
        self.download = download
        self.quantum = quantum

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        if self.upload is None:
            await self.transport_stream.send_all(data)
            return
        view = memoryview(data).cast("B")
        if not view:
            await self.transport_stream.send_all(view)
            return
        for start in range(0, len(view), self.quantum):
            piece = view[start : start + self.quantum]
            await self.upload.acquire(len(piece))
            await self.transport_stream.send_all(piece)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        size = self.quantum if max_bytes is None else min(max_bytes, self.quantum)
        if self.download is not None:
            await self.download.acquire(0)
        data: bytes | bytearray = await self.transport_stream.receive_some(size)
        if self.download is not None and data:
            self.download.charge(len(data))
        return data

