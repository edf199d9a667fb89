"""Reliability fixtures: a tiny model, the shipped photo, a tiny dataset and run, and `run_cli`.

Everything goes through the real command line (``fermetric.cli.main`` in-process; a subprocess
only where the process's own stderr and exit code must be seen). The model is a randomly
initialised ``tiny`` backbone (never the shipped model, which may not exist): its predictions
are meaningless but deterministic, so "the same input gives the same result" is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fermetric.assets import example_photo

from .reliability_helpers import CLASSES, INPUT_SIZE, RUN_CLASSES, TINY_TRAIN, CliResult


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> CliResult``: ``fermetric`` in-process; never a traceback, always an int."""
    from fermetric.cli import main

    def run(*argv) -> CliResult:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert isinstance(code, int)
        assert "Traceback" not in out + err
        return CliResult(code, out, err)

    return run


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random 7-class ``tiny`` model at 32 px saved as safetensors (as the predict tests do)."""
    from fermetric.config import load_recipe
    from fermetric.data.transforms import Preprocessing
    from fermetric.engine.checkpoint import make_meta, save_weights
    from fermetric.models import create_model

    recipe = load_recipe("ce", ["model.backbone=tiny", "model.embedding_dim=16", f"data.input_size={INPUT_SIZE}"])
    torch.manual_seed(0)
    model = create_model(recipe.model, num_classes=len(CLASSES)).eval()
    meta = make_meta(recipe, CLASSES, Preprocessing(INPUT_SIZE, 0.5, 0.25), dataset="synthetic", seed=0)
    return save_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors", model, meta)


@pytest.fixture(scope="session")
def astronaut():
    """The shipped example photo as a PIL RGB image at 256 px (one 48-px face: Haar detection is
    4x cheaper than at the original 512 px and still finds it)."""
    from PIL import Image

    with Image.open(example_photo()) as image:
        return image.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)


@pytest.fixture(scope="session")
def reference(tiny_checkpoint, astronaut):
    """The tiny model's records on the upright photo (from an array: no file container involved)."""
    import fermetric

    predictor = fermetric.load(str(tiny_checkpoint), device="cpu")
    records = predictor.predict(np.asarray(astronaut))
    assert len(records) == 1  # the astronaut's face
    return records


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    """A tiny synthetic FER2013-layout dataset (4 classes, train/val/test)."""
    from fermetric.data.synthetic import make_synthetic_faces

    return make_synthetic_faces(
        tmp_path_factory.mktemp("fer2013"), layout="fer2013", n_per_class=4, size=48, seed=0, classes=RUN_CLASSES
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, dataset_root) -> Path:
    """A finished 2-epoch CLI training run of the tiny recipe (never modified by tests: copy it)."""
    from fermetric.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(
            [
                "train",
                "--recipe",
                "ce",
                "--data",
                f"fer2013={dataset_root}",
                "--out",
                str(out),
                "--epochs",
                "2",
                "--quiet",
                *TINY_TRAIN,
            ]
        )
    finally:
        torch.set_num_threads(previous)
    assert code == 0
    return out
