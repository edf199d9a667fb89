"""Nearest-expression retrieval: a faiss index over a model's face embeddings.

``fermetric index build --checkpoint C --data fer2013=ROOT --split train --out my.index`` embeds a
dataset split (or any folder of images) once; ``fermetric index query my.index photo.jpg -k 10
--sheet sheet.png`` finds the faces whose expressions are nearest to the face in a photo.

Design decisions (defaults stated):

* **Metric**: Euclidean distance in the embedding space the model's loss trained (recorded in
  the checkpoint and in ``meta.json`` as ``embedding_space``: L2-normalised for cross-entropy,
  TCL and EMLF, per-slice normalised for MT-DML, raw for DMSL), searched exactly with
  ``faiss.IndexFlatL2``. Reported distances are true Euclidean distances (faiss returns squared
  ones), in ``[0, 2]`` on the unit sphere; an image that is in the index finds itself at ~0. Exact search is fast enough for FER-sized
  sets (30k x 512 floats: about 10 ms per query on a CPU).
* **What is stored** (one directory, written atomically: a temporary sibling directory renamed
  into place): ``index.faiss`` (the faiss index), ``items.npz`` (``embeddings`` in that space,
  ``labels`` (-1: unknown), ``paths``, and ``thumbnails``: the grey crops that were embedded,
  at the side faces are cropped at for folders (the predictor's ``crop_size``), so contact sheets
  work without the original files) and ``meta.json`` (the checkpoint it was built with, its meta,
  a fingerprint of the model weights, the crop side, the data source).
* **One model per index**: a query must use the model that built the index, its test-time
  augmentation and its crop side; each is checked and a mismatch is a one-line error.
* **Data**: a dataset split (``DATASET=ROOT``, through ``load_dataset``; its crops are embedded
  as ``fermetric eval`` does) or a folder of images (recursive). In a folder, images under a
  directory named after an emotion (``happy/``, ``Anger/``...) are labelled with it and the
  rest are unknown; ``detect=False`` (default) takes every image as one face crop, ``detect=True``
  indexes every face found in photos (paths ``file.jpg#face0``).
* **Query**: the largest detected face of the query image (or the whole image with
  ``detect=False``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .. import vocab
from .._version import __version__
from ..data import load_dataset, parse_data_arg
from ..data.base import IMAGE_EXTENSIONS, DataWarning
from ..data.faces import DEFAULT_DETECTOR
from ..data.imageio import to_array
from ..engine.checkpoint import state_digest
from ..engine.evaluate import at_crop_side, embed
from ..errors import CheckpointError, ConfigError, DataError, ImageError
from ..fileio import json_default
from ..losses.space import EmbeddingSpace, space_of_meta
from ..predict import Predictor, expand_paths
from ..reports.sheets import image_grid

__all__ = ["EmbeddingIndex", "Neighbor", "contact_sheet", "model_fingerprint"]

FORMAT_VERSION = 2  # 2: model_fingerprint is the checkpoints' state digest
INDEX_FILE, ITEMS_FILE, META_FILE = "index.faiss", "items.npz", "meta.json"


class Neighbor(NamedTuple):
    """One retrieval result: ``path`` (relative to the data root), ``label`` (class name or
    ``None``), ``distance`` (Euclidean, in the index's embedding space)."""

    path: str
    label: str | None
    distance: float


def model_fingerprint(model) -> str:
    """ "The same weights": the digest checkpoints carry (:func:`~fermetric.engine.checkpoint.state_digest`)."""
    return state_digest(model.state_dict())


def _in_space(embeddings: np.ndarray, space: EmbeddingSpace) -> np.ndarray:
    return np.ascontiguousarray(space(np.asarray(embeddings, dtype=np.float32)), dtype=np.float32)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError("retrieval needs faiss: pip install faiss-cpu") from None
    return faiss


class EmbeddingIndex:
    """Face embeddings in their model's space, with their paths, labels and crops, searchable with faiss.

    Args:
        embeddings: float ``[N, D]`` raw model embeddings (mapped into ``meta["embedding_space"]``
            here: the space the model's loss trained, L2-normalised when absent).
        paths: ``N`` item names (unique).
        labels: int ``[N]`` indices into ``classes``; ``-1`` for unknown.
        classes: class names the labels index.
        meta: ``checkpoint``, ``model_meta``, ``model_fingerprint``, ``data`` (see the module notes).
        thumbnails: optional uint8 ``[N, h, w]`` crops that were embedded.
    """

    def __init__(self, embeddings, paths, labels, classes, meta: dict | None = None, thumbnails=None) -> None:
        self.meta = dict(meta or {})
        self.space = EmbeddingSpace.from_dict(self.meta.get("embedding_space"))
        self.embeddings = _in_space(embeddings, self.space)
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.classes = tuple(classes)
        self.thumbnails = None if thumbnails is None else np.asarray(thumbnails, dtype=np.uint8)
        n = len(self.embeddings)
        if len(self.paths) != n or len(self.labels) != n or (self.thumbnails is not None and len(self.thumbnails) != n):
            raise ValueError("embeddings, paths, labels and thumbnails must have one entry per item")
        self._position = {}
        for i, path in enumerate(self.paths):
            self._position.setdefault(path, i)
        self._faiss_index = None
        self._predictor = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0

    def __repr__(self) -> str:
        return f"EmbeddingIndex(n={len(self)}, dim={self.dim}, classes={list(self.classes)}, data={self.meta.get('data')!r})"

    @property
    def faiss_index(self):
        if self._faiss_index is None:
            index = _faiss().IndexFlatL2(self.dim)
            index.add(self.embeddings)
            self._faiss_index = index
        return self._faiss_index

    def label_name(self, label: int) -> str | None:
        return self.classes[label] if 0 <= label < len(self.classes) else None

    # ------------------------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        checkpoint,
        data,
        split: str = "train",
        device="cpu",
        detect: bool = False,
        detector: str = DEFAULT_DETECTOR,
        precision: str = "auto",
        progress=None,
        **dataset_options,
    ) -> EmbeddingIndex:
        """Embed a dataset split or a folder with a model.

        Args:
            checkpoint: a checkpoint source (``"default"``, run dir, file) or a ``Predictor``.
            data: an ``ImageSet``, ``"DATASET=ROOT"``, or a folder of images.
            split: the dataset split (ignored for an ImageSet or a folder).
            detect: folders only: index every detected face instead of whole images.
            precision: ``auto`` | ``bf16`` | ``fp32`` for a checkpoint source (a ``Predictor`` keeps its own).
            progress: called with the number of images done (dataset batches, folder files).
        """
        predictor = (
            checkpoint
            if isinstance(checkpoint, Predictor)
            else Predictor.load(checkpoint, device=device, detector=detector, precision=precision)
        )
        if isinstance(data, (str, os.PathLike)) and "=" in str(data) and not Path(data).exists():
            name, root = parse_data_arg(str(data))
            data = load_dataset(name, root, split=split, **dataset_options)
        if isinstance(data, (str, os.PathLike)):
            root = Path(data)
            if not root.is_dir():
                raise DataError(
                    f"{root} is neither a folder nor DATASET=ROOT; pass e.g. fer2013=../data/fer2013 or a folder of images"
                )
            crops, paths, labels, classes = _folder_items(predictor, root, detect, progress)
            _, embeddings = predictor.run_crops(crops)  # whole images keep their own size here
            size = predictor.crop_size  # thumbnails at the side faces are cropped at
            crops = (
                np.stack(
                    [
                        c if c.shape == (size, size) else cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
                        for c in crops
                    ]
                )
                if crops
                else np.zeros((0, size, size), np.uint8)
            )
            source = {"kind": "folder", "root": str(root.resolve()), "detect": detect}
        else:
            # shown as the predictor shows a face: larger images averaged down to its crop side
            crops = at_crop_side(data.images, predictor.crop_size, predictor.input_size)
            paths, labels, classes = list(data.paths), data.labels, data.classes
            _, embeddings = embed(
                predictor.inference_model,
                crops,
                predictor.preprocessing,
                predictor.device,
                predictor.batch_size,
                tta=predictor.tta,
                precision=predictor.precision,
                progress=progress,
            )
            source = {"kind": "dataset", "name": data.name, "split": data.split, "root": str(data.root)}
        space = space_of_meta(predictor.meta)
        if len(paths) == 0:
            raise DataError(
                f"nothing to index in {source.get('root')}: no readable image" + (" with a face" if detect else "")
            )
        meta = {
            "format": FORMAT_VERSION,
            "fermetric_version": __version__,
            "checkpoint": _source_string(predictor.source),
            "model_fingerprint": predictor.fingerprint,
            "model_meta": predictor.meta,
            "tta": predictor.tta,  # queries are embedded the same way
            "crop_size": predictor.crop_size,  # and faces cropped at the same side
            "data": source,
            "embedding_space": space.to_dict(),
            "metric": f"{space.describe()} (faiss IndexFlatL2)",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        index = cls(embeddings, paths, labels, classes, meta, thumbnails=crops)
        index._predictor = predictor
        return index

    # ------------------------------------------------------------------------------ search
    def search(self, embeddings: np.ndarray, k: int = 10) -> list[list[Neighbor]]:
        """The ``k`` nearest items of each query embedding ``[Q, D]`` (raw; mapped into the index's space here)."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        queries = _in_space(np.atleast_2d(embeddings), self.space)
        if queries.shape[1] != self.dim:
            raise CheckpointError(
                f"query embeddings have {queries.shape[1]} dimensions but the index has {self.dim}; "
                "query with the model that built the index"
            )
        k = min(k, len(self))
        squared, positions = self.faiss_index.search(queries, k)
        return [
            [
                Neighbor(self.paths[p], self.label_name(int(self.labels[p])), float(math.sqrt(max(d, 0.0))))
                for d, p in zip(row_d, row_p)
                if p >= 0
            ]
            for row_d, row_p in zip(squared, positions)
        ]

    def predictor(self, device="cpu"):
        """The model that built the index (loaded from the recorded checkpoint on first use)."""
        if self._predictor is None:
            source = self.meta.get("checkpoint", "default")
            try:
                predictor = Predictor.load(
                    source,
                    device=device,
                    tta=self.meta.get("tta", "none"),
                    crop_resolution=self._crop_resolution(),
                )
            except CheckpointError as err:
                raise CheckpointError(
                    f"this index was built with checkpoint {source}, which cannot be loaded ({err}); rebuild the index"
                ) from None
            self.check_predictor(predictor)
            self._predictor = predictor
        return self._predictor

    def _built_crop_size(self) -> int | None:
        """The side faces were cropped at (indexes before it was recorded: the model's input size)."""
        if "crop_size" in self.meta:
            return int(self.meta["crop_size"])
        size = ((self.meta.get("model_meta") or {}).get("preprocessing") or {}).get("size")
        return None if size is None else int(size)

    def _crop_resolution(self) -> str:
        """The ``Predictor`` ``crop_resolution`` that reproduces the index's crops."""
        trained_at = (self.meta.get("model_meta") or {}).get("train_image_size")
        return "train" if trained_at is not None and int(trained_at) == self._built_crop_size() else "input"

    def check_predictor(self, predictor) -> None:
        built_tta = self.meta.get("tta", "none")
        if predictor.tta != built_tta:
            raise ConfigError(
                f"this index was built with tta={built_tta!r}; query with a predictor using the same "
                f"(got tta={predictor.tta!r})"
            )
        expected = self.meta.get("model_fingerprint")
        if expected and predictor.fingerprint != expected:
            raise CheckpointError(
                f"the model {predictor.source or ''} is not the one this index was built with "
                f"({self.meta.get('checkpoint')}); query with that model or rebuild the index"
            )
        # Same weights with another preprocessing (size, mean/std) embed queries differently too.
        built = (self.meta.get("model_meta") or {}).get("preprocessing")
        if built is not None and built != predictor.meta.get("preprocessing"):
            raise CheckpointError(
                f"the model {predictor.source or ''} has preprocessing "
                f"{predictor.meta.get('preprocessing')} but this index was built with {built}; "
                "query with the model the index was built with or rebuild the index"
            )
        built_crop_size = self._built_crop_size()
        if built_crop_size is not None and predictor.crop_size != built_crop_size:
            raise ConfigError(
                f"this index was built from {built_crop_size} px face crops but the predictor crops "
                f"{predictor.crop_size} px; load it with crop_resolution={self._crop_resolution()!r}"
            )

    def query_crop(self, image, detect: bool = True, predictor=None, channel_order: str = "rgb") -> np.ndarray:
        """The grey crop that represents ``image`` in a query (largest face, or the whole image)."""
        predictor = predictor or self.predictor()
        faces = predictor.faces(image, detect=detect, channel_order=channel_order)
        if not faces:
            name = image if isinstance(image, (str, os.PathLike)) else "the query image"
            raise ImageError(f"{name}: no face found; pass --no-detect (detect=False) if it is already a face crop")
        return max(faces, key=lambda fc: fc[0].area)[1]

    def query(
        self, image, k: int = 10, detect: bool = True, predictor=None, channel_order: str = "rgb"
    ) -> list[Neighbor]:
        """``[(path, label, distance)]`` of the ``k`` items nearest to the (largest) face in ``image``."""
        predictor = predictor or self.predictor()
        if predictor is not self._predictor:
            self.check_predictor(predictor)
        crop = self.query_crop(image, detect, predictor, channel_order)
        _, embedding = predictor.run_crops(crop[None])
        return self.search(embedding, k)[0]

    def contact_sheet(self, query_image, results: list[Neighbor], out_png: str | os.PathLike) -> Path:
        """A PNG grid: the query, then each result's embedded crop with its label and distance."""
        tiles = []
        for result in results:
            position = self._position.get(result.path)
            tiles.append(None if position is None or self.thumbnails is None else self.thumbnails[position])
        return contact_sheet(query_image, results, out_png, tiles)

    # ------------------------------------------------------------------------------- files
    def save(self, out: str | os.PathLike) -> Path:
        """Write the index directory atomically (a complete old index is replaced only at the end)."""
        out = Path(out)
        if out.exists() and not (out.is_dir() and ((out / META_FILE).is_file() or not any(out.iterdir()))):
            raise ConfigError(f"{out} exists and is not a fermetric index; choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _faiss().write_index(self.faiss_index, str(tmp / INDEX_FILE))
            arrays = {
                "embeddings": self.embeddings,
                "labels": self.labels,
                "paths": np.array(self.paths, dtype=str),
                "classes": np.array(self.classes, dtype=str),
            }
            if self.thumbnails is not None:
                arrays["thumbnails"] = self.thumbnails
            with open(tmp / ITEMS_FILE, "wb") as handle:
                np.savez(handle, **arrays)
            meta = {**self.meta, "count": len(self), "dim": self.dim}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
            for name in (INDEX_FILE, ITEMS_FILE, META_FILE):
                with open(tmp / name, "rb") as handle:
                    os.fsync(handle.fileno())
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        except OSError as err:
            raise ConfigError(
                f"cannot write index {out}: {err.strerror or err}; check free space and permissions"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingIndex:
        path = Path(path)
        if not path.exists():
            raise DataError(f"index {path} does not exist; build one with `fermetric index build --out {path}`")
        if not (path / META_FILE).is_file():
            raise DataError(f"{path} is not a fermetric index (no {META_FILE}); build one with `fermetric index build`")
        try:
            meta = json.loads((path / META_FILE).read_text())
            with np.load(path / ITEMS_FILE, allow_pickle=False) as items:
                arrays = {k: items[k] for k in items.files}
            faiss_index = _faiss().read_index(str(path / INDEX_FILE))
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise DataError(f"index {path} is incomplete or corrupt ({type(err).__name__}); rebuild it") from None
        if meta.get("format", 1) > FORMAT_VERSION:
            raise DataError(f"index {path} was written by fermetric {meta.get('fermetric_version')}; upgrade fermetric")
        if meta.get("format", 1) < FORMAT_VERSION:
            raise DataError(
                f"index {path} was written by an older fermetric ({meta.get('fermetric_version')}, format "
                f"{meta.get('format', 1)}); rebuild it with `fermetric index build`"
            )
        index = cls(
            arrays["embeddings"],
            arrays["paths"].tolist(),
            arrays["labels"],
            arrays["classes"].tolist(),
            meta,
            thumbnails=arrays.get("thumbnails"),
        )
        if faiss_index.ntotal != len(index) or faiss_index.d != index.dim:
            raise DataError(
                f"index {path} is inconsistent ({faiss_index.ntotal} vectors for {len(index)} items); rebuild it"
            )
        index._faiss_index = faiss_index
        return index


def _source_string(source: str) -> str:
    """A checkpoint source that still resolves from another working directory."""
    if source in ("", "default"):
        return source or "default"
    return str(Path(source).resolve())


def _folder_label(relative: Path) -> str | None:
    """The canonical emotion of the nearest enclosing folder named after one, else None."""
    for part in reversed(relative.parts[:-1]):
        try:
            return vocab.canonical(part)
        except KeyError:
            continue
    return None


def _folder_items(predictor, root: Path, detect: bool, progress=None):
    """``(grey crops, paths, labels, classes)`` of the images under ``root``."""
    files, _ = expand_paths([root])
    crops, paths, names = [], [], []
    skipped = 0
    for path, _root in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            faces = predictor.faces(path, detect=detect)
        except ImageError:
            skipped += 1
            continue
        finally:
            if progress is not None:
                progress(1)
        relative = path.relative_to(root)
        for i, (_face, crop) in enumerate(faces):
            crops.append(crop)
            paths.append(relative.as_posix() + (f"#face{i}" if detect else ""))
            names.append(_folder_label(relative))
    if skipped:
        warnings.warn(f"skipped {skipped} unreadable image(s) under {root}", DataWarning, stacklevel=2)
    classes = vocab.ordered({n for n in names if n is not None})
    labels = np.array([classes.index(n) if n is not None else -1 for n in names], dtype=np.int64)
    return crops, paths, labels, classes


def contact_sheet(
    query_image, results: list[Neighbor], out_png: str | os.PathLike, tiles=None, columns: int = 6, tile_size: int = 112
) -> Path:
    """The query, then one tile per result captioned with its rank, label and distance
    (:func:`~fermetric.reports.sheets.image_grid`); ``tiles``: the results' crops (``None``: blank)."""
    tiles = list(tiles) if tiles is not None else [None] * len(results)
    captions = ["query"] + [f"{i}. {r.label or '?'}\nd={r.distance:.3f}" for i, r in enumerate(results, 1)]
    query = (
        query_image
        if isinstance(query_image, np.ndarray) and query_image.ndim == 2
        else to_array(query_image, mode="grey")
    )
    return image_grid([query, *tiles], captions, out_png, columns=columns, tile_size=tile_size, highlight={0})
