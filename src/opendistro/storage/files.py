"""Blocking file I/O for one torrent's data: sparse files, positioned reads and writes.

The trio driver calls these methods through ``trio.to_thread.run_sync``, so
everything here is plain blocking code that is safe to call from several
worker threads at once: ``os.pread``/``os.pwrite`` carry their own offsets and
need no shared file position, and the only shared state, a bounded LRU of open
descriptors, sits behind a lock with reference counts so a descriptor is never
closed while another thread is using it.

A download is written into a hidden staging folder beside its destination,
``DIR/.NAME.opendistro/``, and moved into place by :meth:`FileStorage.finalize`
with ``os.replace``. Users and other programs therefore never see a
half-written release at ``DIR/NAME``, and a crash leaves only the staging
folder to resume from. In ``"seed"`` mode the data is read in place.

Memory stays bounded: at most one piece (the block or piece asked for) is
held at a time, and nothing is read ahead.
"""

from __future__ import annotations

import os
import stat
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..errors import StorageError, UnsafePathError
from ..paths import validate_component, validate_path
from ._saferoot import SafeRoot
from .layout import FileEntryLike, PieceLayout

__all__ = ["FileStorage", "StorageMode", "stored_file_paths"]

StorageMode = Literal["download", "seed"]

_STAGING_SUFFIX = ".opendistro"


def stored_file_paths(
    files: Sequence[FileEntryLike], *, name: str, is_multi_file: bool
) -> dict[int, tuple[str, ...]]:
    """Map each stored (non-padding) file index to its path relative to the torrent root.

    For a single-file torrent the one stored file is ``(name,)``. Every name is
    checked with :func:`opendistro.paths.validate_path`, and the set of paths
    as a whole must be realisable on any disk: no duplicates, no two paths that
    differ only in case or Unicode normalisation (they would clobber each
    other on Windows and macOS), and no file that is also another file's folder.
    Raises :class:`UnsafePathError` otherwise.
    """
    validate_component(name)
    stored = {index: entry for index, entry in enumerate(files) if not entry.is_padding}
    if not is_multi_file:
        if len(stored) != 1:
            raise StorageError(
                f"a single-file torrent must have exactly one stored file, not {len(stored)}"
            )
        return {index: (name,) for index in stored}
    paths: dict[int, tuple[str, ...]] = {}
    seen_files: dict[tuple[str, ...], tuple[str, ...]] = {}
    seen_dirs: dict[tuple[str, ...], tuple[str, ...]] = {}
    for index, entry in stored.items():
        path = validate_path(entry.path)
        folded = tuple(unicodedata.normalize("NFC", part).casefold() for part in path)
        if folded in seen_files:
            raise UnsafePathError(
                f"file path {'/'.join(path)!r} collides with {'/'.join(seen_files[folded])!r}"
            )
        if folded in seen_dirs:
            raise UnsafePathError(
                f"file path {'/'.join(path)!r} is also a folder of {'/'.join(seen_dirs[folded])!r}"
            )
        for depth in range(1, len(folded)):
            prefix = folded[:depth]
            if prefix in seen_files:
                raise UnsafePathError(
                    f"file {'/'.join(seen_files[prefix])!r} is also a folder of {'/'.join(path)!r}"
                )
            seen_dirs.setdefault(prefix, path)
        seen_files[folded] = path
        paths[index] = path
    return paths


class _OpenFile:
    """A cached descriptor with a count of threads using it right now."""

    __slots__ = ("dirty", "evicted", "fd", "file_index", "users", "writable")

    def __init__(self, fd: int, file_index: int, writable: bool) -> None:
        self.fd = fd
        self.file_index = file_index
        self.writable = writable
        self.users = 0
        self.evicted = False
        self.dirty = False  # written since the last flush()


