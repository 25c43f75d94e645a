"""Where the bytes of a torrent live on a BEP 19 web seed (``url-list`` entry).

A web seed is a plain HTTP server holding the release's files, so a range of
the torrent's piece space becomes one HTTP ``Range`` request per file it
touches. BEP 19 (GetRight style) fixes the URLs:

* single-file torrent: the ``url-list`` entry is the file itself, unless it
  ends with ``/``, in which case the torrent's name is appended;
* multi-file torrent: the entry is a folder; the file is at
  ``entry/`` + name + ``/`` + its path components.

Like libtorrent, a multi-file entry that lacks the trailing ``/`` gets one,
since that is the only reading under which the torrent makes sense. Each name
component we append is percent-encoded on its own (RFC 3986: everything but
the unreserved characters), so a ``/``, ``#``, ``?`` or ``%`` inside a file name
can never change the URL's structure; the entry itself is used as written,
because it is already a URL.

BEP 47 padding is never requested: a pad file holds zeros by definition and
exists on no server. Mirrors are fastest with large requests, so a run of
pieces maps to as few spans as there are files under it, not one per piece.

This module does no I/O; :mod:`opendistro.mirrors.http` fetches the spans.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import LocalProtocolError, MirrorError
from ..metainfo import FileEntry, Metainfo

__all__ = [
    "HttpSpan",
    "check_base_url",
    "content_url",
    "delta_index_url",
    "file_url",
    "piece_spans",
    "spans",
]

_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class HttpSpan:
    """One HTTP range request: bytes ``start..end_inclusive`` of the file at ``url``.

    ``torrent_offset`` is where ``start`` sits in the torrent's piece space, so
    the received bytes can be placed without another lookup; ``file_length`` is
    the file's full size, which a server's ``Content-Range`` must agree with.
    """

    url: str
    start: int
    end_inclusive: int
    torrent_offset: int
    file_length: int

    @property
    def length(self) -> int:
        """Number of bytes the span covers."""
        return self.end_inclusive - self.start + 1

    @property
    def is_whole_file(self) -> bool:
        """Whether the span is the entire file (then a plain ``200`` is an acceptable answer)."""
        return self.start == 0 and self.end_inclusive == self.file_length - 1

    @property
    def range_header(self) -> str:
        """The value of the ``Range`` request header for this span."""
        return f"bytes={self.start}-{self.end_inclusive}"


def check_base_url(base_url: str) -> None:
    """Refuse a ``url-list`` entry we cannot fetch from (FTP, relative, no host, ...)."""
    try:
        parts = urlsplit(base_url)
        _ = parts.port  # parsing the port is what validates it
    except ValueError as exc:
        raise MirrorError(f"malformed web seed URL {base_url!r}: {exc}") from exc
    if parts.scheme.lower() not in _SCHEMES:
        raise MirrorError(f"web seed URL {base_url!r} is not http or https")
    if not parts.hostname:
        raise MirrorError(f"web seed URL {base_url!r} names no host")


def _append_path(base_url: str, components: tuple[str, ...]) -> str:
    """``base_url`` with ``/``-separated, individually percent-encoded components appended."""
    parts = urlsplit(base_url)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    path += "/".join(quote(component, safe="") for component in components)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def file_url(metainfo: Metainfo, base_url: str, entry: FileEntry) -> str:
    """The URL of ``entry`` (a data file of ``metainfo``) on the web seed ``base_url``."""
    check_base_url(base_url)
    if entry.is_padding:
        raise LocalProtocolError("padding files are not on any server")
    if not metainfo.is_multi_file:
        path = urlsplit(base_url).path
        if not path or path.endswith("/"):  # a bare host is a folder too, as in libtorrent
            return _append_path(base_url, (metainfo.name,))
        return urlunsplit(urlsplit(base_url)._replace(fragment=""))
    return _append_path(base_url, (metainfo.name, *entry.path))


DELTA_INDEX_SUFFIX = ".odindex"
CONTENT_SUFFIX = ".odcontent"


def delta_index_url(metainfo: Metainfo, base_url: str) -> str:
    """Where a mirror keeps the release's delta index (``spec/delta-index.md``).

    Beside the release: ``NAME.odindex`` next to the single file or the folder.
    """
    if not metainfo.is_multi_file:
        return file_url(metainfo, base_url, metainfo.data_files()[0]) + DELTA_INDEX_SUFFIX
    check_base_url(base_url)
    return _append_path(base_url, (metainfo.name + DELTA_INDEX_SUFFIX,))


def content_url(metainfo: Metainfo, base_url: str, entry: FileEntry) -> str:
    """Where a mirror keeps the uncompressed content of ``entry``'s compressed segments.

    ``FILE.odcontent`` next to the file: the contents of its compressed
    segments one after another, so a client fetches changed content with
    ``Range`` requests instead of the whole compressed file.
    """
    return file_url(metainfo, base_url, entry) + CONTENT_SUFFIX


def spans(metainfo: Metainfo, base_url: str, offset: int, length: int) -> list[HttpSpan]:
    """The requests that fetch torrent bytes ``offset .. offset+length`` from ``base_url``.

    Spans come in piece-space order, one per data file the range touches;
    padding and empty files produce none, so the bytes not covered by any
    span are exactly the padding (zeros) in the range.
    """
    if offset < 0 or length < 0 or offset + length > metainfo.total_length:
        raise LocalProtocolError(
            f"range {offset}+{length} is outside the torrent's {metainfo.total_length} bytes"
        )
    check_base_url(base_url)
    result: list[HttpSpan] = []
    end = offset + length
    files = metainfo.files
    index = max(bisect.bisect_right(files, offset, key=lambda entry: entry.offset) - 1, 0)
    while index < len(files) and files[index].offset < end:
        entry = files[index]
        index += 1
        first = max(offset, entry.offset)
        last = min(end, entry.end)  # exclusive
        if entry.is_padding or last <= first:
            continue
        result.append(
            HttpSpan(
                url=file_url(metainfo, base_url, entry),
                start=first - entry.offset,
                end_inclusive=last - entry.offset - 1,
                torrent_offset=first,
                file_length=entry.length,
            )
        )
    return result


def piece_spans(
    metainfo: Metainfo, base_url: str, first_piece: int, count: int = 1
) -> list[HttpSpan]:
    """The requests for ``count`` consecutive pieces starting at ``first_piece``."""
    if count < 1 or first_piece < 0 or first_piece + count > metainfo.num_pieces:
        raise LocalProtocolError(
            f"pieces {first_piece}..{first_piece + count - 1} are outside the torrent's "
            f"{metainfo.num_pieces} pieces"
        )
    offset = first_piece * metainfo.piece_length
    end = min((first_piece + count) * metainfo.piece_length, metainfo.total_length)
    return spans(metainfo, base_url, offset, end - offset)
