"""Tar-aware chunk boundaries (normative text: spec/delta-index.md §2.7).

Plain content-defined chunking does badly on a tar archive of small files: every
member's 512-byte header changes between releases (the version is in every path,
the mtimes move), members are mostly shorter than a chunk, so nearly every chunk
holds a changed header and misses although the files themselves hardly changed.

So when a segment's content is a tar archive, the chunker is also made to cut at
every member's edges: a member's headers (with any GNU long-name or pax extended
headers before it) become chunks of their own, and the member's data is chunked
afresh from its first byte, so unchanged data yields the same chunks whatever its
header says and wherever the member moved. :class:`TarCuts` finds those edges in
a stream fed in pieces; it keeps at most one 512-byte header block, never the
data, so a size field that lies costs nothing but a skip past the end. At the
first thing that is not a header where one should be (the end-of-archive zero
blocks, garbage, a truncated archive) it stops: the rest is chunked as usual.
"""

from __future__ import annotations

__all__ = ["BLOCK_SIZE", "TAR", "TarCuts", "parse_header"]

#: The ``content-format`` a delta index records for a segment cut this way.
TAR = "tar"
BLOCK_SIZE = 512

_MAGICS = (b"ustar\x00", b"ustar ")
#: Type flags of headers that describe the next header, not a member of their own:
#: GNU long name and long link name, pax extended and global headers.
_EXTENSIONS = frozenset(b"LKxg")
_CHECKSUM = slice(148, 156)
_SIZE = slice(124, 136)
_TYPE = 156
_MAGIC = slice(257, 263)
_OCTAL_DIGITS = frozenset(b"01234567")


def _octal(field: bytes) -> int | None:
    """A numeric header field: octal digits, padded with spaces, ended by NUL or its end."""
    end = field.find(0)
    digits = (field if end < 0 else field[:end]).strip(b" ")
    if not digits or not _OCTAL_DIGITS.issuperset(digits):
        return None
    return int(digits, 8)


def parse_header(block: bytes) -> tuple[int, int] | None:
    """The type flag and size of a valid ustar/GNU header block, or None.

    Valid means: the ustar magic (POSIX ``ustar\\0`` or GNU ``ustar ``), an octal
    checksum equal to the unsigned sum of the block's bytes with the checksum
    field counted as spaces, and an octal size. Base-256 sizes (GNU, for members
    over 8 GiB) are not read: such a block ends the tar-aware cuts.
    """
    if len(block) != BLOCK_SIZE or block[_MAGIC] not in _MAGICS:
        return None
    checksum = _octal(block[_CHECKSUM])
    size = _octal(block[_SIZE])
    if checksum is None or size is None:
        return None
    if checksum != sum(block) - sum(block[_CHECKSUM]) + 8 * 0x20:
        return None
    return block[_TYPE], size


def _padded(size: int) -> int:
    return -(-size // BLOCK_SIZE) * BLOCK_SIZE


class TarCuts:
    """Finds the forced cut offsets of tar-format content fed in pieces.

    :meth:`feed` returns the offsets (from the start of the content) of the cuts
    that fall inside the bytes fed so far, in increasing order; it may return an
    offset equal to the end of what was fed, never one beyond it, so the result
    does not depend on how the content was split. :attr:`is_tar` says whether the
    content started with a valid header (once 512 bytes were fed). Memory: one
    header block.
    """

    def __init__(self) -> None:
        self._tar: bool | None = None
        self._fed = 0
        self._header_at = 0
        """Where the next header block starts (it may lie beyond what was fed)."""
        self._block = bytearray()
        self._cut_at_header = False
        """Whether a member's data ends at ``_header_at``: a cut once it is reached."""
        self._stopped = False

    @property
    def is_tar(self) -> bool:
        """Whether the content is in tar format: a valid header at offset 0."""
        return self._tar is True

    @property
    def stopped(self) -> bool:
        """Whether the walk is over: not a tar, the archive ended, or it broke off."""
        return self._stopped

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Take the next bytes of the content; return the cut offsets now known."""
        if self._stopped:
            self._fed += len(data)
            return []
        with memoryview(data).cast("B") as view:
            start = self._fed
            end = start + len(view)
            self._fed = end
            cuts: list[int] = []
            while not self._stopped and self._header_at <= end:
                if self._cut_at_header:
                    cuts.append(self._header_at)
                    self._cut_at_header = False
                have = self._header_at + len(self._block)
                self._block += view[have - start : min(end, self._header_at + BLOCK_SIZE) - start]
                if len(self._block) < BLOCK_SIZE:
                    break
                self._step(bytes(self._block), cuts)
                self._block.clear()
            return cuts

    def _step(self, block: bytes, cuts: list[int]) -> None:
        header = parse_header(block)
        if self._tar is None:
            self._tar = header is not None
        if header is None:
            self._stopped = True
            return
        kind, size = header
        data_at = self._header_at + BLOCK_SIZE
        self._header_at = data_at + _padded(size)
        if kind in _EXTENSIONS:
            return  # the header sequence goes on: no cut inside it
        cuts.append(data_at)
        self._cut_at_header = size > 0
