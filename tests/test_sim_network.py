"""The fluid network model: transfer times, sharing, re-rating, aborts, conservation."""

from __future__ import annotations

import random
import time

import pytest

from opendistro.errors import ConfigError, LocalProtocolError
from opendistro.sim.loop import EventLoop
from opendistro.sim.network import FlowState, Host, Network

MB = 1_000_000.0
FAST = 1e12  # a downlink that never limits


def _net() -> tuple[EventLoop, Network]:
    loop = EventLoop()
    return loop, Network(loop)


def _recorder(loop: EventLoop, log: dict[str, float], key: str):  # type: ignore[no-untyped-def]
    return lambda: log.__setitem__(key, loop.now)


def test_a_lone_flow_takes_latency_plus_size_over_uplink() -> None:
    loop, net = _net()
    src = net.add_host(upload=1 * MB, download=FAST, latency=0.03)
    dst = net.add_host(upload=1 * MB, download=FAST, latency=0.02)
    done: dict[str, float] = {}
    net.send(src, dst, 5_000_000, _recorder(loop, done, "flow"))
    loop.run()
    assert done["flow"] == pytest.approx(0.05 + 5.0)
    assert src.bytes_sent == dst.bytes_received == 5_000_000


def test_two_flows_from_one_host_share_its_uplink_equally() -> None:
    loop, net = _net()
    src = net.add_host(upload=2 * MB, download=FAST, latency=0.0)
    a = net.add_host(upload=MB, download=FAST, latency=0.0)
    b = net.add_host(upload=MB, download=FAST, latency=0.0)
    done: dict[str, float] = {}
    fa = net.send(src, a, 1_000_000, _recorder(loop, done, "a"))
    fb = net.send(src, b, 1_000_000, _recorder(loop, done, "b"))
    assert fa.rate == fb.rate == pytest.approx(1 * MB)
    assert src.uploading == 2
    loop.run()
    assert done == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_a_slow_downlink_limits_the_flow() -> None:
    loop, net = _net()
    src = net.add_host(upload=10 * MB, download=FAST, latency=0.01)
    slow = net.add_host(upload=MB, download=0.5 * MB, latency=0.01)
    done: dict[str, float] = {}
    flow = net.send(src, slow, 1_000_000, _recorder(loop, done, "flow"))
    assert flow.rate == pytest.approx(0.5 * MB)
    loop.run()
    assert done["flow"] == pytest.approx(0.02 + 2.0)


def test_flows_into_one_host_share_its_downlink() -> None:
    loop, net = _net()
    dst = net.add_host(upload=MB, download=2 * MB, latency=0.0)
    sources = [net.add_host(upload=10 * MB, download=FAST, latency=0.0) for _ in range(4)]
    done: dict[str, float] = {}
    for i, src in enumerate(sources):
        net.send(src, dst, 500_000, _recorder(loop, done, str(i)))
    loop.run()
    assert sorted(done.values()) == pytest.approx([1.0] * 4)


def test_a_flow_speeds_up_when_its_neighbour_ends() -> None:
    loop, net = _net()
    src = net.add_host(upload=2 * MB, download=FAST, latency=0.0)
    a = net.add_host(upload=MB, download=FAST, latency=0.0)
    b = net.add_host(upload=MB, download=FAST, latency=0.0)
    done: dict[str, float] = {}
    net.send(src, a, 1_000_000, _recorder(loop, done, "short"))
    long = net.send(src, b, 3_000_000, _recorder(loop, done, "long"))
    loop.run(until=1.5)
    # Both ran at 1 MB/s until t=1; then the long one alone at 2 MB/s.
    assert done["short"] == pytest.approx(1.0)
    assert long.rate == pytest.approx(2 * MB)
    assert net.transferred(long) == pytest.approx(1_000_000 + 0.5 * 2_000_000)
    loop.run()
    assert done["long"] == pytest.approx(1.0 + 2_000_000 / (2 * MB))


def test_a_flow_slows_down_when_a_new_one_starts_and_still_finishes_right() -> None:
    loop, net = _net()
    src = net.add_host(upload=MB, download=FAST, latency=0.0)
    a = net.add_host(upload=MB, download=FAST, latency=0.0)
    b = net.add_host(upload=MB, download=FAST, latency=0.0)
    done: dict[str, float] = {}
    net.send(src, a, 2_000_000, _recorder(loop, done, "first"))
    loop.call_at(1.0, lambda: net.send(src, b, 500_000, _recorder(loop, done, "second")))
    loop.run()
    # 1 MB alone, then two at 0.5 MB/s: second ends at 2.0, first has 0.5 MB left at 1 MB/s.
    assert done["second"] == pytest.approx(2.0)
    assert done["first"] == pytest.approx(2.5)


