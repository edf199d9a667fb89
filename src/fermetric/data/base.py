"""The in-memory dataset every loader returns.

FER images are small (48-100 px grey), so a whole split is one uint8 array that a GPU run can keep
resident on the device and augment there; loaders decode once and cache (see ``cache.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class ImageSet:
    """One split of a dataset.

    Attributes:
        images: uint8 ``[N, H, W]`` grey images (may be a read-only ``np.memmap``).
        labels: int64 ``[N]``, indices into ``classes``; ``-1`` marks an unlabeled item.
        classes: canonical emotion names (``fermetric.vocab``) in vocabulary order.
        paths: per item, the source file relative to the dataset root (or ``csv:<row>``).
        groups: optional int64 ``[N]`` subject ids, for subject-independent splits.
        soft_labels: optional float32 ``[N, len(classes)]`` label distributions (FER+ votes).
        name, split: where it came from, for messages and result files.
        info: facts a reader records (label mode, fold, skipped files...); numpy arrays with one
            entry per item (e.g. FER+ ``votes``) are per-item and follow the items in ``subset``.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    paths: list[str]
    groups: np.ndarray | None = None
    soft_labels: np.ndarray | None = None
    name: str = ""
    split: str = ""
    root: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N,H,W], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != n or len(self.paths) != n:
            raise ValueError("images, labels and paths must have the same length")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError("groups must have one entry per image")
        if self.soft_labels is not None and self.soft_labels.shape != (n, len(self.classes)):
            raise ValueError("soft_labels must be [N, num_classes]")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])  # type: ignore[return-value]

    def subset(self, index) -> ImageSet:
        """A new ImageSet with the items at ``index`` (bool mask or integer indices)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        n = len(self)
        # per-item arrays in ``info`` (FER+ votes, CK+ sequence ids...) follow their items
        info = {
            k: v[index] if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n else v
            for k, v in self.info.items()
        }
        return replace(
            self,
            images=np.ascontiguousarray(self.images[index]),
            labels=self.labels[index],
            paths=[self.paths[i] for i in index],
            groups=None if self.groups is None else self.groups[index],
            soft_labels=None if self.soft_labels is None else self.soft_labels[index],
            info=info,
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=self.num_classes)
        return {c: int(k) for c, k in zip(self.classes, counts)}


class DataWarning(UserWarning):
    """Something in a dataset was skipped or adjusted (bad rows, missing files, empty folders)."""


#: File name endings treated as images (case-insensitive) by the dataset loaders, ``predict`` and
#: ``index build``; other files in class folders (README, .DS_Store, Thumbs.db, label files) are ignored.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pbm", ".pnm"}
)


def is_image_name(name: str) -> bool:
    """True for a visible file whose extension is an image extension."""
    return not name.startswith(".") and "." in name and name[name.rfind(".") :].lower() in IMAGE_EXTENSIONS
