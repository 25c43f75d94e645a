"""A fluid model of hosts behind access links: how long a transfer takes.

The simulator does not move bytes, it moves *flows*: "``n`` bytes from host A
to host B". Only the access links are modelled (the core is assumed to have
room to spare, as it mostly does for home and office peers), each host having
an upload capacity, a download capacity and a one-way latency to the core.

Rates: a host's downlink is divided among its incoming flows by water-filling
over what their senders can give (a flow from a sender whose current level is
below the fair share keeps that level, and the rest is shared by the flows of
faster senders), and each flow is capped by its part; a host's upload is then
water-filled over its outgoing flows (a flow capped below the fair share
keeps its cap, and what it leaves goes to the others), as TCP flows sharing a
bottleneck do. This is one step of max-min fairness from each end, not the
fixed point: a downlink is re-divided only when a flow into it starts or
ends, so a sender that speeds up later is held to its old part until then.
The parts always add up to the downlink, so no link is ever oversubscribed,
and what the model gets wrong it gets wrong pessimistically.

Re-rating is local and lazy. When a flow starts or ends, its receiver's
downlink parts change, so every host sending to that receiver divides its
upload again; a flow whose rate did not change is not touched. A flow's
bytes are settled (``remaining -= rate * elapsed``) only when its rate
changes, and its completion is one :class:`~opendistro.sim.loop.Timer`:

* rate goes **up** (finish earlier): the old timer is cancelled (the loop
  skips it lazily, like a version check) and an earlier one is scheduled;
* rate goes **down** (finish later): the old, now early, timer is kept; when
  it fires the flow finds bytes still to go and schedules itself again.

Timing of one transfer: the flow holds bandwidth from :meth:`Network.send`
until its last byte has left (``nbytes`` at the flow's rate), then the data
spends ``latency(src) + latency(dst)`` in flight. A lone flow of ``F`` bytes
on an uplink ``U`` is delivered after ``latency + F / U``. Transfers of at
most ``control_bytes`` (128 by default: requests, haves, chokes) skip the
bandwidth model and pay only latency; their bytes are still counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError, LocalProtocolError
from .loop import EventLoop, Timer

__all__ = ["CONTROL_BYTES", "Flow", "FlowState", "Host", "Network"]

CONTROL_BYTES = 128
"""Transfers this small pay latency only (see the module docstring)."""


class FlowState:
    """Where a flow is in its life (plain ints: compared on the hot path)."""

    TRANSMITTING = 0
    IN_FLIGHT = 1
    DELIVERED = 2
    ABORTED = 3
    CANCELLED = 4


class Host:
    """One simulated machine: its access link and its byte counters."""

    __slots__ = (
        "_arriving",
        "_in",
        "_out",
        "_up_share",
        "bytes_received",
        "bytes_sent",
        "download_capacity",
        "id",
        "joined_at",
        "latency",
        "left_at",
        "online",
        "upload_capacity",
    )

    def __init__(
        self, host_id: int, upload: float, download: float, latency: float, now: float = 0.0
    ) -> None:
        self.id = host_id
        self.joined_at = now
        self.left_at: float | None = None
        self.upload_capacity = upload
        self.download_capacity = download
        self.latency = latency
        self.online = True
        self.bytes_sent = 0
        self.bytes_received = 0
        # Dicts rather than sets: iteration in insertion order keeps runs deterministic.
        self._out: dict[Flow, None] = {}
        self._in: dict[Flow, None] = {}
        self._arriving: dict[Flow, None] = {}
        self._up_share = upload

    @property
    def uploading(self) -> int:
        """How many flows are leaving this host right now."""
        return len(self._out)

    @property
    def downloading(self) -> int:
        """How many flows are arriving at this host's downlink right now."""
        return len(self._in)

    def __repr__(self) -> str:
        return (
            f"<Host {self.id} up={self.upload_capacity:.0f}B/s "
            f"down={self.download_capacity:.0f}B/s {'online' if self.online else 'offline'}>"
        )


class Flow:
    """One transfer of ``size`` bytes from ``src`` to ``dst``."""

    __slots__ = (
        "cap",
        "dst",
        "on_abort",
        "on_delivered",
        "rate",
        "remaining",
        "size",
        "src",
        "stamp",
        "state",
        "timer",
    )

    def __init__(
        self,
        src: Host,
        dst: Host,
        size: int,
        on_delivered: Callable[[], object] | None,
        on_abort: Callable[[], object] | None,
        now: float,
    ) -> None:
        self.src = src
        self.dst = dst
        self.size = size
        self.remaining = float(size)  # as of ``stamp``
        self.rate = 0.0
        self.cap = dst.download_capacity  # the receiver's allowance: Network._share_downlink
        self.stamp = now
        self.state = FlowState.TRANSMITTING
        self.timer: Timer | None = None
        self.on_delivered = on_delivered
        self.on_abort = on_abort

    @property
    def done(self) -> bool:
        """True once the flow was delivered, aborted or cancelled."""
        return self.state >= FlowState.DELIVERED

    def __repr__(self) -> str:
        return (
            f"<Flow {self.src.id}->{self.dst.id} {self.size}B state={self.state} "
            f"rate={self.rate:.0f}B/s>"
        )