def test_rates_re_balance_across_both_ends() -> None:
    # src -> dst is limited by dst's downlink, shared with a second incoming flow.
    loop, net = _net()
    src = net.add_host(upload=4 * MB, download=FAST, latency=0.0)
    other = net.add_host(upload=4 * MB, download=FAST, latency=0.0)
    dst = net.add_host(upload=MB, download=2 * MB, latency=0.0)
    main = net.send(src, dst, 10_000_000, lambda: None)
    assert main.rate == pytest.approx(2 * MB)
    side = net.send(other, dst, 1_000_000, lambda: None)
    assert main.rate == pytest.approx(1 * MB) == side.rate
    loop.run(until=1.5)
    assert side.state == FlowState.DELIVERED
    assert main.rate == pytest.approx(2 * MB)


def test_removing_a_host_aborts_its_flows_and_frees_the_others() -> None:
    loop, net = _net()
    src = net.add_host(upload=2 * MB, download=FAST, latency=0.0)
    leaver = net.add_host(upload=MB, download=FAST, latency=0.0)
    stayer = net.add_host(upload=MB, download=FAST, latency=0.0)
    events: list[str] = []
    net.send(
        src,
        leaver,
        4_000_000,
        lambda: events.append("leaver got it"),
        lambda: events.append("aborted"),
    )
    net.send(
        leaver,
        stayer,
        4_000_000,
        lambda: events.append("stayer got it"),
        lambda: events.append("aborted upload"),
    )
    kept = net.send(src, stayer, 3_000_000, lambda: events.append("kept"))
    loop.call_at(1.0, net.remove_host, leaver)
    loop.run()
    assert events == ["aborted upload", "aborted", "kept"]  # its uploads first, then downloads
    assert not leaver.online
    # kept: 1 MB in the first second, then the whole 2 MB/s uplink for the other 2 MB.
    assert kept.state == FlowState.DELIVERED
    assert loop.now == pytest.approx(2.0)
    assert leaver.bytes_received == 0
    assert net.flows_aborted == 2


def test_an_abort_callback_may_start_new_flows() -> None:
    loop, net = _net()
    src = net.add_host(upload=MB, download=FAST, latency=0.0)
    leaver = net.add_host(upload=MB, download=FAST, latency=0.0)
    other = net.add_host(upload=MB, download=FAST, latency=0.0)
    done: dict[str, float] = {}

    def retry() -> None:
        net.send(src, other, 1_000_000, _recorder(loop, done, "retry"))

    net.send(src, leaver, 5_000_000, lambda: None, retry)
    loop.call_at(1.0, net.remove_host, leaver)
    loop.run()
    assert done["retry"] == pytest.approx(2.0)


def test_data_in_flight_to_a_leaving_host_is_lost_but_from_it_is_delivered() -> None:
    loop, net = _net()
    a = net.add_host(upload=MB, download=FAST, latency=1.0)
    b = net.add_host(upload=MB, download=FAST, latency=1.0)
    c = net.add_host(upload=MB, download=FAST, latency=1.0)
    events: list[str] = []
    net.send(a, b, 1_000_000, lambda: events.append("to b"), lambda: events.append("to b lost"))
    net.send(b, c, 1_000_000, lambda: events.append("from b"), lambda: events.append("from b lost"))
    loop.call_at(1.5, net.remove_host, b)  # both finished transmitting at t=1
    loop.run()
    assert events == ["to b lost", "from b"]
    assert net.bytes_lost == 1_000_000
    assert c.bytes_received == 1_000_000


def test_cancel_is_quiet_and_frees_bandwidth() -> None:
    loop, net = _net()
    src = net.add_host(upload=2 * MB, download=FAST, latency=0.0)
    a = net.add_host(upload=MB, download=FAST, latency=0.0)
    b = net.add_host(upload=MB, download=FAST, latency=0.0)
    events: list[str] = []
    doomed = net.send(
        src, a, 10_000_000, lambda: events.append("doomed"), lambda: events.append("x")
    )
    survivor = net.send(src, b, 2_000_000, lambda: events.append("survivor"))
    loop.call_at(0.5, net.cancel, doomed)
    loop.run()
    assert events == ["survivor"]
    assert doomed.state == FlowState.CANCELLED
    assert net.transferred(doomed) == pytest.approx(500_000)
    # 0.5 MB at 1 MB/s, then 1.5 MB at 2 MB/s.
    assert loop.now == pytest.approx(0.5 + 0.75)
    assert survivor.done
    net.cancel(doomed)  # again: no-op


