"""opendistro: ship large releases to many users at once over BitTorrent and HTTP mirrors.

The public API is re-exported here; everything else is an implementation detail.
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "BencodeError",
    "ConfigError",
    "DeltaError",
    "DownloadError",
    "EncryptionError",
    "IntegrityError",
    "LocalProtocolError",
    "MagnetError",
    "MetainfoError",
    "MirrorError",
    "OpenDistroError",
    "ProtocolError",
    "RemoteProtocolError",
    "SignatureError",
    "StorageError",
    "TrackerError",
    "UnsafePathError",
    "__version__",
]
