"""emlf_geometry.py's class-mean geometry on embeddings whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest


def test_class_means_distances_and_the_two_emlf_terms():
    from emlf_geometry import geometry

    # class 0 at (1, 0) and (0, 1) -> mean (0.5, 0.5); class 1 twice at (-2, 0) -> unit (-1, 0)
    z = np.array([[1.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [-2.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    g = geometry(z, labels, 2, margin=2.0, separation_weight=0.5)
    assert g["mean_norms"] == pytest.approx([np.sqrt(0.5), 1.0])
    distance = np.sqrt(1.5**2 + 0.5**2)
    assert g["pair_distances"]["min"] == pytest.approx(distance) and g["pairs"] == 1
    assert g["pairs_meeting_margin"] == 0
    assert g["compactness"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)  # each class-0 point is 0.5 from its mean
    assert g["separation"] == pytest.approx(0.5 * (2.0 - distance) ** 2)
    assert geometry(z, labels, 2, margin=1.0, separation_weight=0.5)["pairs_meeting_margin"] == 1
