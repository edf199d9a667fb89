"""Synthetic faces: deterministic, in real layouts, and their class is learnable."""

from __future__ import annotations

import numpy as np
import pytest

from fermetric.data import load_dataset
from fermetric.data.synthetic import EXPRESSIONS, LAYOUTS, draw_face, make_synthetic_faces
from fermetric.errors import ConfigError


def test_same_seed_same_faces(tmp_path):
    a = draw_face("happy", np.random.default_rng(4))
    b = draw_face("happy", np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == (48, 48) and np.array_equal(a, b)
    assert draw_face("sad", np.random.default_rng(0), size=20).shape == (20, 20)
    one = load_dataset("fer2013", make_synthetic_faces(tmp_path / "a", n_per_class=2, seed=9), "test")
    two = load_dataset("fer2013", make_synthetic_faces(tmp_path / "b", n_per_class=2, seed=9), "test")
    np.testing.assert_array_equal(one.images, two.images)


def test_every_layout_is_readable(tmp_path):
    readers = {
        "fer2013": "fer2013",
        "fer2013-csv": "fer2013",
        "ferplus": "ferplus",
        "ckplus48": "ckplus48",
        "jaffe": "jaffe",
        "rafdb": "rafdb",
        "rafdb-kaggle": "rafdb",
        "folder": "folder",
        "folder-split": "folder",
    }
    assert set(readers) == set(LAYOUTS)
    for layout, reader in readers.items():
        root = make_synthetic_faces(tmp_path / layout, layout, n_per_class=3, size=32, seed=1)
        split = "all" if reader in ("ckplus48", "jaffe", "folder") and layout != "folder-split" else "train"
        imageset = load_dataset(reader, root, split)
        assert len(imageset) >= 3 * len(imageset.classes) - 3 and imageset.image_size == (32, 32), layout
    with pytest.raises(ConfigError, match="unknown synthetic layout"):
        make_synthetic_faces(tmp_path, "affectnet")


def test_classes_are_learnable_by_a_linear_model():
    """The class is visible in the geometry, not hidden in the nuisance (subject, shift,
    brightness, noise): a linear classifier on raw pixels of held-out faces is far above chance
    (1/8), so a small CNN learns the set within a few CPU steps."""
    from sklearn.linear_model import RidgeClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    classes = list(EXPRESSIONS)

    def faces(n):
        x = np.array([draw_face(c, rng, 32) for c in classes for _ in range(n)], dtype=float).reshape(-1, 32 * 32)
        return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True), np.repeat(np.arange(len(classes)), n)

    (x_train, y_train), (x_test, y_test) = faces(24), faces(12)
    with threadpool_limits(1):  # BLAS threads only fight the 2 CI cores for such a small problem
        accuracy = RidgeClassifier(alpha=10.0).fit(x_train, y_train).score(x_test, y_test)
    assert accuracy > 0.5
