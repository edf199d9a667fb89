"""Decode a dataset split once, keep it as a memory-mapped ``.npy`` array.

FER splits are tens of thousands of tiny files; decoding them takes seconds, reading one ``.npy``
takes milliseconds. Design decisions (each with its default):

- **Where**: ``$FERMETRIC_CACHE``, else ``~/.cache/fermetric``. ``FERMETRIC_CACHE=off`` (or
  ``0``, ``none``, ``false``, empty) disables caching; so does the loader option ``cache=False``.
  An unwritable directory only warns: data is then decoded in memory every time.
- **Key**: a SHA-256 over the dataset name, split, the options that change pixels (decode mode,
  target size), a format version, and a fingerprint of the source: the relative paths of the
  files in order with their sizes and modification times (or, for a CSV source, the file's
  path, size and mtime). Any change to the source gives a new key, so a stale entry is never
  read; old entries are left on disk (they are small; delete the folder to reclaim space).
- **Entry**: ``<dataset>-<split>-<key>.npy`` holding uint8 ``[N, H, W]`` and a ``.json`` beside it
  with the key parts, shape, a CRC-32 of the array bytes and loader extras (e.g. which files
  failed to decode). The ``.json`` is written last and acts as the commit marker.
- **Atomic**: both files are written to a temporary name in the same folder, fsynced and
  ``os.replace``d, so concurrent writers (DDP ranks) and interrupted runs never leave a
  half-written entry under the final name.
- **Integrity**: on load, shape, dtype, key parts and CRC-32 are checked (the CRC reads the file
  once, ~50 ms for FER2013); a truncated or corrupt entry is deleted, rebuilt, and never returned.
- **Decoding** many small files runs in a thread pool of ``workers`` threads (default:
  ``min(8, cpu_count)``); PIL releases the GIL while decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError
from ..fileio import atomic_write
from .base import DataWarning
from .imageio import read_image

CACHE_ENV = "FERMETRIC_CACHE"
FORMAT_VERSION = 1
_DISABLED = {"", "0", "off", "none", "false", "no"}


def default_cache_dir() -> Path | None:
    """The cache folder, or ``None`` when caching is switched off through ``$FERMETRIC_CACHE``."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return Path.home() / ".cache" / "fermetric"
    if value.strip().lower() in _DISABLED:
        return None
    return Path(value).expanduser()


def fingerprint_files(root: Path, relpaths: Sequence[str], workers: int | None = None) -> str:
    """SHA-256 over ``relpath, size, mtime_ns`` of each file, in the given order.

    The ``stat`` calls run in a thread pool (they release the GIL; tens of thousands of them
    otherwise dominate a cached load).
    """
    base = os.fspath(root)

    def stat_lines(chunk: Sequence[str]) -> bytes:
        lines = []
        for rel in chunk:
            try:
                st = os.stat(os.path.join(base, rel))
                lines.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n")
            except OSError:  # vanished since listing: decoding reports it as an unreadable file
                lines.append(f"{rel}\0-1\0-1\n")
        return "".join(lines).encode()

    digest = hashlib.sha256()
    for block in map_chunks(stat_lines, relpaths, workers):
        digest.update(block)
    return digest.hexdigest()


