"""opendistro: ship large releases to many users at once over BitTorrent and HTTP mirrors.

The public API is re-exported here; everything else is an implementation detail::

    async with opendistro.Client(host="0.0.0.0") as client:
        torrent = await client.add_torrent(opendistro.Metainfo.from_file("r.torrent"), "dl")
        async for status in torrent.progress():
            print(status.fraction)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .create import create_torrent
from .errors import (
    BencodeError,
    ConfigError,
    DeltaError,
    DownloadError,
    EncryptionError,
    IntegrityError,
    LocalProtocolError,
    MagnetError,
    MetainfoError,
    MirrorError,
    OpenDistroError,
    ProtocolError,
    RemoteProtocolError,
    SignatureError,
    StorageError,
    TrackerError,
    UnsafePathError,
)
from .io.client import Client
from .io.torrent import Torrent, TorrentState, TorrentStatus
from .magnet import MagnetLink
from .metainfo import FileEntry, Metainfo
from .tracker.server import TrackerServer
from .wire.mse import EncryptionPolicy

__all__ = [
    "BencodeError",
    "Client",
    "ConfigError",
    "DeltaError",
    "DownloadError",
    "EncryptionError",
    "EncryptionPolicy",
    "FileEntry",
    "IntegrityError",
    "LocalProtocolError",
    "MagnetError",
    "MagnetLink",
    "Metainfo",
    "MetainfoError",
    "MirrorError",
    "OpenDistroError",
    "ProtocolError",
    "RemoteProtocolError",
    "SignatureError",
    "StorageError",
    "Torrent",
    "TorrentState",
    "TorrentStatus",
    "TrackerError",
    "TrackerServer",
    "UnsafePathError",
    "__version__",
    "create_torrent",
]
