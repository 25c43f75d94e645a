"""``opendistro seed --dht-port`` and ``get --dht-bootstrap``: a trackerless magnet via the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.test_cli import LOOPBACK, background, free_port, last_json, opendistro, wait_listening


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def test_get_a_trackerless_magnet_through_the_dht(
    make_release: Callable[..., Path], tmp_path: Path
) -> None:
    release = make_release(sizes=(250_000,))
    torrent = tmp_path / "single.torrent"
    created = opendistro("create", str(release), "-o", str(torrent), "--json")
    magnet = last_json(created.stdout)["magnet"]
    assert "tr=" not in magnet and "x.pe=" not in magnet
    seed_port, dht_port = free_port(), free_udp_port()
    with background("seed", str(torrent), "--data", str(release.parent), "--host", LOOPBACK,
                    "--port", str(seed_port), "--dht-port", str(dht_port)):
        wait_listening(seed_port)
        result = opendistro("get", magnet, "-o", str(tmp_path / "m"), "--host", LOOPBACK,
                            "--dht-bootstrap", f"{LOOPBACK}:{dht_port}", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["bytes_from_peers"] >= 250_000
    assert (tmp_path / "m" / release.name).read_bytes() == release.read_bytes()


def test_bad_dht_options_fail_clearly(tmp_path: Path) -> None:
    result = opendistro("get", "magnet:?xt=urn:btih:" + "ab" * 20, "-o", str(tmp_path),
                        "--dht-bootstrap", "nonsense")
    assert result.returncode != 0
    assert "HOST:PORT" in result.stderr
    result = opendistro("get", "magnet:?xt=urn:btih:" + "ab" * 20, "-o", str(tmp_path),
                        "--dht-port", "70000")
    assert result.returncode != 0
    assert "dht-port" in result.stderr
