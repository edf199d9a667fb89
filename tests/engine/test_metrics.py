"""Metrics against hand-computed values and independent naive implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from fermetric.engine import metrics as M


def unit_rows(x) -> np.ndarray:
    """Independent of the package: each row divided by its L2 norm."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_classification_metrics_hand_made_case():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    out = M.classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    assert out["accuracy"] == pytest.approx(4 / 6)
    # F1 per class by hand: a: P=1/2 R=1/2 -> 1/2; b: P=2/3 R=1 -> 4/5; c: P=1 R=1/2 -> 2/3.
    # Class d never occurs (neither true nor predicted) and does not enter the macro average.
    assert out["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert out["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.5, "d": None}
    assert out["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def _clusters(rng, n_per_class=15, num_classes=3, dim=6, spread=1.0):
    labels = np.repeat(np.arange(num_classes), n_per_class)
    centres = rng.normal(size=(num_classes, dim)) * 2
    return centres[labels] + rng.normal(size=(len(labels), dim)) * spread, labels


def test_knn_and_centroid_with_reference_match_sklearn(rng):
    # Two classes and odd k: no vote ties, so sklearn's plain majority vote must agree exactly.
    ref, ref_y = _clusters(rng, num_classes=2, spread=1.5)
    query, query_y = ref + rng.normal(size=ref.shape) * 0.8, ref_y
    qn, rn = unit_rows(query), unit_rows(ref)
    for k in (1, 3, 5):
        expected = np.mean(KNeighborsClassifier(n_neighbors=k).fit(rn, ref_y).predict(qn) == query_y)
        assert M.knn_accuracy(query, query_y, ref, ref_y, k=k) == pytest.approx(expected)
    nearest = NearestCentroid().fit(rn, ref_y)
    assert M.centroid_accuracy(query, query_y, ref, ref_y) == pytest.approx(np.mean(nearest.predict(qn) == query_y))


def test_knn_ties_go_to_the_nearest_voter(rng):
    ref, ref_y = _clusters(rng, num_classes=3, spread=2.5)
    query = ref + rng.normal(size=ref.shape)
    qn, rn = unit_rows(query), unit_rows(ref)
    for k in (3, 4, 5):
        assert M.knn_accuracy(query, ref_y, ref, ref_y, k=k) == pytest.approx(_naive_knn(qn, ref_y, rn, ref_y, k))
    # Hand-made tie: k=2, one neighbour of each class; the nearer one (class 1) wins.
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert M.knn_accuracy(np.array([[0.3, 1.0]]), np.array([1]), reference, np.array([0, 1]), k=2) == 1.0
    assert M.knn_accuracy(np.array([[1.0, 0.3]]), np.array([1]), reference, np.array([0, 1]), k=2) == 0.0


def _naive_knn(query, query_y, ref, ref_y, k, leave_one_out=False):
    correct = 0
    for i, q in enumerate(query):
        d = ((ref - q) ** 2).sum(axis=1)
        if leave_one_out:
            d[i] = np.inf
        order = np.argsort(d, kind="stable")[:k]
        counts = {}
        for j in order:  # dicts keep insertion order: nearest voter's class first
            counts[ref_y[j]] = counts.get(ref_y[j], 0) + 1
        winner = max(counts, key=lambda c: counts[c])  # most votes; ties: first inserted = nearest
        correct += winner == query_y[i]
    return correct / len(query)


def test_knn_leave_one_out_matches_naive(rng):
    x, y = _clusters(rng, spread=2.0)
    for k in (1, 4, 7):
        assert M.knn_accuracy(x, y, k=k) == pytest.approx(_naive_knn(unit_rows(x), y, unit_rows(x), y, k, True))
    # Exact duplicates with different labels: each item must not vote for itself.
    dup = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert M.knn_accuracy(dup, np.array([0, 1, 2, 2]), k=1) == pytest.approx(0.5)


def _naive_retrieval(x, y):
    x = unit_rows(x)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    p1, aps = [], []
    for i in range(len(x)):
        order = np.argsort(d[i], kind="stable")[:-1]
        rel = (y[order] == y[i]).astype(float)
        r = int(rel.sum())
        p1.append(rel[0])
        hits = np.cumsum(rel[:r])
        aps.append(np.sum(hits / np.arange(1, r + 1) * rel[:r]) / r)
    return np.mean(p1), np.mean(aps)


def test_retrieval_metrics_match_naive(rng):
    x, y = _clusters(rng, spread=2.5)
    out = M.retrieval_metrics(x, y)
    p1, map_r = _naive_retrieval(x, y)
    assert out["precision_at_1"] == pytest.approx(p1)
    assert out["map_at_r"] == pytest.approx(map_r, abs=1e-6)
    assert 0.0 <= out["nmi"] <= 1.0


def test_nmi_separated_vs_random(rng):
    y = np.repeat(np.arange(4), 20)
    separated = np.eye(8)[y] * 10 + rng.normal(size=(80, 8)) * 0.01
    assert M.retrieval_metrics(separated, y)["nmi"] == pytest.approx(1.0)
    assert M.retrieval_metrics(rng.normal(size=(80, 8)), y)["nmi"] < 0.3


def test_degenerate_inputs():
    assert M.knn_accuracy(np.zeros((1, 3)), np.array([0])) is None  # nobody to vote
    assert M.retrieval_metrics(np.zeros((1, 3)), np.array([0]))["map_at_r"] is None
    out = M.classification_metrics(np.array([], int), np.array([], int), ["a"])
    assert out["accuracy"] is None and out["confusion"] == [[0]]


def test_paired_bootstrap_against_the_normal_approximation(rng):
    a = (rng.random(500) < 0.7).astype(int)
    b = a.copy()
    b[rng.choice(500, 60, replace=False)] ^= 1  # 60 images flip between the two models
    result = M.paired_bootstrap(a, b, seed=3, resamples=4000)
    d = a - b
    sd = d.std() / np.sqrt(len(d))
    assert result["difference"] == pytest.approx(d.mean()) and result["n"] == 500
    low, high = result["ci95"]
    assert low == pytest.approx(d.mean() - 1.96 * sd, abs=0.25 * sd)
    assert high == pytest.approx(d.mean() + 1.96 * sd, abs=0.25 * sd)
    assert M.paired_bootstrap(a, a)["ci95"] == [0.0, 0.0]  # the same answers: no difference in any resample
    assert M.paired_bootstrap(a, b, seed=3, resamples=4000) == result  # seeded
    with pytest.raises(ValueError, match="equal, non-empty"):
        M.paired_bootstrap(a, b[:-1])
