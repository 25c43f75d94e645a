"""BEP 10 extensions: the extension handshake and the messages of each extension.

Each module decodes the payload of an :class:`~opendistro.wire.messages.Extended`
message for one extension; the connection only routes them by id.
"""

from __future__ import annotations

from .handshake import MAX_METADATA_SIZE, ExtensionHandshake

__all__ = ["MAX_METADATA_SIZE", "ExtensionHandshake"]
