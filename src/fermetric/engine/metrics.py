"""Evaluation metrics on predictions and embeddings (numpy in, plain Python out).

Classification metrics come from scikit-learn; retrieval metrics (precision@1, MAP@R, NMI of
k-means) from pytorch-metric-learning's ``AccuracyCalculator`` (faiss underneath); k-NN and
nearest-centroid classification use faiss directly. Where faiss is not installed (the GPU
machines' images), exact torch search and scikit-learn k-means take its place. Decisions and
defaults:

* Embeddings are L2-normalised before any distance (``normalize=True``): every fermetric loss
  measures Euclidean distance on normalised embeddings (methods.md), so retrieval does too.
* Without a reference set, k-NN and retrieval are leave-one-out on the evaluated set itself
  (each query's own entry is excluded); centroids are then the set's own class means.
* k-NN (default k=5) is a majority vote; a tie goes to the tied class with the nearest voter.
* ``per_class_recall`` is ``None`` for a class with no items (recall is undefined there);
  ``macro_f1`` averages over the classes present in the labels or the predictions (scikit-learn's
  default), so a dataset without some vocabulary class is not penalised for it.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..losses.dmsl import class_centroids, nearest_centroid_predict
from ..losses.functional import l2_normalize

__all__ = [
    "classification_metrics",
    "knn_accuracy",
    "centroid_accuracy",
    "retrieval_metrics",
]


def _unit(x) -> np.ndarray:
    return l2_normalize(np.asarray(x, dtype=np.float32))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes) -> dict:
    """accuracy, macro_f1, per_class_recall (by class name) and the confusion matrix (rows: true)."""
    from sklearn.metrics import confusion_matrix, f1_score

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    classes = list(classes)
    if len(y_true) == 0:
        return {
            "accuracy": None,
            "macro_f1": None,
            "per_class_recall": {c: None for c in classes},
            "confusion": [[0] * len(classes) for _ in classes],
        }
    confusion = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    support = confusion.sum(axis=1)
    recall = {name: (float(confusion[i, i] / support[i]) if support[i] else None) for i, name in enumerate(classes)}
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class_recall": recall,
        "confusion": confusion.tolist(),
    }


def _faiss():
    """faiss when installed (always on CPU installs); None on machines that lack it (the GPU images)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _search(reference: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 search: squared distances and indices ``[Nq, k]``, nearest first."""
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    query = np.ascontiguousarray(query, dtype=np.float32)
    faiss = _faiss()
    if faiss is not None:
        index = faiss.IndexFlatL2(reference.shape[1])
        index.add(reference)
        return index.search(query, k)
    import torch

    distances = torch.cdist(torch.from_numpy(query), torch.from_numpy(reference)).square_()
    found = distances.topk(k, dim=1, largest=False)  # sorted, nearest first
    return found.values.numpy(), found.indices.numpy()


class _SklearnKMeans:
    """PML ``kmeans_func`` on scikit-learn, for machines without faiss (fixed seed: reproducible NMI)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, x, num_clusters: int):
        import torch
        from sklearn.cluster import KMeans

        labels = KMeans(num_clusters, n_init=1, random_state=self.seed).fit_predict(x.cpu().numpy())
        return torch.from_numpy(labels).to(x.device)


def _neighbours(query, reference, k: int, leave_one_out: bool) -> np.ndarray:
    """Indices ``[Nq, k]`` of each query's nearest references, its own entry excluded if LOO."""
    if not leave_one_out:
        return _search(reference, query, k)[1]
    _, found = _search(reference, query, k + 1)
    own = found == np.arange(len(query))[:, None]
    # Duplicates can push a query's own index out of the first k+1: then drop the farthest one.
    own[~own.any(axis=1), -1] = True
    return found[~own].reshape(len(query), k)


def knn_accuracy(
    query, query_labels, reference=None, reference_labels=None, k: int = 5, normalize: bool = True
) -> float | None:
    """Accuracy of a k-nearest-neighbour majority vote in the embedding."""
    query_labels = np.asarray(query_labels, dtype=np.int64)
    leave_one_out = reference is None
    if leave_one_out:
        reference, reference_labels = query, query_labels
    reference_labels = np.asarray(reference_labels, dtype=np.int64)
    k = min(k, len(reference) - (1 if leave_one_out else 0))
    if len(query) == 0 or k < 1:
        return None
    if normalize:
        query, reference = _unit(query), _unit(reference)
    found = _neighbours(query, reference, k, leave_one_out)
    neighbour_labels = reference_labels[found]  # [Nq, k], nearest first
    num_classes = int(max(query_labels.max(), reference_labels.max())) + 1
    rows = np.repeat(np.arange(len(query)), k)
    counts = np.zeros((len(query), num_classes), np.int64)
    np.add.at(counts, (rows, neighbour_labels.ravel()), 1)
    first_rank = np.full((len(query), num_classes), k, np.int64)
    np.minimum.at(first_rank, (rows, neighbour_labels.ravel()), np.tile(np.arange(k), len(query)))
    # Most votes first; among equal counts, the class whose nearest voter ranks first.
    votes = counts * (k + 1) + (k - first_rank)
    return float(np.mean(votes.argmax(axis=1) == query_labels))


