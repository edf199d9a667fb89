"""The models that ship inside the package, by name (``fermetric.load("default")``).

``src/fermetric/weights/models.json`` is the catalogue: for each name, its weights file in the
same folder (and, for the backend ``openvino-int8``, its int8 ONNX graph), a one-line summary and
what was measured on it, each figure with the result file
(under ``benchmarks/results/``) and the command that produced it; ``docs/MODEL_CARD.md`` has a
section per model. A shipped name wins over a relative path of the same spelling: reach a local
folder called ``fast`` as ``./fast``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["CATALOGUE", "ShippedModel", "shipped_model", "shipped_models", "weights_dir"]

CATALOGUE = "models.json"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path  # the weights file inside the installed package
    summary: str
    #: what was measured: ``{"dataset": ..., "split": ..., "accuracy": ..., "macro_f1": ..., "result": ...}``
    measured: tuple[dict, ...] = field(default_factory=tuple)
    #: its int8 ONNX graph (``fermetric export --format onnx --int8-calibration``) when one ships
    int8_graph: Path | None = None


def weights_dir() -> Path:
    return Path(str(resources.files("fermetric") / "weights"))


def shipped_models() -> dict[str, ShippedModel]:
    """Every model named in the catalogue, in its order (an install without one: ``{}``)."""
    path = weights_dir() / CATALOGUE
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); reinstall fermetric") from None
    return {
        name: ShippedModel(
            name=name,
            path=weights_dir() / entry["file"],
            summary=entry["summary"],
            measured=tuple(entry.get("measured", ())),
            int8_graph=weights_dir() / entry["int8_graph"] if entry.get("int8_graph") else None,
        )
        for name, entry in entries.items()
    }


def shipped_model(name: str) -> ShippedModel:
    """The catalogue entry ``name``, its weights file checked to exist."""
    models = shipped_models()
    if name not in models:
        known = ", ".join(models) or "none in this install"
        raise CheckpointError(f"no shipped model {name!r}; shipped: {known}")
    model = models[name]
    if not model.path.is_file():
        raise CheckpointError(
            f"shipped model {name!r} is listed but {model.path} is missing; reinstall fermetric, "
            "or train one (`fermetric train`) and pass its run directory"
        )
    return model
