"""Atomic file writes: a crash, a kill or a full disk never leaves a half-written file under the
final name (checkpoints, caches, packs, exports and result files all go through here)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform or filesystem supports it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new hidden temp file in ``path``'s folder, with the mode a normal file
    gets there (``0o666 & ~umask``): ``mkstemp`` makes it 0600, and a rename keeps that mode, so
    checkpoints and exports would otherwise be unreadable to the user's group and others."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError:  # filesystems without modes (some mounts): keep what mkstemp made
        pass
    return fd, tmp


def atomic_write(path: str | os.PathLike, data: bytes | None = None, writer: Callable | None = None) -> Path:
    """Write ``data`` (or call ``writer(binary_file)``) to ``path`` atomically.

    The temp file lives in the destination directory so ``os.replace`` is a same-filesystem
    rename; it is flushed and fsynced first; on any failure it is removed and the final name is
    untouched. The file gets the mode the umask gives a normal file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            if writer is not None:
                writer(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def json_default(value):
    """``json.dumps(default=...)`` for what results hold besides JSON types: numpy scalars and
    arrays, paths and tuples (the one encoder of the package; the benchmarks use it too)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy (and torch) scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    if isinstance(value, (os.PathLike, Path)):
        return os.fspath(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = 2) -> Path:
    """``data`` as JSON (plus a newline) written atomically (see :func:`atomic_write`)."""
    return atomic_write(path, (json.dumps(data, indent=indent, default=json_default) + "\n").encode())
