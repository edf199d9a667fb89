"""Every consumer measures distances in the space each loss trains (the fidelity issue, point 2).

The loss declares its space (``embedding_space``); evaluation, the faiss index, sub-classes and
plots read it from the checkpoint. A test fails if any consumer normalises differently.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fermetric.config import load_recipe
from fermetric.losses import LOSSES, create_loss
from fermetric.losses.space import EmbeddingSpace, space_of_meta

RECIPE_OPTIONS = {"mtdml": {"num_slices": 4}, "dmsl": {}, "tcl": {}, "emlf": {}}


def unit_rows(x) -> np.ndarray:
    """Independent of the package: each row divided by its L2 norm."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("normalize", [True, False])
def test_the_declared_space_is_the_one_the_loss_measures(name, normalize):
    """loss(z) == the same loss without normalisation on space(z): the space is what it sees."""
    torch.manual_seed(0)
    z = torch.randn(24, 16, dtype=torch.float64) * 3
    labels = torch.arange(24) % 4
    options = {**RECIPE_OPTIONS.get(name, {}), "normalize": normalize}
    loss = create_loss(name, 4, 16, **options).double()
    raw = create_loss(name, 4, 16, **{**options, "normalize": False}).double()
    raw.load_state_dict(loss.state_dict())
    extra = {"logits": torch.randn(24, 4, dtype=torch.float64)} if name == "tcl" else {}
    torch.manual_seed(1)
    expected = loss(z, labels, **extra)
    torch.manual_seed(1)
    got = raw(loss.embedding_space(z), labels, **extra)
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-9, abs=1e-12)


def test_sliced_space_normalises_each_slice():
    z = np.arange(1, 17, dtype=np.float32).reshape(2, 8)
    mapped = EmbeddingSpace("sliced_l2", 4)(z)
    norms = np.linalg.norm(mapped.reshape(2, 4, 2), axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    assert not np.allclose(mapped, z / np.linalg.norm(z, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    from fermetric.data import load_dataset
    from fermetric.data.synthetic import make_synthetic_faces

    root = make_synthetic_faces(
        tmp_path_factory.mktemp("data"),
        layout="fer2013",
        n_per_class=6,
        size=48,
        seed=0,
        classes=("happy", "sad", "neutral"),
    )
    return load_dataset("fer2013", root, "train")


@pytest.fixture(scope="module")
def mtdml_model(tmp_path_factory, train_set):
    """A random tiny MT-DML model (4 slices of 8) saved with its metadata, as training saves it."""
    from fermetric.data.transforms import Preprocessing
    from fermetric.engine.checkpoint import make_meta, save_weights
    from fermetric.models import create_model

    recipe = load_recipe(
        "mtdml", ["model.backbone=tiny", "model.embedding_dim=32", "loss.options.num_slices=4", "data.input_size=16"]
    )
    torch.manual_seed(0)
    model = create_model(recipe.model, num_classes=len(train_set.classes)).eval()
    meta = make_meta(recipe, train_set.classes, Preprocessing(16, 0.5, 0.25), dataset="synthetic", seed=0)
    meta["embedding_space"] = EmbeddingSpace("sliced_l2", 4).to_dict()
    return save_weights(tmp_path_factory.mktemp("mtdml") / "model.safetensors", model, meta)


def test_every_consumer_uses_the_checkpoints_space(mtdml_model, train_set):
    from fermetric.engine import metrics as M
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import embed, evaluate, preprocessing_from_meta
    from fermetric.methods.subclasses import embed_set
    from fermetric.retrieval import EmbeddingIndex

    model, meta = load_model(mtdml_model)
    space = space_of_meta(meta)
    assert (space.kind, space.slices) == ("sliced_l2", 4)
    prep = preprocessing_from_meta(meta)
    _, raw = embed(model, train_set, prep)
    expected = space(raw)
    assert not np.allclose(expected, unit_rows(raw), atol=1e-3)  # the two spaces differ here

    # sub-classes
    _, z = embed_set(model, train_set, prep, "cpu", space)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
    # the faiss index
    index = EmbeddingIndex.build(mtdml_model, train_set)
    np.testing.assert_allclose(index.embeddings, expected, rtol=1e-5, atol=1e-6)
    assert index.meta["embedding_space"] == space.to_dict()
    # evaluation: leave-one-out k-NN in the sliced space
    result = evaluate(model, train_set, prep, space=space)
    naive = M.knn_accuracy(expected, train_set.labels, normalize=False)
    assert result["knn_accuracy"] == pytest.approx(naive)
    assert result["embedding_space"] == space.to_dict()
    assert result["centroid_accuracy"] is None  # no reference: no label leak
