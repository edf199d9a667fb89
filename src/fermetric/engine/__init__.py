"""Training, evaluation, checkpoints and multi-GPU (DDP) runs.

Public entry points (imported lazily so ``import fermetric.engine`` stays light):
``train``, ``evaluate``, ``embed``, ``load_model``, ``save_weights``.
"""

from __future__ import annotations

__all__ = ["train", "evaluate", "embed", "load_model", "save_weights", "TrainingError", "CheckpointError"]

_LOCATIONS = {
    "train": "fermetric.engine.train",
    "evaluate": "fermetric.engine.evaluate",
    "embed": "fermetric.engine.evaluate",
    "load_model": "fermetric.engine.checkpoint",
    "save_weights": "fermetric.engine.checkpoint",
    "TrainingError": "fermetric.errors",
    "CheckpointError": "fermetric.errors",
}


def __getattr__(name):
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'fermetric.engine' has no attribute {name!r}")
