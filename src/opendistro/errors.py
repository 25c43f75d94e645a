"""The one hierarchy of errors that opendistro raises.

Everything that can go wrong because of what a peer, a tracker, a mirror, a file
or a user handed us surfaces as a subclass of :class:`OpenDistroError`, so a
caller can catch exactly one type at the boundary and never sees a ``KeyError``
or ``struct.error`` from deep inside a parser. As in h11, protocol errors say
*who* broke the rules: :class:`RemoteProtocolError` when the other side sent
something illegal, :class:`LocalProtocolError` when our own code asked for
something illegal (a bug, or misuse of the API).
"""

from __future__ import annotations

__all__ = [
    "BencodeError",
    "ConfigError",
    "CreditError",
    "CreditProtocolError",
    "DHTError",
    "DeltaError",
    "DeltaIndexError",
    "DeltaPeerError",
    "DownloadError",
    "EncryptionError",
    "IntegrityError",
    "LocalProtocolError",
    "MagnetError",
    "ManifestError",
    "MetainfoError",
    "MetalinkError",
    "MirrorDataError",
    "MirrorError",
    "MirrorNotFound",
    "MirrorUnavailable",
    "OpenDistroError",
    "ProtocolError",
    "ReceiptError",
    "RemoteProtocolError",
    "SignatureError",
    "StorageError",
    "TrackerError",
    "UnsafePathError",
]


class OpenDistroError(Exception):
    """Base class of every error opendistro raises on purpose."""


class BencodeError(OpenDistroError, ValueError):
    """Bytes that are not strict, well-formed bencoding, or exceed a limit."""


class ProtocolError(OpenDistroError):
    """A peer-wire or extension protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """We were asked to send or do something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The remote side sent something the protocol forbids or we cannot parse."""


class EncryptionError(RemoteProtocolError):
    """The Message Stream Encryption (MSE/PE) handshake failed or was refused."""


class DHTError(RemoteProtocolError):
    """A DHT node sent a KRPC message we cannot accept: malformed, oversized, or forged."""


class MetainfoError(OpenDistroError, ValueError):
    """A .torrent file or info dictionary is malformed or inconsistent."""


class MagnetError(MetainfoError):
    """A magnet URI is malformed or names no usable info-hash."""


class MetalinkError(MetainfoError):
    """A Metalink (RFC 5854) document is malformed, unsafe or inconsistent."""


class StorageError(OpenDistroError):
    """Reading or writing release data on disk failed."""


class UnsafePathError(StorageError, MetainfoError):
    """A file name would escape the download directory or is not allowed."""


class IntegrityError(OpenDistroError):
    """Data did not match the hash that the release promises."""


class SignatureError(IntegrityError):
    """A release signature is missing, invalid, untrusted or rolled back."""


class TrackerError(OpenDistroError):
    """A tracker refused us, answered garbage, or could not be reached."""


class MirrorError(OpenDistroError):
    """An HTTP mirror or web seed failed."""


class MirrorUnavailable(MirrorError):
    """A mirror could not be reached, timed out or answered 5xx/429: try again later."""


class MirrorNotFound(MirrorError):
    """A mirror answered 404 or 410: it does not have that file (now, or at all)."""


class MirrorDataError(MirrorError):
    """A mirror answered with the wrong range, length or framing: its data is not usable."""


class DeltaError(OpenDistroError):
    """A delta index or update plan is malformed or cannot be applied."""


class DeltaPeerError(DeltaError):
    """A peer cannot serve a delta over od_delta (it lacks the extension or the index,
    refused, broke the protocol or left)."""


class DeltaIndexError(DeltaError, ValueError):
    """A delta index is malformed, inconsistent or exceeds a limit."""


class ManifestError(OpenDistroError, ValueError):
    """A release manifest is malformed, inconsistent (missing or cyclic dependencies) or too big."""


class DownloadError(OpenDistroError):
    """A download could not be completed from any source."""


class ConfigError(OpenDistroError, ValueError):
    """A setting or command-line argument is out of range or contradictory."""


class CreditError(OpenDistroError):
    """A credit identity, receipt or ledger cannot be used (a corrupt identity file, say)."""


class ReceiptError(CreditError):
    """A credit receipt is malformed, badly signed, or bound to another torrent or peer."""


class CreditProtocolError(CreditError, RemoteProtocolError):
    """A peer broke the od_credit extension protocol (a bad hello or receipt, too many)."""