def test_small_messages_pay_latency_only() -> None:
    loop, net = _net()
    src = net.add_host(upload=100.0, download=FAST, latency=0.05)
    dst = net.add_host(upload=100.0, download=FAST, latency=0.05)
    done: dict[str, float] = {}
    net.send(src, dst, 17, _recorder(loop, done, "request"))
    net.message(src, dst, _recorder(loop, done, "have"))
    assert src.uploading == 0
    loop.run()
    assert done == {"request": pytest.approx(0.1), "have": pytest.approx(0.1)}
    assert dst.bytes_received == 17


def test_messages_to_an_offline_host_are_dropped() -> None:
    loop, net = _net()
    src = net.add_host(upload=MB, download=MB, latency=0.05)
    dst = net.add_host(upload=MB, download=MB, latency=0.05)
    seen: list[str] = []
    net.message(src, dst, lambda: seen.append("late"))
    net.remove_host(dst)
    net.message(src, dst, lambda: seen.append("never"))
    loop.run()
    assert seen == []


def test_sending_to_an_offline_host_aborts_soon_and_from_one_is_a_bug() -> None:
    loop, net = _net()
    src = net.add_host(upload=MB, download=MB)
    gone = net.add_host(upload=MB, download=MB)
    net.remove_host(gone)
    net.remove_host(gone)  # twice is harmless
    seen: list[str] = []
    flow = net.send(src, gone, 1_000_000, lambda: seen.append("no"), lambda: seen.append("abort"))
    assert seen == []  # not re-entrant
    loop.run()
    assert seen == ["abort"]
    assert flow.state == FlowState.ABORTED
    with pytest.raises(LocalProtocolError):
        net.send(gone, src, 1_000, lambda: None)
    other = net.add_host(upload=MB, download=MB)
    with pytest.raises(LocalProtocolError):
        net.send(src, other, -1, lambda: None)
    with pytest.raises(LocalProtocolError):
        net.send(src, src, 1_000, lambda: None)


def test_a_zero_capacity_uplink_stalls_without_error() -> None:
    loop, net = _net()
    rider = net.add_host(upload=0.0, download=MB, latency=0.0)
    dst = net.add_host(upload=MB, download=MB, latency=0.0)
    flow = net.send(rider, dst, 1_000_000, lambda: None)
    loop.run(until=100.0)
    assert flow.state == FlowState.TRANSMITTING
    assert net.transferred(flow) == 0.0


@pytest.mark.parametrize(
    ("upload", "download", "latency"),
    [(-1.0, 1.0, 0.0), (1.0, float("inf"), 0.0), (1.0, 1.0, float("nan")), (1.0, 1.0, -0.1)],
)
def test_bad_host_parameters_are_refused(upload: float, download: float, latency: float) -> None:
    _, net = _net()
    with pytest.raises(ConfigError):
        net.add_host(upload, download, latency)


def _random_swarm(
    seed: int, hosts: int, flows: int, concurrency: int
) -> tuple[EventLoop, Network, list[Host], int, int]:
    rng = random.Random(seed)
    loop, net = _net()
    members = [
        net.add_host(
            upload=rng.choice([0.5, 2.5, 12.5]) * MB,
            download=rng.choice([5.0, 12.5, 60.0]) * MB,
            latency=rng.uniform(0.005, 0.08),
        )
        for _ in range(hosts)
    ]
    state = {"started": 0, "bytes": 0, "delivered": 0}

    def start(src: Host) -> None:
        if state["started"] >= flows:
            return
        state["started"] += 1
        dst = members[rng.randrange(hosts)]
        if dst is src:
            dst = members[(src.id + 1) % hosts]
        size = rng.choice([50, 16_384, 262_144, 1_048_576])
        state["bytes"] += size

        def delivered() -> None:
            state["delivered"] += 1
            start(src)

        net.send(src, dst, size, delivered)

    for member in members:
        for _ in range(concurrency):
            start(member)
    loop.run()
    return loop, net, members, state["bytes"], state["delivered"]