def centroid_accuracy(
    query, query_labels, reference=None, reference_labels=None, normalize: bool = True
) -> float | None:
    """Accuracy of nearest class centroid (Euclidean); centroids are reference class means.

    The centroids and the nearest-centroid rule are DMSL's own (``losses/dmsl.py``), so this
    metric and the DMSL predictor cannot disagree.
    """
    query_labels = np.asarray(query_labels, dtype=np.int64)
    if reference is None:
        reference, reference_labels = query, query_labels
    reference_labels = np.asarray(reference_labels, dtype=np.int64)
    if len(query) == 0 or len(reference) == 0:
        return None
    if normalize:
        query, reference = _unit(query), _unit(reference)
    import torch

    num_classes = int(max(reference_labels.max(), query_labels.max())) + 1
    centroids = class_centroids(
        torch.from_numpy(np.asarray(reference, np.float32)), torch.from_numpy(reference_labels), num_classes
    )
    predicted = nearest_centroid_predict(torch.from_numpy(np.asarray(query, np.float32)), centroids).numpy()
    return float(np.mean(predicted == query_labels))


def retrieval_metrics(query, query_labels, reference=None, reference_labels=None, normalize: bool = True) -> dict:
    """precision_at_1, map_at_r and nmi (k-means with one cluster per class) from PML."""
    import torch
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN, FaissKMeans

    empty = {"precision_at_1": None, "map_at_r": None, "nmi": None}
    query_labels = np.asarray(query_labels, dtype=np.int64)
    if len(query) < 2 or (reference is not None and len(reference) == 0):
        return empty
    if normalize:
        query = _unit(query)
        reference = None if reference is None else _unit(reference)
    if _faiss() is not None:
        # faiss's k-means: fixed seed (reproducible NMI), and no "too few points per centroid"
        # warning on small sets; PML's default k-NN is faiss too.
        backends = {"kmeans_func": FaissKMeans(seed=1234, min_points_per_centroid=1)}
    else:
        backends = {
            "kmeans_func": _SklearnKMeans(seed=1234),
            "knn_func": CustomKNN(LpDistance(normalize_embeddings=False), batch_size=1024),
        }
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "NMI"),
        k="max_bin_count",
        device=torch.device("cpu"),
        **backends,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PML warns about classes with a single member, etc.
        if reference is None:
            result = calculator.get_accuracy(torch.from_numpy(query), torch.from_numpy(query_labels))
        else:
            result = calculator.get_accuracy(
                torch.from_numpy(query),
                torch.from_numpy(query_labels),
                torch.from_numpy(np.asarray(reference, dtype=np.float32)),
                torch.from_numpy(np.asarray(reference_labels, dtype=np.int64)),
                ref_includes_query=False,
            )
    return {
        "precision_at_1": float(result["precision_at_1"]),
        "map_at_r": float(result["mean_average_precision_at_r"]),
        "nmi": float(result["NMI"]),
    }


def paired_bootstrap(correct_a, correct_b, seed: int = 0, resamples: int = 10000) -> dict:
    """Accuracy difference ``a - b`` of two models on the same items, with its percentile 95% interval.

    ``correct_a`` / ``correct_b``: one 0/1 per item, in the same item order. The items are resampled
    with replacement ``resamples`` times and the same resample scores both models (a paired
    bootstrap), so the interval reflects the items both got right or wrong together.
    """
    correct_a, correct_b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1 or not len(correct_a):
        raise ValueError(
            f"paired_bootstrap needs two equal, non-empty 1-D arrays, got shapes "
            f"{correct_a.shape} and {correct_b.shape}"
        )
    rng = np.random.default_rng(seed)
    differences = np.empty(resamples)
    for start in range(0, resamples, 500):  # chunks keep memory at 500 x n
        index = rng.integers(0, len(correct_a), size=(min(500, resamples - start), len(correct_a)))
        differences[start : start + len(index)] = correct_a[index].mean(1) - correct_b[index].mean(1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "difference": float(correct_a.mean() - correct_b.mean()),
        "ci95": [float(low), float(high)],
        "resamples": int(resamples),
        "n": int(len(correct_a)),
    }
