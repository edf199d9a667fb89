"""Class priors: the training frequencies are recorded, and predicting under another prior is Bayes'
rule applied to the model's probabilities (checked against that rule computed directly)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fermetric.engine.priors import class_frequencies, logit_offset, prior_name
from fermetric.errors import CheckpointError, ConfigError

CLASSES = ["neutral", "happy", "disgust"]
META = {"classes": CLASSES, "class_prior": [0.3, 0.6, 0.1]}


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_frequencies_count_hard_labels_and_leave_unlabelled_items_out():
    images = SimpleNamespace(labels=np.array([0, 1, 1, 1, -1, 2, 1, 0]), soft_labels=None)
    assert class_frequencies(images, 3) == pytest.approx([2 / 7, 4 / 7, 1 / 7])


def test_frequencies_of_soft_labels_are_their_mean_and_an_empty_class_counts_once():
    soft = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.8, 0.0]], np.float32)
    images = SimpleNamespace(labels=np.array([0, 1, 1]), soft_labels=soft)
    assert class_frequencies(images, 3) == pytest.approx([0.7 / 4, 2.3 / 4, 1 / 4], abs=1e-6)  # disgust: none
    hard = SimpleNamespace(labels=np.array([0, 0, 0, 1]), soft_labels=None)
    assert class_frequencies(hard, 3) == pytest.approx([3 / 5, 1 / 5, 1 / 5])  # disgust: none, counted once


@pytest.mark.parametrize(
    "prior, target",
    [("uniform", [1 / 3, 1 / 3, 1 / 3]), ({"neutral": 2, "happy": 1, "disgust": 1}, [0.5, 0.25, 0.25])],
)
def test_an_offset_reweights_the_probabilities_by_the_ratio_of_priors(prior, target):
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    trained = softmax(logits)
    expected = trained * np.array(target) / np.array(META["class_prior"])  # Bayes: p(y|x) q(y) / p(y)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(softmax(logits + logit_offset(META, prior)), expected, rtol=1e-5)


def test_the_training_prior_changes_nothing():
    assert logit_offset(META, "train") is None and logit_offset({"classes": CLASSES}, "train") is None
    assert prior_name("uniform") == "uniform" and prior_name({"happy": 0.5, "sad": 1}) == "happy=0.5,sad=1"


def test_bad_priors_and_files_without_a_prior_are_refused_clearly():
    with pytest.raises(ConfigError, match="unknown prior 'balanced'"):
        logit_offset(META, "balanced")
    with pytest.raises(ConfigError, match=r"missing: \['disgust'\]"):
        logit_offset(META, {"neutral": 1, "happy": 1})
    with pytest.raises(ConfigError, match=r"unknown: \['sad'\]"):
        logit_offset(META, {"neutral": 1, "happy": 1, "disgust": 1, "sad": 1})
    with pytest.raises(ConfigError, match="positive"):
        logit_offset(META, {"neutral": 1, "happy": 0, "disgust": 1})
    with pytest.raises(CheckpointError, match="class_prior"):
        logit_offset({"classes": CLASSES}, "uniform")
    with pytest.raises(CheckpointError, match="does not fit"):
        logit_offset({"classes": CLASSES, "class_prior": [0.5, 0.5]}, "uniform")