def test_bytes_are_conserved_across_a_busy_network() -> None:
    loop, net, members, total, delivered = _random_swarm(7, hosts=60, flows=5_000, concurrency=5)
    assert delivered == 5_000 == net.flows_delivered
    assert sum(h.bytes_sent for h in members) == total
    assert sum(h.bytes_received for h in members) == total
    assert net.bytes_sent == net.bytes_delivered == total
    assert all(h.uploading == 0 and h.downloading == 0 for h in members)
    assert loop.pending == 0


def test_a_busy_network_is_deterministic() -> None:
    first = _random_swarm(9, hosts=40, flows=2_000, concurrency=4)
    second = _random_swarm(9, hosts=40, flows=2_000, concurrency=4)
    assert first[0].now == second[0].now
    assert first[0].events_processed == second[0].events_processed
    assert [h.bytes_received for h in first[2]] == [h.bytes_received for h in second[2]]


def test_performance_smoke_100k_flows_among_1000_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    loop, net, _members, _total, delivered = _random_swarm(
        1, hosts=1_000, flows=100_000, concurrency=8
    )
    wall = time.perf_counter() - started
    assert delivered == 100_000
    with capsys.disabled():
        print(
            f"\nsim network: {net.flows_delivered} flows, {loop.events_processed} events in "
            f"{wall:.2f}s wall ({loop.events_processed / wall:,.0f} events/s, "
            f"{net.flows_delivered / wall:,.0f} flows/s), {loop.now:.1f}s virtual"
        )


def test_multicast_times_each_destination_like_a_message_with_few_events() -> None:
    loop, net = _net()
    src = net.add_host(upload=MB, download=MB, latency=0.01)
    near = [net.add_host(upload=MB, download=MB, latency=0.02) for _ in range(30)]
    far = [net.add_host(upload=MB, download=MB, latency=0.09) for _ in range(10)]
    net.remove_host(far[0])
    arrivals: dict[int, float] = {}
    sent = net.multicast(src, [*far, *near], lambda dst: arrivals.__setitem__(dst.id, loop.now))
    assert sent == 40
    assert loop.pending == 2  # one event per distinct latency
    loop.run()
    assert len(arrivals) == 39  # the offline host hears nothing
    assert all(arrivals[h.id] == pytest.approx(0.03) for h in near)
    assert all(arrivals[h.id] == pytest.approx(0.10) for h in far[1:])
    assert list(arrivals) == [h.id for h in near] + [h.id for h in far[1:]]
    net.remove_host(src)
    with pytest.raises(LocalProtocolError):
        net.multicast(src, near, lambda dst: None)


def test_upload_utilisation_counts_capacity_only_while_online() -> None:
    loop, net = _net()
    busy = net.add_host(upload=MB, download=FAST, latency=0.0)
    idle = net.add_host(upload=MB, download=FAST, latency=0.0)
    net.send(busy, idle, 2_000_000, lambda: None)
    loop.run(until=4.0)
    assert net.upload_utilisation([busy]) == pytest.approx(0.5)  # 2 s of 4 s busy
    assert net.upload_utilisation() == pytest.approx(0.25)
    net.remove_host(idle)
    loop.run(until=8.0)
    assert idle.left_at == 4.0
    assert net.upload_utilisation() == pytest.approx(2_000_000 / (8 * MB + 4 * MB))


def _brute_force_delivery_times(
    hosts: list[tuple[float, float, float]], flows: list[tuple[float, int, int, int]]
) -> list[float]:
    """The uplink rule, recomputed from scratch for every flow at every event.

    Downlinks here never limit (the receiving side's shares depend on the
    senders' levels when they were last divided, which only the lazy model
    itself can replay); what this checks is the lazy rescheduling of timers.
    """
    remaining = [float(size) for (_, _, _, size) in flows]
    finished: list[float | None] = [None] * len(flows)
    now = 0.0
    while any(f is None for f in finished):
        active = [
            i for i, (start, _, _, _) in enumerate(flows) if start <= now and finished[i] is None
        ]
        # Each sender pours its upload into its flows level by level (water-filling).
        cap = {i: float("inf") for i in active}
        rates: dict[int, float] = {}
        for host in range(len(hosts)):
            mine = sorted((i for i in active if flows[i][1] == host), key=lambda i: cap[i])
            budget = hosts[host][0]
            for position, i in enumerate(mine):
                rates[i] = min(cap[i], budget / (len(mine) - position))
                budget -= rates[i]
        upcoming = [start for (start, _, _, _) in flows if start > now]
        horizon = min(upcoming, default=float("inf"))
        for i in active:
            horizon = min(horizon, now + remaining[i] / rates[i])
        for i in active:
            remaining[i] -= rates[i] * (horizon - now)
            if remaining[i] <= 1e-6 * flows[i][3]:
                finished[i] = horizon
        now = horizon
    return [
        done + hosts[src][2] + hosts[dst][2]
        for done, (_, src, dst, _) in zip(finished, flows, strict=True)
        if done is not None
    ]