def _sender_level(flow: Flow) -> float:
    return flow.src._up_share


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a finite, non-negative number, got {value}")
    return value


class Network:
    """Hosts, the flows between them, and the events that finish those flows."""

    def __init__(self, loop: EventLoop, *, control_bytes: int = CONTROL_BYTES) -> None:
        if control_bytes < 0:
            raise ConfigError(f"control_bytes must be non-negative, got {control_bytes}")
        self.loop = loop
        self.control_bytes = control_bytes
        self.hosts: list[Host] = []
        self.flows_started = 0
        self.flows_delivered = 0
        self.flows_aborted = 0
        self.bytes_sent = 0
        """Bytes whose transmission finished (control messages: when sent)."""
        self.bytes_delivered = 0
        self.bytes_lost = 0
        """Bytes fully sent but whose destination left before they arrived."""
        self.messages_sent = 0

    # -- hosts -------------------------------------------------------------

    def add_host(self, upload: float, download: float, latency: float = 0.02) -> Host:
        """A new online host; capacities in bytes/s, latency in seconds one way."""
        host = Host(
            len(self.hosts),
            _check_rate("upload", upload),
            _check_rate("download", download),
            _check_rate("latency", latency),
            self.loop.now,
        )
        self.hosts.append(host)
        return host

    def remove_host(self, host: Host) -> None:
        """Take ``host`` offline, aborting every flow that involves it.

        Aborted flows' ``on_abort`` callbacks fire before this returns, after
        the surviving flows were re-rated (so a callback may start new flows).
        Data the host finished sending before it left is still delivered;
        data on its way *to* it is lost. Latency-only :meth:`message` calls
        to it are dropped when they arrive.
        """
        if not host.online:
            return
        host.online = False
        host.left_at = self.loop.now
        aborted: list[Flow] = []
        touched_up: dict[Host, None] = {}
        touched_down: dict[Host, None] = {}
        now = self.loop.now
        for flow in host._out:
            del flow.dst._in[flow]
            touched_down[flow.dst] = None
            aborted.append(flow)
        for flow in host._in:
            del flow.src._out[flow]
            touched_up[flow.src] = None
            aborted.append(flow)
        for flow in host._arriving:
            self.bytes_lost += flow.size
            aborted.append(flow)
        host._out.clear()
        host._in.clear()
        host._arriving.clear()
        host._up_share = host.upload_capacity
        for flow in aborted:
            self._settle(flow, now)
            flow.rate = 0.0
            flow.state = FlowState.ABORTED
            if flow.timer is not None:
                flow.timer.cancel()
                flow.timer = None
        # New downlink shares first, then rates: a rate reads the shares at both ends.
        for other in touched_down:
            self._share_downlink(other)
        for other in touched_up:
            self._rerate_up(other, now)
        for other in touched_down:
            self._rerate_down(other, now)
        self.flows_aborted += len(aborted)
        for flow in aborted:
            callback = flow.on_abort
            flow.on_abort = flow.on_delivered = None
            if callback is not None:
                callback()

    def upload_utilisation(self, hosts: Iterable[Host] | None = None) -> float:
        """Share of the upload capacity ``hosts`` (default: all) had while online that
        they used: bytes sent / (capacity x time online). A swarm far above its
        fluid bound with low utilisation is leaving uplinks idle (a policy
        problem, not a bandwidth one)."""
        now = self.loop.now
        sent = 0
        capacity = 0.0
        for host in self.hosts if hosts is None else hosts:
            end = now if host.left_at is None else host.left_at
            sent += host.bytes_sent
            capacity += host.upload_capacity * (end - host.joined_at)
        return sent / capacity if capacity > 0 else 0.0

    # -- transfers ---------------------------------------------------------

    def send(
        self,
        src: Host,
        dst: Host,
        nbytes: int,
        on_delivered: Callable[[], object],
        on_abort: Callable[[], object] | None = None,
    ) -> Flow:
        """Start moving ``nbytes`` from ``src`` to ``dst``; call back when they arrive.

        Sending to a host that is offline aborts the flow at once: its
        ``on_abort`` is scheduled for ``now`` (not called from inside this
        call, so the caller never re-enters itself). Sending *from* an
        offline host is a bug in the caller.
        """
        if not src.online:
            raise LocalProtocolError(f"host {src.id} is offline and cannot send")
        if nbytes < 0:
            raise LocalProtocolError(f"cannot send a negative number of bytes ({nbytes})")
        if src is dst:
            raise LocalProtocolError(f"host {src.id} cannot send to itself")
        loop = self.loop
        now = loop.now
        flow = Flow(src, dst, nbytes, on_delivered, on_abort, now)
        self.flows_started += 1
        if not dst.online:
            flow.state = FlowState.ABORTED
            self.flows_aborted += 1
            flow.on_delivered = None
            if on_abort is not None:
                flow.on_abort = None
                loop.call_at(now, on_abort)
            return flow
        if nbytes <= self.control_bytes:
            flow.remaining = 0.0
            src.bytes_sent += nbytes
            self.bytes_sent += nbytes
            self._launch(flow, now)
            return flow
        out = src._out
        inbound = dst._in
        out[flow] = None
        inbound[flow] = None
        self._share_downlink(dst)
        # The new flow is in both sets, so this re-divides the upload of every
        # sender to ``dst``, ``src`` included.
        self._rerate_down(dst, now)
        return flow

    def message(
        self, src: Host, dst: Host, on_delivered: Callable[..., object], *args: Any
    ) -> None:
        """A latency-only control message: ``on_delivered(*args)`` runs on arrival.

        Silently dropped if ``dst`` is offline by then. The arguments travel
        with the event, so the caller need not build a closure per message.
        """
        if not src.online:
            raise LocalProtocolError(f"host {src.id} is offline and cannot send")
        self.messages_sent += 1
        loop = self.loop
        loop._post(
            loop.now + src.latency + dst.latency, self._message_arrives, (dst, on_delivered, args)
        )

    def multicast(
        self, src: Host, dsts: Iterable[Host], on_delivered: Callable[[Host], object]
    ) -> int:
        """A latency-only message from ``src`` to each of ``dsts``; how many were sent.

        Same timing as one :meth:`message` per destination, but one event per
        distinct destination latency rather than per destination: a HAVE
        announced to 40 neighbours of a handful of link classes costs a
        handful of heap operations. ``on_delivered(dst)`` runs for each
        destination still online on arrival, in the order ``dsts`` gave them.
        """
        if not src.online:
            raise LocalProtocolError(f"host {src.id} is offline and cannot send")
        groups: dict[float, list[Host]] = {}
        for dst in dsts:
            group = groups.get(dst.latency)
            if group is None:
                groups[dst.latency] = [dst]
            else:
                group.append(dst)
        loop = self.loop
        departure = loop.now + src.latency
        sent = 0
        for latency, members in groups.items():
            sent += len(members)
            loop._post(departure + latency, self._multicast_arrives, (members, on_delivered))
        self.messages_sent += sent
        return sent

    def cancel(self, flow: Flow) -> None:
        """Stop a flow quietly (neither callback fires); no-op once it is done."""
        state = flow.state
        if state >= FlowState.DELIVERED:
            return
        now = self.loop.now
        if flow.timer is not None:
            flow.timer.cancel()
            flow.timer = None
        if state == FlowState.TRANSMITTING:
            self._settle(flow, now)
            self._detach(flow, now)
        else:
            del flow.dst._arriving[flow]
        flow.state = FlowState.CANCELLED
        flow.on_delivered = flow.on_abort = None

    def transferred(self, flow: Flow) -> float:
        """Bytes of ``flow`` that have left its source so far (fractional: a fluid)."""
        state = flow.state
        if state == FlowState.IN_FLIGHT or state == FlowState.DELIVERED:
            return float(flow.size)
        if state != FlowState.TRANSMITTING:  # aborted or cancelled: settled when it stopped
            return flow.size - flow.remaining
        elapsed = self.loop.now - flow.stamp
        return min(float(flow.size), flow.size - flow.remaining + flow.rate * elapsed)

    # -- internals: the hot path ----------------------------------------------

    @staticmethod
    def _settle(flow: Flow, now: float) -> None:
        rate = flow.rate
        if rate > 0.0 and flow.state == FlowState.TRANSMITTING:
            flow.remaining -= rate * (now - flow.stamp)
        flow.stamp = now

    @staticmethod
    def _share_downlink(host: Host) -> None:
        """Divide ``host``'s downlink among its incoming flows by what their senders can give.

        Water-filling again, from the receiving end: a flow whose sender's
        current level is below the fair share is capped at that level, and the
        downlink it leaves goes to the flows of faster senders (as TCP flows
        into one bottleneck share it). Downlink that no sender can use right
        now is spread over all flows as headroom. The caps always add up to
        the capacity, so however the senders' levels move before the next
        re-share, the downlink is never oversubscribed.
        """
        inbound = host._in
        if not inbound:
            return
        capacity = host.download_capacity
        count = len(inbound)
        flows = sorted(inbound, key=_sender_level)
        left = capacity
        for position, flow in enumerate(flows):
            fair = left / (count - position)
            demand = flow.src._up_share
            if demand >= fair:
                for rest in flows[position:]:
                    rest.cap = fair
                return
            flow.cap = demand
            left -= demand
        headroom = left / count
        for flow in flows:
            flow.cap += headroom

    # _rerate_up is the innermost loop of the whole simulator: the re-rating
    # (settle, set rate, maybe re-arm the timer) is written out rather than
    # shared through a method call, which costs ~30% here.

    def _rerate_up(self, host: Host, now: float) -> None:
        """Divide ``host``'s upload among its flows again (after a share changed).

        Water-filling: each flow is capped by its receiver's equal share of
        its downlink, and what a capped flow cannot take goes to the others.
        """
        out = host._out
        if not out:
            host._up_share = host.upload_capacity
            return
        capacity = host.upload_capacity
        count = len(out)
        level = capacity / count
        for flow in out:
            if flow.cap < level:
                # A receiver takes less than an equal share (usually none does, and no
                # list of caps is built): water-fill.
                left = capacity
                level = math.inf
                for position, cap in enumerate(sorted([flow.cap for flow in out])):
                    fair = left / (count - position)
                    if cap >= fair:
                        level = fair
                        break
                    left -= cap
                break
        host._up_share = level
        schedule = self.loop._schedule
        fired = self._timer_fired
        for flow in out:
            down = flow.cap
            rate = level if level < down else down
            old = flow.rate
            if rate != old:
                if old > 0.0:
                    flow.remaining -= old * (now - flow.stamp)
                flow.stamp = now
                flow.rate = rate
                if rate > 0.0:
                    finish = now + flow.remaining / rate
                    timer = flow.timer
                    if timer is None:
                        flow.timer = schedule(finish if finish > now else now, fired, (flow,))
                    elif finish < timer.when:
                        timer.cancel()
                        flow.timer = schedule(finish if finish > now else now, fired, (flow,))
                    # else it slowed down: the early timer will find work left and re-arm.

    def _rerate_down(self, host: Host, now: float, also: Host | None = None) -> None:
        """``host``'s downlink share changed: every host sending to it divides its upload anew."""
        senders = {flow.src: None for flow in host._in}
        if also is not None:
            senders[also] = None
        for sender in senders:
            self._rerate_up(sender, now)

    def _timer_fired(self, flow: Flow) -> None:
        flow.timer = None
        now = self.loop.now
        rate = flow.rate
        if rate > 0.0:
            remaining = flow.remaining - rate * (now - flow.stamp)
            flow.remaining = remaining
            flow.stamp = now
            # Done, or so nearly done that the clock cannot represent the rest.
            if remaining > 1e-6 and now + remaining / rate > now:
                flow.timer = self.loop._schedule(now + remaining / rate, self._timer_fired, (flow,))
                return
        else:
            return  # stalled (a zero-capacity link); a later re-rate will re-arm it
        flow.remaining = 0.0
        self._detach(flow, now)
        size = flow.size
        flow.src.bytes_sent += size
        self.bytes_sent += size
        self._launch(flow, now)

    def _detach(self, flow: Flow, now: float) -> None:
        """Take a transmitting flow off both links and re-rate what is left there."""
        src, dst = flow.src, flow.dst
        out = src._out
        inbound = dst._in
        del out[flow]
        del inbound[flow]
        self._share_downlink(dst)
        flow.rate = 0.0
        self._rerate_down(dst, now, also=src)

    def _launch(self, flow: Flow, now: float) -> None:
        """The last byte has left ``src``: it arrives one path latency later."""
        flow.state = FlowState.IN_FLIGHT
        dst = flow.dst
        dst._arriving[flow] = None
        flow.timer = self.loop._schedule(
            now + flow.src.latency + dst.latency, self._arrive, (flow,)
        )

    def _arrive(self, flow: Flow) -> None:
        flow.timer = None
        dst = flow.dst
        del dst._arriving[flow]
        flow.state = FlowState.DELIVERED
        size = flow.size
        dst.bytes_received += size
        self.bytes_delivered += size
        self.flows_delivered += 1
        callback = flow.on_delivered
        flow.on_delivered = flow.on_abort = None
        if callback is not None:
            callback()

    @staticmethod
    def _multicast_arrives(members: list[Host], on_delivered: Callable[[Host], object]) -> None:
        for dst in members:
            if dst.online:
                on_delivered(dst)

    @staticmethod
    def _message_arrives(
        dst: Host, on_delivered: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        if dst.online:
            on_delivered(*args)
