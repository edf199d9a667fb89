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


@pytest.fixture(scope="session", autouse=True)
def native_bf16_probe():
    """``precision="auto"`` resolves to fp32 in tests, on every host; yields the real probe.

    ``auto`` picks bf16 on CPUs with AVX512-BF16 or AMX, so without this the same test compares
    fp32 references against bf16 outputs on one CI host and not on another. Session-scoped so
    that module fixtures (saved tiny models, reference runs) train in fp32 too. Tests of the bf16
    path ask for ``precision="bf16"``; tests of the probe carry ``@pytest.mark.host_precision``.
    """
    from fermetric.engine import precision

    real_probe = precision.cpu_has_native_bf16
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_has_native_bf16", lambda: False)
        yield real_probe


@pytest.fixture(autouse=True)
def host_precision_when_marked(request, monkeypatch, native_bf16_probe):
    if request.node.get_closest_marker("host_precision") is not None:
        from fermetric.engine import precision

        monkeypatch.setattr(precision, "cpu_has_native_bf16", native_bf16_probe)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
