"""Engine test fixtures (helpers live in ``engine_helpers.py``, a unique module name)."""

from __future__ import annotations

import pytest

from .engine_helpers import make_imageset, single_thread, write_folder_dataset


@pytest.fixture(autouse=True)
def one_torch_thread():
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tiny_sets():
    """(train, val, test) synthetic splits with 4 classes at 16 px."""
    return (
        make_imageset(24, seed=0, split="train"),
        make_imageset(8, seed=1, split="val"),
        make_imageset(8, seed=2, split="test"),
    )


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory, tiny_sets):
    """The tiny synthetic splits on disk as a ``folder`` dataset (train/val/test)."""
    root = tmp_path_factory.mktemp("synthetic_folder")
    write_folder_dataset(root, dict(zip(("train", "val", "test"), tiny_sets)))
    return root
