"""Embedding a dataset and measuring a model on it; ``fermetric eval``.

:func:`embed` runs the deterministic eval path (``preprocessing.apply``) batch by batch on the
device; :func:`evaluate` turns logits and embeddings into the protocol's numbers (see
``metrics.py`` for each metric's definition and defaults).

Decisions and defaults:

* ``tta="flip"`` averages logits and embeddings of the image and its horizontal mirror; every
  result records which TTA was used.
* Items labelled ``-1`` (unlabeled) are left out of every metric.
* Embedding metrics are measured in the space the model's loss trains (``space``, recorded in
  the checkpoint: L2-normalised, MT-DML's per-slice normalised concatenation, or raw for DMSL).
* Nearest-centroid accuracy needs a reference set (the training split): centroids estimated from
  the evaluated images' own labels would leak them, so without a reference it is ``None``.
* ``precision="auto"``: bf16 autocast on CUDA and on CPUs with native bf16 (as in training),
  fp32 elsewhere; outputs are float32.
* A dataset evaluated by a model with a different class list is mapped by canonical class names
  when the dataset's classes are a subset of the model's (:func:`align_classes`); predictions still
  range over all the model's classes (a wrong prediction of a class the dataset lacks counts as
  wrong). Anything else is refused with a CheckpointError.
* **Crop side** (:func:`crop_side`, :func:`at_crop_side`): a model that learned from smaller
  images than its input (the shipped ones: 48 px faces enlarged to 96) is shown larger images
  averaged down to that training side first, then enlarged by ``Preprocessing`` as in training,
  so it never sees detail finer than it learned from (``fermetric eval --crop-resolution``,
  ``Predictor(crop_resolution=...)``; docs/RESULTS.md, "Face crop resolution"). Datasets at the
  training side (FER2013, FER+, CK+48 for the shipped models) are unchanged by it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..data.transforms import Preprocessing
from ..errors import CheckpointError, ConfigError
from ..losses.space import L2
from . import metrics as M
from .precision import autocast, resolve_precision

TTA_MODES = ("none", "flip")
CROP_RESOLUTIONS = ("train", "input")  # the side faces are shown at before Preprocessing


def crop_side(meta: dict, crop_resolution: str = "train") -> int:
    """The side (px) a face is rendered at before ``Preprocessing`` resizes it: with ``"train"``
    the side of the training images (``meta["train_image_size"]``, recorded by training) when the
    checkpoint has it, else (and with ``"input"``) the model's input size."""
    if crop_resolution not in CROP_RESOLUTIONS:
        raise ConfigError(f"crop_resolution must be one of {', '.join(CROP_RESOLUTIONS)}, got {crop_resolution!r}")
    trained_at = meta.get("train_image_size")
    if crop_resolution == "train" and trained_at:
        return int(trained_at)
    return int(meta["preprocessing"]["size"])


