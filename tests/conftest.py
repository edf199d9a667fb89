"""Shared test fixtures.

Real datasets live in ``../shared/data`` beside the checkout (never inside the repo: research
licences). Tests that need them use the ``shared_data`` fixture and skip cleanly when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

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
