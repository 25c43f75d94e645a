"""Open, create, stat and rename files below one trusted folder without escaping it.

File names come from strangers, and the download folder may already hold
symlinks (planted by another user on a shared disk, or left by an earlier
attack). Checking a joined path string and then opening it leaves a window in
which a component can be swapped for a symlink, so on POSIX every lookup walks
the components one by one with ``dir_fd`` and ``O_NOFOLLOW``: no symlink below
the root is ever followed, whatever it points at. Only the root itself (chosen
by the user, hence trusted) is resolved with ``realpath``.

Platforms without ``dir_fd`` support (Windows) fall back to checking each
prefix with ``lstat`` and the resolved path with ``realpath``; that is weaker
against races but still refuses every symlink it can see.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import StorageError, UnsafePathError

__all__ = ["SafeRoot"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

_USE_DIR_FD = (
    os.open in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
    and os.mkdir in os.supports_dir_fd
    and os.rename in os.supports_dir_fd
    and bool(_O_NOFOLLOW and _O_DIRECTORY)
)


class SafeRoot:
    """A trusted folder; every path handed to it is a tuple of components below it."""

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(os.fspath(root)))

    def open_file(
        self, components: Sequence[str], *, write: bool, create: bool | None = None
    ) -> int:
        """Open a regular file for reading, or for reading and writing.

        ``create`` (default: same as ``write``) creates the file and its folders if absent.

        Raises :class:`UnsafePathError` if any component is a symlink and
        :class:`StorageError` if the file is missing (read) or not a regular file.
        """
        if create is None:
            create = write
        flags = os.O_RDWR if write else os.O_RDONLY
        if create:
            flags |= os.O_CREAT
        # O_NONBLOCK keeps a planted FIFO from hanging open(); it means nothing for files.
        flags |= _O_CLOEXEC | _O_NOFOLLOW | _O_NONBLOCK | _O_BINARY
        *parents, leaf = components
        if _USE_DIR_FD:
            parent_fd = self.open_dir(parents, create=create)
            try:
                fd = self._checked(os.open, leaf, flags, 0o666, dir_fd=parent_fd, name=components)
            finally:
                os.close(parent_fd)
        else:
            path = self._checked_path(components, create_parents=create)
            fd = self._checked(os.open, str(path), flags, 0o666, name=components)
        try:
            info = os.fstat(fd)
        except OSError as exc:  # pragma: no cover - fstat of a descriptor just opened cannot fail
            os.close(fd)
            raise StorageError(f"cannot stat {self.describe(components)}: {exc}") from exc
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise StorageError(f"{self.describe(components)} is not a regular file")
        return fd

    def open_dir(self, components: Sequence[str], *, create: bool) -> int:
        """Open (optionally creating) a folder below the root, refusing symlinks. POSIX only."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
        try:
            fd = os.open(self.root, flags)
        except OSError as exc:
            raise StorageError(f"cannot open download folder {self.root}: {exc}") from exc
        for depth, component in enumerate(components):
            name = components[: depth + 1]
            try:
                if create:
                    try:
                        os.mkdir(component, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise StorageError(f"cannot create {self.describe(name)}: {exc}") from exc
                child = self._checked(os.open, component, flags, dir_fd=fd, name=name)
            finally:
                os.close(fd)
            fd = child
        return fd

    def stat(self, components: Sequence[str]) -> os.stat_result | None:
        """``lstat`` of a path below the root, or None if it (or a parent) is missing."""
        try:
            if _USE_DIR_FD:
                *parents, leaf = components
                parent_fd = self.open_dir(parents, create=False)
                try:
                    return os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
                finally:
                    os.close(parent_fd)
            return os.lstat(self._checked_path(components, create_parents=False))
        except (OSError, StorageError):
            return None

    def replace_all(self, moves: Iterable[tuple[Sequence[str], Sequence[str]]]) -> None:
        """Atomically move each ``source`` to its ``target``, creating target folders.

        Renaming over a symlink replaces the link itself, never what it points
        at. Each target folder is fsynced once, after the last file moved into
        it, so the renames are durable without one fsync per file; consecutive
        moves that share folders (the usual sorted file list) reuse the open folders.
        """
        if not _USE_DIR_FD:
            for source, target in moves:
                source_path = self._checked_path(source, create_parents=False)
                target_path = self._checked_path(target, create_parents=True)
                self._checked(os.replace, str(source_path), str(target_path), name=target)
            return
        folders = _FolderCache(self)
        try:
            for source, target in moves:
                folders.trim()
                source_fd = folders.get(tuple(source[:-1]), create=False)
                target_fd = folders.get(tuple(target[:-1]), create=True, dirty=True)
                self._checked(
                    os.replace,
                    source[-1],
                    target[-1],
                    src_dir_fd=source_fd,
                    dst_dir_fd=target_fd,
                    name=target,
                )
            folders.sync()
        finally:
            folders.close()

    def sync_root(self) -> None:
        """fsync the root folder so new entries in it survive a crash (POSIX only)."""
        if not _USE_DIR_FD:
            return
        fd = self.open_dir((), create=False)
        try:
            os.fsync(fd)
        except OSError as exc:  # pragma: no cover - only a failing device (EIO) makes this fail
            raise StorageError(f"cannot flush {self.root}: {exc}") from exc
        finally:
            os.close(fd)

    def make_dirs(self, components: Sequence[str]) -> None:
        """Create a folder (and its parents) below the root."""
        if _USE_DIR_FD:
            os.close(self.open_dir(components, create=True))
        else:
            path = self._checked_path(components, create_parents=True)
            self._checked(os.makedirs, str(path), exist_ok=True, name=components)

    def remove_tree(self, component: str) -> None:
        """Delete a folder directly below the root, never following symlinks inside it."""
        try:
            if _USE_DIR_FD and shutil.rmtree.avoids_symlink_attacks:
                root_fd = self.open_dir((), create=False)
                try:
                    shutil.rmtree(component, dir_fd=root_fd)
                finally:
                    os.close(root_fd)
            else:
                shutil.rmtree(self._checked_path((component,), create_parents=False))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot remove {self.describe((component,))}: {exc}") from exc

    def describe(self, components: Sequence[str]) -> str:
        """The path as text, for error messages."""
        return str(self.root.joinpath(*components))

    def _checked(
        self, call: Callable[..., object], *args: object, name: Sequence[str], **kwargs: object
    ) -> int:
        """Run an ``os`` call, turning symlink refusals into UnsafePathError."""
        try:
            result = call(*args, **kwargs)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self._has_symlink(name):
                raise UnsafePathError(
                    f"refusing to follow a symlink at {self.describe(name)}"
                ) from exc
            raise StorageError(f"cannot access {self.describe(name)}: {exc}") from exc
        return result if isinstance(result, int) else 0

    def _has_symlink(self, components: Sequence[str]) -> bool:
        path = self.root
        for component in components:
            path = path / component
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    return True
            except OSError:  # pragma: no cover - a race: the component vanished since the call
                return False
        return False

    def _checked_path(self, components: Sequence[str], *, create_parents: bool) -> Path:
        """Fallback for platforms without dir_fd: check prefixes with lstat, then realpath."""
        path = self.root
        for depth, component in enumerate(components):
            path = path / component
            is_leaf = depth == len(components) - 1
            if not is_leaf and create_parents:
                try:
                    path.mkdir(exist_ok=True)
                except OSError as exc:
                    raise StorageError(f"cannot create folder {path}: {exc}") from exc
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot access {path}: {exc}") from exc
            is_junction = getattr(path, "is_junction", None)  # Python 3.12+, Windows
            if stat.S_ISLNK(info.st_mode) or (is_junction is not None and is_junction()):
                raise UnsafePathError(f"refusing to follow a symlink at {path}")
        resolved = Path(os.path.realpath(path))
        if resolved != self.root and self.root not in resolved.parents:
            raise UnsafePathError(f"{path} resolves outside {self.root}")
        return path


class _FolderCache:
    """A few open folder descriptors reused across a run of renames."""

    _LIMIT = 16

    def __init__(self, root: SafeRoot) -> None:
        self._root = root
        self._fds: dict[tuple[str, ...], int] = {}
        self._dirty: set[tuple[str, ...]] = set()

    def get(self, components: tuple[str, ...], *, create: bool, dirty: bool = False) -> int:
        fd = self._fds.get(components)
        if fd is None:
            fd = self._root.open_dir(components, create=create)
            self._fds[components] = fd
        if dirty:
            self._dirty.add(components)
        return fd

    def trim(self) -> None:
        """Sync and close everything once the cache is full (never between two get()s)."""
        if len(self._fds) >= self._LIMIT:
            self.sync()
            self.close()

    def sync(self) -> None:
        for components in self._dirty:
            try:
                os.fsync(self._fds[components])
            except OSError as exc:  # pragma: no cover - only a failing device (EIO) makes this fail
                raise StorageError(
                    f"cannot flush {self._root.describe(components)}: {exc}"
                ) from exc
        self._dirty.clear()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
