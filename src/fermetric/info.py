"""``fermetric info``: versions, device, and what this install can do.

Every section is gathered independently: a part that fails to import (an optional library, a
module still missing) is reported as such instead of failing the whole command.
"""

from __future__ import annotations

import importlib
import platform

from ._version import __version__

_LIBRARIES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "pytorch_metric_learning": "pytorch-metric-learning",
    "faiss": "faiss",
    "sklearn": "scikit-learn",
    "cv2": "opencv",
    "safetensors": "safetensors",
    "numpy": "numpy",
}


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "installed"))


def _names(getter) -> list[str] | str:
    try:
        return list(getter())
    except Exception as err:  # a part of the package that is not importable: say why
        return f"unavailable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def _device() -> dict:
    try:
        import torch
    except Exception:
        return {"type": "unknown"}
    if torch.cuda.is_available():
        return {
            "type": "cuda",
            "count": torch.cuda.device_count(),
            "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "cuda_version": torch.version.cuda,
        }
    return {"type": "cpu", "threads": torch.get_num_threads()}


def collect() -> dict:
    """Everything ``fermetric info`` reports, as a JSON-able dict."""
    from .config import recipe_names

    def backbones():
        from .models import list_backbones

        return list_backbones()

    def datasets():
        from .data import DATASETS

        return DATASETS.names()

    def losses():
        from .losses import LOSSES

        return LOSSES.names()

    def default_model() -> dict:
        from .engine.checkpoint import default_weights_path, load_weights

        path = default_weights_path()
        if not path.is_file():
            return {"shipped": False}
        try:
            _, meta = load_weights(path)
        except Exception as err:
            return {"shipped": True, "path": str(path), "error": str(err)}
        return {
            "shipped": True,
            "path": str(path),
            "recipe": meta["recipe"].get("name"),
            "classes": meta["classes"],
            "dataset": meta.get("dataset"),
        }

    return {
        "fermetric": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {label: _version(module) for module, label in _LIBRARIES.items()},
        "device": _device(),
        "backbones": _names(backbones),
        "recipes": _names(recipe_names),
        "datasets": _names(datasets),
        "losses": _names(losses),
        "default_model": default_model(),
    }
