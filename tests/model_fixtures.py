"""Fixtures of the photo -> expression tests: a tiny saved model, the shipped photo, small files.

The model is a randomly initialised ``tiny`` backbone saved with ``save_weights`` (never the
shipped model, which may not exist): its predictions are meaningless but deterministic, which
is all these tests need (same pixels -> same numbers, files -> records, torch == ONNX).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fermetric.assets import example_photo

INPUT_SIZE = 32
EMBEDDING_DIM = 16
CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from fermetric.config import load_recipe
    from fermetric.data.transforms import Preprocessing
    from fermetric.engine.checkpoint import make_meta, save_weights
    from fermetric.models import create_model

    recipe = load_recipe(
        "ce",
        [
            "model.backbone=tiny",
            f"model.embedding_dim={EMBEDDING_DIM}",
            f"data.input_size={INPUT_SIZE}",
            "data.mean=0.5",
            "data.std=0.25",
        ],
    )
    torch.manual_seed(0)
    model = create_model(recipe.model, num_classes=len(CLASSES))
    # Non-trivial BatchNorm statistics, so eval-mode normalisation is exercised too.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model.eval()
    meta = make_meta(recipe, CLASSES, Preprocessing(INPUT_SIZE, 0.5, 0.25), dataset="synthetic", seed=0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(path, model, meta)
    return path


@pytest.fixture(scope="session")
def predictor(tiny_checkpoint):
    import fermetric

    # the torch module itself: tests compare against it (the default backend, auto, is onnx on a CPU;
    # predict/test_onnx.py checks that it gives the same results)
    return fermetric.load(str(tiny_checkpoint), device="cpu", backend="torch")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """The shipped example photo, RGB uint8 [512, 512, 3]."""
    from PIL import Image

    with Image.open(example_photo()) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session")
def astronaut_small(astronaut) -> np.ndarray:
    """The photo at 256 px (a 48-px face: still found by Haar, 4x cheaper)."""
    import cv2

    return cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)


@pytest.fixture
def noise_image() -> np.ndarray:
    """Uniform colour noise: no face in it."""
    return np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