@pytest.mark.parametrize("seed", range(5))
def test_lazy_rescheduling_matches_a_brute_force_model(seed: int) -> None:
    rng = random.Random(seed)
    specs = [
        (rng.choice([1.0, 2.0, 5.0]) * MB, FAST, rng.uniform(0, 0.05))
        for _ in range(8)
    ]
    flows = []
    for _ in range(40):
        src, dst = rng.sample(range(len(specs)), 2)
        flows.append((rng.uniform(0, 5), src, dst, rng.randrange(200_000, 3_000_000)))
    loop, net = _net()
    hosts = [net.add_host(*spec) for spec in specs]
    delivered: dict[int, float] = {}

    def launch(i: int, src: int, dst: int, size: int) -> None:
        net.send(hosts[src], hosts[dst], size, lambda: delivered.__setitem__(i, loop.now))

    for i, (start, src, dst, size) in enumerate(flows):
        loop.call_at(start, launch, i, src, dst, size)
    loop.run()
    expected = _brute_force_delivery_times(specs, flows)
    assert [delivered[i] for i in range(len(flows))] == pytest.approx(expected, rel=1e-6)


def test_upload_a_slow_downlink_cannot_take_goes_to_the_other_flows() -> None:
    loop, net = _net()
    sender = net.add_host(upload=10 * MB, download=FAST, latency=0.0)
    narrow = net.add_host(upload=MB, download=2 * MB, latency=0.0)
    wide = net.add_host(upload=MB, download=FAST, latency=0.0)
    done: dict[str, float] = {}
    net.send(sender, narrow, 2 * MB, lambda: done.__setitem__("narrow", loop.now))
    net.send(sender, wide, 8 * MB, lambda: done.__setitem__("wide", loop.now))
    loop.run()
    # narrow takes 2 MB/s; the other 8 MB/s of the uplink go to wide, not 5 MB/s each.
    assert done == pytest.approx({"narrow": 1.0, "wide": 1.0})


def test_a_slow_sender_leaves_the_downlink_it_cannot_use_to_a_fast_one() -> None:
    _loop, net = _net()
    dst = net.add_host(upload=MB, download=4 * MB, latency=0.0)
    slow = net.add_host(upload=0.5 * MB, download=FAST, latency=0.0)
    fast = net.add_host(upload=10 * MB, download=FAST, latency=0.0)
    trickle = net.send(slow, dst, 10_000_000, lambda: None)
    bulk = net.send(fast, dst, 10_000_000, lambda: None)
    # TCP-like: the slow flow keeps its 0.5 MB/s, the fast one takes the other 3.5.
    assert trickle.rate == pytest.approx(0.5 * MB)
    assert bulk.rate == pytest.approx(3.5 * MB)


@pytest.mark.parametrize("seed", range(5))
def test_no_link_is_ever_oversubscribed(seed: int) -> None:
    rng = random.Random(seed)
    loop, net = _net()
    hosts = [
        net.add_host(rng.choice([0.5, 2.0, 8.0]) * MB, rng.choice([1.0, 3.0, 8.0]) * MB, 0.01)
        for _ in range(10)
    ]
    worst = {"up": 0.0, "down": 0.0}

    def check() -> None:
        for host in hosts:
            up = sum(flow.rate for flow in host._out)
            down = sum(flow.rate for flow in host._in)
            worst["up"] = max(worst["up"], up / host.upload_capacity)
            worst["down"] = max(worst["down"], down / host.download_capacity)

    def launch(src: int, dst: int, size: int) -> None:
        net.send(hosts[src], hosts[dst], size, check)
        check()

    for _ in range(80):
        src, dst = rng.sample(range(len(hosts)), 2)
        loop.call_at(rng.uniform(0, 5), launch, src, dst, rng.randrange(100_000, 2_000_000))
    loop.run()
    assert net.flows_delivered == 80
    assert worst["up"] <= 1 + 1e-9
    assert worst["down"] <= 1 + 1e-9
    assert worst["down"] > 0.5  # the check saw real contention
