"""Data-test fixtures: one fresh decode cache per test session, shared real-data splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Point ``$FERMETRIC_CACHE`` at a session folder: real data is decoded once per session
    and the user's ``~/.cache/fermetric`` is never touched."""
    folder = tmp_path_factory.mktemp("fermetric-cache")
    saved = os.environ.get("FERMETRIC_CACHE")
    os.environ["FERMETRIC_CACHE"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("FERMETRIC_CACHE", None)
    else:
        os.environ["FERMETRIC_CACHE"] = saved


SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The real datasets (session-scoped twin of the ``shared_data`` fixture): skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
