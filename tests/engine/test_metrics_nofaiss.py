"""Evaluation without faiss (the GPU machines' images lack it) gives the faiss results."""

import numpy as np
import pytest

from fermetric.engine import metrics


@pytest.fixture
def clustered():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 8)) * 3
    labels = np.repeat(np.arange(4), 30)
    points = centres[labels] + rng.normal(size=(120, 8))
    return points.astype(np.float32), labels


def test_metrics_without_faiss_match_faiss(clustered, monkeypatch):
    points, labels = clustered
    query, reference = points[::2], points[1::2]
    q_labels, r_labels = labels[::2], labels[1::2]
    with_faiss = (
        metrics.knn_accuracy(points, labels),
        metrics.knn_accuracy(query, q_labels, reference, r_labels),
        metrics.centroid_accuracy(query, q_labels, reference, r_labels),
        metrics.retrieval_metrics(query, q_labels, reference, r_labels),
    )
    monkeypatch.setattr(metrics, "_faiss", lambda: None)
    without = (
        metrics.knn_accuracy(points, labels),
        metrics.knn_accuracy(query, q_labels, reference, r_labels),
        metrics.centroid_accuracy(query, q_labels, reference, r_labels),
        metrics.retrieval_metrics(query, q_labels, reference, r_labels),
    )
    assert without[:3] == pytest.approx(with_faiss[:3])
    assert without[3]["precision_at_1"] == pytest.approx(with_faiss[3]["precision_at_1"])
    assert without[3]["map_at_r"] == pytest.approx(with_faiss[3]["map_at_r"])
    # Well-separated clusters: both k-means recover the classes.
    assert without[3]["nmi"] == pytest.approx(with_faiss[3]["nmi"], abs=0.05)


def test_torch_search_is_exact(clustered, monkeypatch):
    points, _ = clustered
    monkeypatch.setattr(metrics, "_faiss", lambda: None)
    distances, found = metrics._search(points[:50], points[50:60], 3)
    brute = ((points[50:60, None, :] - points[None, :50, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(found, np.argsort(brute, axis=1)[:, :3])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :3], rtol=1e-4)