def map_chunks(
    fn: Callable[[Sequence], Any], items: Sequence, workers: int | None = None, min_chunk: int = 256
) -> list:
    """``[fn(chunk) for chunk in chunks(items)]`` on a thread pool, results in order.

    Chunks rather than one task per item: the per-task overhead would dominate tiny files.
    """
    workers = workers or default_workers()
    chunk = max(min_chunk, len(items) // (workers * 8) + 1)
    chunks = [items[s : s + chunk] for s in range(0, len(items), chunk)]
    if workers == 1 or len(chunks) <= 1:
        return [fn(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fermetric-data") as pool:
        return list(pool.map(fn, chunks))


def fingerprint_file(path: Path) -> str:
    """SHA-256 over one source file's absolute path, size and mtime (CSV sources)."""
    path = Path(path).resolve()
    st = os.stat(path)
    return hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()


def _checksum(array: np.ndarray) -> str:
    return f"{zlib.crc32(memoryview(np.ascontiguousarray(array)).cast('B')):08x}"


def _safe_label(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


class ArrayCache:
    """A folder of verified, atomically written ``.npy`` arrays keyed by their inputs."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None

    @classmethod
    def default(cls) -> ArrayCache:
        return cls(default_cache_dir())

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def paths(self, parts: Mapping[str, Any], label: str) -> tuple[Path, Path]:
        assert self.directory is not None
        stem = f"{_safe_label(label)}-{self.key(parts)}"
        return self.directory / f"{stem}.npy", self.directory / f"{stem}.json"

    def load(self, parts: Mapping[str, Any], label: str) -> tuple[np.ndarray, dict] | None:
        """The verified entry (array memory-mapped read-only, extras), or None if absent/corrupt."""
        if self.directory is None:
            return None
        npy, meta_path = self.paths(parts, label)
        if not meta_path.exists() or not npy.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            expected = json.loads(json.dumps(dict(parts), sort_keys=True, default=str))
            if meta.get("format") != FORMAT_VERSION or meta.get("parts") != expected:
                raise ValueError("key parts differ")
            array = np.load(npy, mmap_mode="r", allow_pickle=False)
            if array.dtype != np.uint8 or list(array.shape) != meta["shape"]:
                raise ValueError(f"shape/dtype {array.shape} {array.dtype} != {meta['shape']}")
            if _checksum(array) != meta["crc32"]:
                raise ValueError("checksum mismatch")
            return array, meta.get("extra", {})
        except Exception as err:  # truncated, bit-flipped, half-written: rebuild, never use
            warnings.warn(f"{npy}: corrupt cache entry ({err}); rebuilding", DataWarning, stacklevel=3)
            for p in (meta_path, npy):
                try:
                    p.unlink()
                except OSError:
                    pass
            return None

    def save(self, parts: Mapping[str, Any], label: str, array: np.ndarray, extra: dict) -> np.ndarray:
        """Write an entry atomically; return it memory-mapped (or ``array`` if the write failed)."""
        if self.directory is None:
            return array
        array = np.ascontiguousarray(array, dtype=np.uint8)
        npy, meta_path = self.paths(parts, label)
        meta = {
            "format": FORMAT_VERSION,
            "parts": json.loads(json.dumps(dict(parts), sort_keys=True, default=str)),
            "shape": list(array.shape),
            "crc32": _checksum(array),
            "extra": extra,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(npy, writer=lambda f: np.save(f, array, allow_pickle=False))
            atomic_write(meta_path, json.dumps(meta).encode())
        except OSError as err:
            warnings.warn(
                f"cannot write the data cache in {self.directory} ({err.strerror or err}); "
                f"set {CACHE_ENV} to a writable folder",
                DataWarning,
                stacklevel=3,
            )
            return array
        return np.load(npy, mmap_mode="r", allow_pickle=False)

    def get_or_build(
        self, parts: Mapping[str, Any], label: str, build: Callable[[], tuple[np.ndarray, dict]]
    ) -> tuple[np.ndarray, dict]:
        """The cached entry for ``parts``, building and storing it with ``build()`` on a miss."""
        hit = self.load(parts, label)
        if hit is not None:
            return hit
        array, extra = build()
        return self.save(parts, label, array, extra), extra


# ---------------------------------------------------------------------------------------------
# decoding many files


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def normalise_size(size) -> tuple[int, int] | None:
    """``None``, ``48`` or ``(h, w)`` -> ``None`` or ``(h, w)``."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def resize_grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 ``[H, W]`` image to ``(h, w)`` with PIL's antialiased Lanczos filter."""
    if image.shape == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS))


def stack_images(images: Sequence[np.ndarray], size: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """Stack grey images into ``[N, H, W]``; returns (array, how many had to be resized).

    With ``size=None`` images keep their size when they all agree; otherwise they are resized to
    the most common size in the list (ties: the larger), the least surprising common size.
    """
    if not images:
        h, w = size or (0, 0)
        return np.zeros((0, h, w), np.uint8), 0
    if size is None:
        shapes = Counter(im.shape for im in images)
        if len(shapes) == 1:
            return np.stack(images), 0
        size = max(shapes, key=lambda s: (shapes[s], s[0] * s[1], s))
    out = np.empty((len(images), size[0], size[1]), np.uint8)
    resized = 0
    for i, im in enumerate(images):
        if im.shape != size:
            im = resize_grey(im, size)
            resized += 1
        out[i] = im
    return out, resized


def decode_files(
    root: Path,
    relpaths: Sequence[str],
    workers: int | None = None,
) -> tuple[list[np.ndarray | None], list[tuple[str, str]]]:
    """Decode files as grey in a thread pool; returns (images with None where failed, failures).

    A failure is ``(relpath, reason)`` with the one-line :class:`ImageError` message's reason.
    """
    base = os.fspath(root)
    results: list[np.ndarray | None] = [None] * len(relpaths)
    failures: list[tuple[int, str]] = []

    def work(indices: range) -> list[tuple[int, str]]:
        failed = []
        for i in indices:
            path = os.path.join(base, relpaths[i])
            try:
                results[i] = read_image(path, mode="grey")
            except ImageError as err:
                text, prefix = str(err), f"{path}: "
                failed.append((i, text[len(prefix) :] if text.startswith(prefix) else text))
        return failed

    for failed in map_chunks(work, range(len(relpaths)), workers, min_chunk=64):
        failures += failed
    failures.sort()
    return results, [(relpaths[i], reason) for i, reason in failures]


def decode_split(
    dataset: str,
    split: str,
    root: Path,
    relpaths: Sequence[str],
    *,
    size=None,
    cache: bool = True,
    workers: int | None = None,
) -> tuple[np.ndarray, list[tuple[str, str]], int]:
    """Decode a split's files through the cache.

    Returns ``(images, failures, resized)``: ``images`` ``[M, H, W]`` holds the files that decoded,
    in order (``M = len(relpaths) - len(failures)``); ``failures`` lists ``(relpath, reason)``;
    ``resized`` counts images brought to a common size because they differed (``size=None``).
    """
    size = normalise_size(size)
    root = Path(root)

    def build() -> tuple[np.ndarray, dict]:
        decoded, failures = decode_files(root, relpaths, workers)
        images, resized = stack_images([im for im in decoded if im is not None], size)
        # only an implicit resize (sizes differ, no size= given) is worth a warning
        return images, {"failures": [list(f) for f in failures], "resized": resized if size is None else 0}

    store = ArrayCache.default() if cache else ArrayCache(None)
    if store.directory is None:
        images, extra = build()
    else:
        parts = {
            "dataset": dataset,
            "split": split,
            "mode": "grey",
            "size": size,
            "source": fingerprint_files(root, relpaths),
            "count": len(relpaths),
        }
        images, extra = store.get_or_build(parts, f"{dataset}-{split}", build)
    return images, [tuple(f) for f in extra["failures"]], int(extra.get("resized", 0))
