"""Shared test fixtures.

Real datasets live in ``../shared/data`` beside the checkout (never inside the repo: research
licences). Tests that need them use the ``shared_data`` fixture and skip cleanly when it is absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

#: the photo -> expression fixtures (a tiny saved model, the shipped photo), for every test folder
pytest_plugins = ["tests.model_fixtures"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Dataset caches go to a per-session folder, never the user's ~/.cache.
_CACHE = None
if "FERMETRIC_CACHE" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="fermetric-test-cache-")
    os.environ["FERMETRIC_CACHE"] = _CACHE


def pytest_sessionfinish(session, exitstatus):
    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


# Two CPU cores in CI: keep torch from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
