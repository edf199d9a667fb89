"""``fermetric info``: versions, device, and what this install can do.

Every section is gathered independently: a part that fails to import (an optional library, a
module still missing) is reported as such instead of failing the whole command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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


def _distribution(name: str) -> str | None:
    """An installed distribution's version, read from its metadata without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _backends() -> dict:
    """What each prediction backend (``--backend``) needs, and whether this install has it."""
    try:
        import torch

        cpu = torch.backends.cpu.get_cpu_capability()  # e.g. AVX512, AMX for oneDNN's fastest kernels
    except Exception:
        cpu = None
    from .engine.precision import cpu_flags

    flags = cpu_flags()
    return {
        "onnxruntime": _distribution("onnxruntime"),
        "torchao": _distribution("torchao"),
        "openvino": _distribution("openvino"),
        "cpu_capability": cpu,
        "cpu_int8": sorted(flags & {"amx_int8", "avx512_vnni", "avx_vnni"}),
        "cpu_bf16": sorted(flags & {"amx_bf16", "avx512_bf16"}),
    }


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

    def shipped_models() -> list[dict]:
        from .engine.checkpoint import load_weights
        from .engine.shipped import shipped_models as catalogue

        listed = []
        for model in catalogue().values():
            entry = {
                "name": model.name,
                "path": str(model.path),
                "summary": model.summary,
                "measured": list(model.measured),
                # the int8 ONNX graph --backend openvino-int8 runs, when one ships
                "int8_graph": str(model.int8_graph) if model.int8_graph and model.int8_graph.is_file() else None,
            }
            try:
                _, meta = load_weights(model.path)
            except Exception as err:  # listed but missing or unreadable: say so, list the rest
                listed.append({**entry, "error": str(err).splitlines()[0]})
                continue
            entry.update(
                recipe=meta["recipe"].get("name"),
                backbone=meta["recipe"].get("model", {}).get("backbone"),
                classes=meta["classes"],
                dataset=meta.get("dataset"),
                size_kb=round(model.path.stat().st_size / 1024),
            )
            listed.append(entry)
        return listed

    return {
        "fermetric": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {label: _version(module) for module, label in _LIBRARIES.items()},
        "device": _device(),
        "backends": _backends(),
        "backbones": _names(backbones),
        "recipes": _names(recipe_names),
        "datasets": _names(datasets),
        "losses": _names(losses),
        "shipped_models": _names(shipped_models),
    }