def at_crop_side(images: np.ndarray, side: int, input_size: int) -> np.ndarray:
    """uint8 ``[N, H, W]`` images (or one ``[H, W]``) averaged down (``INTER_AREA``) to ``side`` x
    ``side`` when ``side`` is below both their size and ``input_size``; otherwise the same array,
    for ``Preprocessing`` to resize as usual."""
    import cv2

    height, width = images.shape[-2:]
    if not side < min(input_size, max(height, width)):
        return images
    if images.ndim == 2:
        return cv2.resize(images, (side, side), interpolation=cv2.INTER_AREA)
    out = np.empty((len(images), side, side), np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
    return out


def shown_as_trained(imageset, meta: dict, crop_resolution: str = "train"):
    """``imageset`` as the checkpoint of ``meta`` is shown it (:func:`at_crop_side` at
    :func:`crop_side`): ``fermetric eval`` and the benchmarks that score datasets use it."""
    from dataclasses import replace

    side = crop_side(meta, crop_resolution)
    return replace(imageset, images=at_crop_side(imageset.images, side, int(meta["preprocessing"]["size"])))


class ReferenceEmbeddings(NamedTuple):
    """A reference set already embedded (:func:`embed_reference`): evaluating several splits
    against one training set embeds it once."""

    embeddings: np.ndarray
    labels: np.ndarray
    name: str


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise ConfigError(f"unknown tta {tta!r}; use one of {', '.join(TTA_MODES)}")
    return tta


@torch.no_grad()
def embed(
    model: torch.nn.Module,
    imageset,
    preprocessing,
    device="cpu",
    batch_size: int = 512,
    tta: str = "none",
    precision: str = "auto",
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N,C], embeddings [N,D])`` as float32 numpy arrays, in the set's order.

    ``precision`` follows :func:`fermetric.engine.precision.resolve_precision` (``auto``: bf16 on
    CUDA and on CPUs with native bf16, fp32 elsewhere); outputs are float32 either way.
    ``progress`` (optional) is called with the number of images of each finished batch.
    """
    check_tta(tta)
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    was_training = model.training
    if was_training:  # eval()/train() walk every module: milliseconds per call for one photo's face
        model.eval()
    images = imageset.images if hasattr(imageset, "images") else imageset
    logits_out, embeddings_out = [], []
    try:
        for start in range(0, len(images), batch_size):
            chunk = np.ascontiguousarray(images[start : start + batch_size])
            if not chunk.flags.writeable:  # a memory-mapped, read-only cache: torch warns on (and must not alias) it
                chunk = chunk.copy()
            batch = torch.from_numpy(chunk).to(device, non_blocking=True)
            x = preprocessing.apply(batch)
            views = [x, x.flip(-1)] if tta == "flip" else [x]
            logits = embedding = 0
            for view in views:
                with autocast(device, precision):
                    out = model(view)
                logits = logits + out["logits"].float()
                embedding = embedding + out["embedding"].float()
            logits_out.append((logits / len(views)).cpu())
            embeddings_out.append((embedding / len(views)).cpu())
            if progress is not None:
                progress(len(chunk))
    finally:
        if was_training:
            model.train()
    if not logits_out:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(logits_out).numpy(), torch.cat(embeddings_out).numpy()


def embed_reference(model: torch.nn.Module, reference, preprocessing, device="cpu", **options) -> ReferenceEmbeddings:
    """The raw embeddings and labels of ``reference``'s labelled images, named ``dataset/split``
    (``options``: :func:`embed`'s)."""
    keep = np.flatnonzero(np.asarray(reference.labels) >= 0)
    reference = reference if len(keep) == len(reference) else reference.subset(keep)
    _, embeddings = embed(model, reference, preprocessing, device, **options)
    name = f"{reference.name or 'reference'}/{reference.split or '?'}"
    return ReferenceEmbeddings(embeddings, np.asarray(reference.labels, np.int64), name)


def evaluate(
    model: torch.nn.Module,
    imageset,
    preprocessing,
    device="cpu",
    tta: str = "none",
    reference=None,
    batch_size: int = 512,
    knn_k: int = 5,
    embedding_metrics: bool = True,
    space=None,
    precision: str = "auto",
    progress=None,
    keep_predictions: bool = False,
    logit_offset: np.ndarray | None = None,
) -> dict:
    """The protocol's metrics of ``model`` on ``imageset`` (labels in the model's class order).

    Args:
        reference: the set whose embeddings k-NN and centroids use: an ImageSet (embedded here,
            typically the clean training set), a :class:`ReferenceEmbeddings` (embedded once for
            several calls), or a tuple ``(embeddings, labels)`` of raw embeddings. ``None``: k-NN
            and the retrieval metrics are leave-one-out on ``imageset`` itself, and nearest-centroid accuracy is not computed (centroids from the evaluated
            labels would leak them into the prediction): ``centroid_accuracy`` is then ``None``.
        space: the :class:`~fermetric.losses.EmbeddingSpace` every distance is measured in (the
            one the model's loss trained; ``None``: L2-normalised, the cross-entropy convention).
        embedding_metrics: ``False`` skips k-NN, centroid, precision@1, MAP@R and NMI (training
            uses it for the cheap per-epoch validation).
        progress: called with the number of images of each embedded batch (set and reference).
        keep_predictions: also return ``predictions`` and ``labels`` (class indices of every
            labelled image, in dataset order), so that two models can be compared image by image
            (:func:`~fermetric.engine.metrics.paired_bootstrap`).
        logit_offset: added to every logit before the argmax: predicting under another class
            prior (:func:`fermetric.engine.priors.logit_offset`); embeddings are unchanged.
    Returns:
        ``accuracy, macro_f1, per_class_recall, confusion, classes, knn_accuracy, knn_k,
        centroid_accuracy, precision_at_1, map_at_r, nmi, n, tta, reference``.
    """
    check_tta(tta)
    labeled = np.flatnonzero(np.asarray(imageset.labels) >= 0)
    evaluated = imageset if len(labeled) == len(imageset) else imageset.subset(labeled)
    space = space if space is not None else L2
    logits, embeddings = embed(model, evaluated, preprocessing, device, batch_size, tta, precision, progress)
    embeddings = space(embeddings)
    if logit_offset is not None:
        logits = logits + logit_offset
    labels = np.asarray(evaluated.labels, dtype=np.int64)
    if len(labels) and logits.shape[1] != len(evaluated.classes):
        raise CheckpointError(
            f"the model predicts {logits.shape[1]} classes but {evaluated.name or 'the dataset'} has "
            f"{len(evaluated.classes)}; map the dataset with align_classes() first"
        )
    result = M.classification_metrics(labels, logits.argmax(axis=1) if len(labels) else labels, evaluated.classes)
    result["classes"] = list(evaluated.classes)
    result.update(
        {
            "knn_accuracy": None,
            "knn_k": knn_k,
            "centroid_accuracy": None,
            "precision_at_1": None,
            "map_at_r": None,
            "nmi": None,
        }
    )
    reference_name = "leave-one-out"
    if embedding_metrics and len(labels):
        ref_x = ref_y = None
        if reference is not None:
            if not isinstance(reference, tuple):
                reference = embed_reference(
                    model,
                    reference,
                    preprocessing,
                    device,
                    batch_size=batch_size,
                    tta=tta,
                    precision=precision,
                    progress=progress,
                )
            if isinstance(reference, ReferenceEmbeddings):
                ref_x, ref_y, reference_name = reference
            else:
                (ref_x, ref_y), reference_name = reference, "reference embeddings"
            ref_x, ref_y = space(np.asarray(ref_x, np.float32)), np.asarray(ref_y, np.int64)
        result["knn_accuracy"] = M.knn_accuracy(embeddings, labels, ref_x, ref_y, k=knn_k, normalize=False)
        if ref_x is not None:
            result["centroid_accuracy"] = M.centroid_accuracy(embeddings, labels, ref_x, ref_y, normalize=False)
        result.update(M.retrieval_metrics(embeddings, labels, ref_x, ref_y, normalize=False))
    if keep_predictions:
        result["predictions"] = (logits.argmax(axis=1) if len(labels) else labels).astype(int).tolist()
        result["labels"] = labels.astype(int).tolist()
    result.update(
        {
            "n": int(len(labels)),
            "tta": tta,
            "reference": reference_name if embedding_metrics else None,
            "embedding_space": space.to_dict(),
        }
    )
    return result


def align_classes(imageset, model_classes) -> object:
    """``imageset`` relabelled into the model's class order (by canonical names).

    Identity when the lists are equal; a subset is remapped; a dataset class the model does not
    know is refused with a one-line CheckpointError.
    """
    model_classes = list(model_classes)
    data_classes = list(imageset.classes)
    if data_classes == model_classes:
        return imageset
    missing = [c for c in data_classes if c not in model_classes]
    if missing:
        raise CheckpointError(
            f"the model knows {model_classes} but {imageset.name or 'the dataset'} has class(es) {missing} "
            "it was not trained on; evaluate a model trained on these classes, or pass --classes shared "
            "to score only the classes both have"
        )
    from dataclasses import replace

    mapping = np.array([model_classes.index(c) for c in data_classes], dtype=np.int64)
    labels = np.asarray(imageset.labels, dtype=np.int64)
    new_labels = np.where(labels >= 0, mapping[np.clip(labels, 0, None)], -1)
    soft = None
    if imageset.soft_labels is not None:
        soft = np.zeros((len(labels), len(model_classes)), np.float32)
        soft[:, mapping] = imageset.soft_labels
    return replace(imageset, labels=new_labels, classes=tuple(model_classes), soft_labels=soft)


def restrict_to_classes(imageset, model_classes) -> tuple[object, dict]:
    """``(imageset without the images of classes the model does not know, what was left out)``.

    For scoring a model on a dataset with extra classes (the shipped 7-class model on FER+ or CK+,
    which add ``contempt``): only the classes both have count. The second value,
    ``{"classes": [...], "images": N}``, says what was dropped so that the counts add up.
    """
    model_classes = list(model_classes)
    labels = np.asarray(imageset.labels, dtype=np.int64)
    dropped = [c for c in imageset.classes if c not in model_classes]
    drop_ids = [i for i, c in enumerate(imageset.classes) if c in dropped]
    drop = np.isin(labels, drop_ids)
    left_out = {"classes": dropped, "images": int(drop.sum())}
    if not dropped:
        return imageset, left_out
    kept = imageset.subset(np.flatnonzero(~drop))
    if len(kept) == 0:
        raise CheckpointError(f"{imageset.name or 'the dataset'} shares no class with the model ({model_classes})")
    from dataclasses import replace

    keep_classes = [c for c in imageset.classes if c not in dropped]
    mapping = np.full(len(imageset.classes), -1, dtype=np.int64)
    for new, name in enumerate(keep_classes):
        mapping[list(imageset.classes).index(name)] = new
    old = np.asarray(kept.labels, dtype=np.int64)
    soft = kept.soft_labels
    if soft is not None:
        soft = np.asarray(soft)[:, [list(imageset.classes).index(c) for c in keep_classes]]
    kept = replace(
        kept,
        labels=np.where(old >= 0, mapping[np.clip(old, 0, None)], -1),
        classes=tuple(keep_classes),
        soft_labels=soft,
    )
    return kept, left_out


def preprocessing_from_meta(meta: dict):
    """The eval ``Preprocessing`` a checkpoint was trained with."""
    spec = dict(meta["preprocessing"])
    if hasattr(Preprocessing, "from_dict"):
        return Preprocessing.from_dict(spec)
    return Preprocessing(**spec)


# ------------------------------------------------------------------------------------- output