class FileStorage:
    """The bytes of one torrent on disk, addressed by piece, block offset and length."""

    def __init__(
        self,
        *,
        download_dir: str | os.PathLike[str],
        name: str,
        files: Sequence[FileEntryLike],
        piece_length: int,
        total_length: int,
        is_multi_file: bool,
        mode: StorageMode,
        max_open_files: int = 64,
    ) -> None:
        if mode not in ("download", "seed"):
            raise StorageError(f"unknown storage mode {mode!r}")
        if max_open_files < 1:
            raise StorageError("max_open_files must be at least 1")
        self.layout = PieceLayout(files, piece_length, total_length)
        self._paths = stored_file_paths(files, name=name, is_multi_file=is_multi_file)
        self._name = name
        self._is_multi_file = is_multi_file
        self._staging_name = f".{name}{_STAGING_SUFFIX}"
        self._root = SafeRoot(download_dir)
        self.final_path: Path = self._root.root / name
        self.staging_path: Path = self._root.root / self._staging_name
        self._mode: StorageMode = mode
        self._max_open_files = max_open_files
        self._lock = threading.Lock()
        self._open: OrderedDict[int, _OpenFile] = OrderedDict()
        # Files written, then evicted from the cache before any flush() synced them.
        self._unsynced: set[int] = set()

    @property
    def mode(self) -> StorageMode:
        """``"download"`` until :meth:`finalize` succeeds, then ``"seed"``."""
        return self._mode

    @property
    def num_pieces(self) -> int:
        """Number of pieces in the torrent."""
        return self.layout.num_pieces

    @property
    def data_path(self) -> Path:
        """Where the data lives right now: the staging area or the final path."""
        top = self._data_top()
        return self._root.root / top

    def preallocate(self) -> None:
        """Create every stored file at its full length, sparsely (no disk blocks used).

        ``ftruncate`` only changes the recorded size, so a 4 GiB torrent is laid
        out instantly; the blocks are allocated as pieces arrive. Files that
        exist with the wrong size are cut or extended to the torrent's size.
        """
        self._ensure_top_folder()
        for index in self._paths:
            entry = self._acquire(index, write=True)
            try:
                length = self._file_length(index)
                if os.fstat(entry.fd).st_size != length:
                    os.ftruncate(entry.fd, length)
            except OSError as exc:
                raise StorageError(f"cannot preallocate {self._describe(index)}: {exc}") from exc
            finally:
                self._release(entry)

    def write_block(self, index: int, begin: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``begin`` within piece ``index``; bytes in padding are dropped."""
        view = memoryview(data).cast("B")
        for extent in self.layout.extents(index, begin, len(view)):
            chunk = view[extent.piece_offset : extent.piece_offset + extent.length]
            entry = self._acquire(extent.file_index, write=True)
            try:
                position = extent.file_offset
                while chunk:
                    written = os.pwrite(entry.fd, chunk, position)
                    if written <= 0:  # pragma: no cover - pwrite to a file writes or raises
                        raise StorageError(
                            f"no progress writing {self._describe(extent.file_index)}"
                        )
                    chunk = chunk[written:]
                    position += written
                self._mark_written(entry)
            except OSError as exc:
                raise StorageError(
                    f"cannot write {self._describe(extent.file_index)}: {exc}"
                ) from exc
            finally:
                self._release(entry)

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        """Read ``length`` bytes at ``begin`` within piece ``index``; padding reads as zeros.

        Raises :class:`StorageError` if a file is missing or shorter than the torrent says.
        """
        parts: list[bytes] = []
        covered = 0
        for extent in self.layout.extents(index, begin, length):
            if extent.piece_offset > covered:
                parts.append(bytes(extent.piece_offset - covered))
            parts.append(self._read_extent(extent.file_index, extent.file_offset, extent.length))
            covered = extent.piece_offset + extent.length
        if covered < length:
            parts.append(bytes(length - covered))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_piece(self, index: int) -> bytes:
        """Read the whole of piece ``index``."""
        return self.read_block(index, 0, self.layout.piece_size(index))

    def file_stats(self) -> list[tuple[int, int]]:
        """``(size, mtime_ns)`` of each stored file where it lives now; ``(-1, -1)`` if missing.

        Resume data is trusted only while these match, so a file touched by
        anything else forces a re-check.
        """
        top = self._data_top()
        stats: list[tuple[int, int]] = []
        for relative in self._paths.values():
            info = self._root.stat(self._components(top, relative))
            if info is None or not _is_regular(info):
                stats.append((-1, -1))
            else:
                stats.append((info.st_size, info.st_mtime_ns))
        return stats

    def finalize(self) -> Path:
        """Flush every file to disk, then move the staged data to :attr:`final_path`.

        Each file moves with ``os.replace``, which is atomic, and the staging
        folder is removed last, so after a crash each file is either complete
        at its final place or still staged. Afterwards the storage reads in
        place (mode ``"seed"``). Regular files already at the final paths are
        replaced (a finalize interrupted by a crash can simply be run again);
        a symlink or folder in the way raises instead. Returns the final path.
        """
        if self._mode != "download":
            raise StorageError("finalize() is only meaningful for a download in progress")
        self._close_all()
        self._ensure_top_folder()
        for index, relative in self._paths.items():
            self._flush_staged_file(index, self._components(self._staging_name, relative))
        with self._lock:
            self._unsynced.clear()
        if self._is_multi_file:
            self._root.make_dirs((self._name,))
        self._root.replace_all(
            (
                self._components(self._staging_name, relative),
                self._components(self._name, relative),
            )
            for relative in self._paths.values()
        )
        # Make the new name of the top folder or single file durable as well.
        self._root.sync_root()
        self._root.remove_tree(self._staging_name)
        self._mode = "seed"
        return self.final_path

    def flush(self) -> None:
        """fsync every file written since the last flush, so resume state saved next is true.

        Files written and then evicted from the descriptor cache are remembered
        and reopened here, so no write escapes the flush.
        """
        with self._lock:
            dirty = [entry for entry in self._open.values() if entry.dirty]
            for entry in dirty:
                entry.users += 1
                entry.dirty = False  # a write during the fsync marks it again
            evicted = list(self._unsynced)
            self._unsynced.clear()
        try:
            for entry in dirty:
                _fsync_or_raise(entry.fd)
            for file_index in evicted:
                components = self._components(self._data_top(), self._paths[file_index])
                fd = self._root.open_file(components, write=True, create=False)
                try:
                    _fsync_or_raise(fd)
                finally:
                    os.close(fd)
        finally:
            for entry in dirty:
                self._release(entry)

    def close(self) -> None:
        """Close every cached descriptor; later calls reopen files as needed.

        Closing does not fsync: call :meth:`flush` first when durability matters.
        """
        self._close_all()

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _data_top(self) -> str:
        return self._staging_name if self._mode == "download" else self._name

    def _components(self, top: str, relative: tuple[str, ...]) -> tuple[str, ...]:
        # Single-file data sits directly in DIR (seed) or in the staging folder.
        if self._is_multi_file or top == self._staging_name:
            return (top, *relative)
        return relative

    def _ensure_top_folder(self) -> None:
        top = self._data_top()
        if self._is_multi_file or top == self._staging_name:
            self._root.make_dirs((top,))

    def _file_length(self, index: int) -> int:
        _, length = self.layout.file_range(index)
        return length

    def _describe(self, index: int) -> str:
        return self._root.describe(self._components(self._data_top(), self._paths[index]))

    def _read_extent(self, file_index: int, offset: int, length: int) -> bytes:
        entry = self._acquire(file_index, write=False)
        try:
            data = os.pread(entry.fd, length, offset)
            while len(data) < length:
                # pread returns less only at end of file; read once more to be sure.
                more = os.pread(entry.fd, length - len(data), offset + len(data))
                if not more:
                    raise StorageError(
                        f"{self._describe(file_index)} is shorter than the torrent says"
                    )
                data += more  # pragma: no cover - only if the file grew between two preads
            return data
        except OSError as exc:  # pragma: no cover - pread of an open regular file fails only on EIO
            raise StorageError(f"cannot read {self._describe(file_index)}: {exc}") from exc
        finally:
            self._release(entry)

    def _acquire(self, file_index: int, *, write: bool) -> _OpenFile:
        with self._lock:
            entry = self._open.get(file_index)
            if entry is not None:
                if entry.writable or not write:
                    self._open.move_to_end(file_index)
                    entry.users += 1
                    return entry
                self._evict(file_index)
            fd = self._open_fd(file_index, write=write)
            entry = _OpenFile(fd, file_index, write)
            entry.users = 1
            self._open[file_index] = entry
            if len(self._open) > self._max_open_files:
                for idle in [i for i, e in self._open.items() if e.users == 0]:
                    self._evict(idle)
                    if len(self._open) <= self._max_open_files:
                        break
            return entry

    def _mark_written(self, entry: _OpenFile) -> None:
        """Remember that ``entry``'s file needs an fsync before resume state may claim it.

        Under the lock, because :meth:`_close_all` may evict a descriptor while a
        write through it is still running: the write must then be remembered in
        ``_unsynced``, or the next :meth:`flush` would miss it.
        """
        with self._lock:
            if entry.evicted:  # pragma: no cover - close() racing a write in another thread
                self._unsynced.add(entry.file_index)
            else:
                entry.dirty = True

    def _release(self, entry: _OpenFile) -> None:
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                os.close(entry.fd)

    def _evict(self, file_index: int) -> None:
        """Drop a descriptor from the cache; close it now or when its last user is done."""
        entry = self._open.pop(file_index)
        entry.evicted = True
        if entry.dirty:
            self._unsynced.add(file_index)
        if entry.users == 0:
            os.close(entry.fd)

    def _close_all(self) -> None:
        with self._lock:
            for file_index in list(self._open):
                self._evict(file_index)

    def _open_fd(self, file_index: int, *, write: bool) -> int:
        components = self._components(self._data_top(), self._paths[file_index])
        fd = self._root.open_file(components, write=write)
        if write and self._mode == "download":
            # A staged file is ours alone; a second hard link would let a write
            # land in some other file that shares the inode.
            try:
                links = os.fstat(fd).st_nlink
            except OSError as exc:  # pragma: no cover - fstat of a descriptor just opened
                os.close(fd)
                raise StorageError(f"cannot stat {self._describe(file_index)}: {exc}") from exc
            if links > 1:
                os.close(fd)
                raise UnsafePathError(
                    f"refusing to write {self._describe(file_index)}: it has other hard links"
                )
        return fd

    def _flush_staged_file(self, index: int, components: tuple[str, ...]) -> None:
        length = self._file_length(index)
        fd = self._root.open_file(components, write=True)
        try:
            info = os.fstat(fd)
            if info.st_nlink > 1:
                raise UnsafePathError(
                    f"refusing to finalize {self._root.describe(components)}: it has hard links"
                )
            size = info.st_size
            if size < length:
                raise StorageError(
                    f"{self._root.describe(components)} has {size} bytes, expected {length}"
                )
            if size > length:
                os.ftruncate(fd, length)
            os.fsync(fd)
        except OSError as exc:  # pragma: no cover - shrinking or fsync fail only on EIO
            raise StorageError(f"cannot flush {self._root.describe(components)}: {exc}") from exc
        finally:
            os.close(fd)


def _fsync_or_raise(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - fsync of a regular file fails only on EIO
        raise StorageError(f"cannot flush data to disk: {exc}") from exc


def _is_regular(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode)
