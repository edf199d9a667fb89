"""Benchmark-harness fixtures: the scripts of ``benchmarks/`` on the import path, tiny packs.

The synthetic datasets are drawn by ``fermetric.data.synthetic`` in the real on-disk layouts
(never real images), read through the dataset readers with the decode cache switched off, and
packed once per session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


@pytest.fixture(scope="session", autouse=True)
def no_decode_cache():
    """Readers decode in memory: nothing is written to the user's ``~/.cache/fermetric``."""
    saved = os.environ.get("FERMETRIC_CACHE")
    os.environ["FERMETRIC_CACHE"] = "off"
    yield
    if saved is None:
        os.environ.pop("FERMETRIC_CACHE", None)
    else:
        os.environ["FERMETRIC_CACHE"] = saved


@pytest.fixture(scope="session")
def fer_folder(tmp_path_factory, no_decode_cache) -> Path:
    """A synthetic FER2013 (Kaggle layout: train/val/test, 7 classes, 4 training faces each, 16 px)."""
    from fermetric.data.synthetic import make_synthetic_faces

    return make_synthetic_faces(tmp_path_factory.mktemp("fer2013"), "fer2013", n_per_class=4, size=16, seed=0)


@pytest.fixture(scope="session")
def fer_pack(tmp_path_factory, fer_folder) -> Path:
    from pack_dataset import pack

    path = tmp_path_factory.mktemp("packs") / "fer2013.npz"
    pack(f"fer2013={fer_folder}", path, preset=1)
    return path


@pytest.fixture(scope="session")
def ck_folder(tmp_path_factory, no_decode_cache) -> Path:
    """A synthetic CK+48 (class folders of S<subject>_<seq>_<frame>.png, 12 subjects, 16 px)."""
    from fermetric.data.synthetic import make_synthetic_faces

    return make_synthetic_faces(tmp_path_factory.mktemp("ckplus48"), "ckplus48", n_per_class=6, size=16, seed=1)


@pytest.fixture(scope="session")
def ck_pack(tmp_path_factory, ck_folder) -> Path:
    from pack_dataset import pack

    path = tmp_path_factory.mktemp("packs") / "ckplus48.npz"
    pack(f"ckplus48={ck_folder}", path, num_folds=3, preset=1)
    return path


@pytest.fixture
def perturbed_copy(tmp_path):
    """``perturbed_copy(checkpoint, scale, seed) -> (path, tensors)``: the checkpoint's weights plus
    Gaussian noise of ``scale`` (integer tensors kept), saved with its metadata: a second model of
    the same architecture for the scripts that compare or average two."""
    import torch

    from fermetric.engine.checkpoint import load_weights, save_weights

    def make(checkpoint, scale: float, seed: int):
        tensors, meta = load_weights(checkpoint)
        generator = torch.Generator().manual_seed(seed)
        noisy = {
            k: v + scale * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in tensors.items()
        }
        return save_weights(tmp_path / f"perturbed-{seed}.safetensors", noisy, meta), noisy

    return make
