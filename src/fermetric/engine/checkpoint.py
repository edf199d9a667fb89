"""Checkpoints: atomic files, corruption detection, resume fallback, shareable weights.

Two file kinds:

* ``.pt`` training checkpoints (``torch.save`` of a payload dict, read back with
  ``weights_only=True`` so a shared checkpoint cannot run code). Payload keys::

      meta, model, optimizer, scheduler, loss, ema, epoch, step, best, rng, history, partial

  ``meta`` = ``{"format", "fermetric_version", "recipe", "classes", "preprocessing", "dataset",
  "seed", "created"}`` describes the model well enough to rebuild it with ``create_model``.
* ``.safetensors`` weights (:func:`save_weights`): the model's tensors only (the EMA weights when
  the run kept an EMA, since those are the ones that were validated), with ``meta`` as JSON in the
  safetensors metadata under the key ``"fermetric"``. This is the shipped / shared format.

Design decisions:

* Every write is atomic: temp file in the same directory, flush + fsync, ``os.replace``, then
  fsync of the directory. A crash leaves either the old file or the new one, never half a file
  under the final name.
* A run directory keeps ``last.pt`` (every epoch), ``last.prev.pt`` (the one before) and
  ``best.pt`` (best validation accuracy). :func:`resume_checkpoint` falls back from a corrupt or
  missing ``last.pt`` to ``last.prev.pt`` with a warning.
* ``meta["format"]`` is an integer bumped on incompatible payload changes; a checkpoint with a
  newer format than this fermetric reads is refused, naming both versions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..config import Recipe
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write, fsync_dir, temp_file_beside
from ..models import create_model
from .shipped import shipped_model, shipped_models, weights_dir

#: Payload format this fermetric writes and the newest one it reads.
FORMAT_VERSION = 1

LAST = "last.pt"
LAST_PREV = "last.prev.pt"
BEST = "best.pt"
SAFETENSORS_META_KEY = "fermetric"
DEFAULT_WEIGHTS = "default.safetensors"


# --------------------------------------------------------------------------------------- files
def state_digest(state: dict | None) -> str:
    """blake2b over names and bytes of a state dict's tensors (catches silent bit flips, which
    torch's zip container does not detect)."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(state or {}):
        value = state[key]
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            h.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _with_digest(payload: dict) -> dict:
    if "model" not in payload:
        return payload
    return {**payload, "digest": {"model": state_digest(payload["model"]), "ema": state_digest(payload.get("ema"))}}


def save(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (see :func:`~fermetric.fileio.atomic_write`).

    A payload with a ``model`` entry gets a ``digest`` of its model/EMA tensors, checked by
    :func:`load`.
    """
    payload = _with_digest(payload)
    try:
        return atomic_write(path, writer=lambda handle: torch.save(payload, handle))
    except OSError as err:
        raise CheckpointError(
            f"cannot write checkpoint {path}: {err.strerror or err}; check free space and permissions"
        ) from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``.pt`` checkpoint; truncated, corrupt or foreign files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (an interrupted write?); use another checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors...
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({_first_line(err)}); use another checkpoint"
        ) from None
    if not isinstance(payload, dict) or "meta" not in payload or "model" not in payload:
        raise CheckpointError(f"{path} is not a fermetric checkpoint (no meta/model entries)")
    check_meta(payload["meta"], path)
    digest = payload.get("digest")
    if digest and (
        digest.get("model") != state_digest(payload["model"]) or digest.get("ema") != state_digest(payload.get("ema"))
    ):
        raise CheckpointError(
            f"checkpoint {path} is corrupt (its weights do not match their checksum); use another checkpoint"
        )
    return payload


def check_meta(meta: Any, where: Any) -> dict:
    """Refuse metadata that is missing or written by a newer, incompatible fermetric."""
    if not isinstance(meta, dict) or "recipe" not in meta or "classes" not in meta:
        raise CheckpointError(f"{where} has no fermetric metadata (recipe, classes)")
    fmt = meta.get("format", 1)
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written by fermetric {meta.get('fermetric_version', '?')} (checkpoint format {fmt}); "
            f"this fermetric {__version__} reads format <= {FORMAT_VERSION}: upgrade fermetric"
        )
    return meta


# ---------------------------------------------------------------------------------------- meta
def preprocessing_dict(preprocessing: Any) -> dict:
    """A JSON-able description of the eval preprocessing (``Preprocessing.to_dict()``)."""
    if isinstance(preprocessing, dict):
        return dict(preprocessing)
    if hasattr(preprocessing, "to_dict"):
        return dict(preprocessing.to_dict())
    raise TypeError(f"cannot describe preprocessing {preprocessing!r}")


def make_meta(recipe, classes, preprocessing, dataset: str = "", seed: int | None = None) -> dict:
    """The ``meta`` block of every checkpoint and weights file."""
    return {
        "format": FORMAT_VERSION,
        "fermetric_version": __version__,
        "recipe": recipe.to_dict() if hasattr(recipe, "to_dict") else dict(recipe),
        "classes": list(classes),
        "preprocessing": preprocessing_dict(preprocessing),
        "dataset": dataset,
        "seed": seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------- rng
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every RNG a training step may touch, as tensors/lists (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when the device count matches)."""
    random.setstate(_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name].cpu())


def _to_lists(value):
    if isinstance(value, (tuple, list)):
        return [_to_lists(v) for v in value]
    return value


def _to_tuples(value):
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


# ------------------------------------------------------------------------------ run directories
def save_training(out_dir: str | os.PathLike, payload: dict, is_best: bool = False) -> Path:
    """Write ``last.pt`` (keeping the previous one as ``last.prev.pt``) and maybe ``best.pt``.

    The new ``last.pt`` is complete and fsync'ed before the old one is moved to
    ``last.prev.pt``, so at every instant at least one complete checkpoint exists.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(_with_digest(payload), buffer)
    data = buffer.getvalue()
    last = out_dir / LAST
    try:
        fd, tmp = temp_file_beside(last)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if last.exists():
                os.replace(last, out_dir / LAST_PREV)
            os.replace(tmp, last)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(out_dir)
        if is_best:
            atomic_write(out_dir / BEST, data)
    except OSError as err:
        raise CheckpointError(
            f"cannot write checkpoint in {out_dir}: {err.strerror or err}; check free space and permissions"
        ) from err
    return last


def resume_checkpoint(out_dir: str | os.PathLike, map_location="cpu") -> tuple[dict, Path] | None:
    """The newest complete training checkpoint of a run: ``last.pt``, else ``last.prev.pt``.

    Returns ``None`` when the directory holds neither (a fresh run); raises CheckpointError when
    files exist but none of them is readable.
    """
    out_dir = Path(out_dir)
    candidates = [out_dir / LAST, out_dir / LAST_PREV]
    errors = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            payload = load(path, map_location=map_location)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            warnings.warn(f"{errors[0]}; resuming from the previous complete checkpoint {path.name}", stacklevel=2)
        return payload, path
    if errors:
        raise CheckpointError(f"no readable checkpoint in {out_dir}: {'; '.join(errors)}")
    return None


# ------------------------------------------------------------------------------------ weights
def model_weights(payload: dict) -> dict[str, torch.Tensor]:
    """The weights to deploy from a payload: the EMA ones when present, else the raw model."""
    ema = payload.get("ema")
    if ema:
        # AveragedModel keeps the copy under "module." plus an "n_averaged" counter.
        return {k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")}
    return payload["model"]


def save_weights(path: str | os.PathLike, model_or_state, meta: dict) -> Path:
    """Write a model's tensors as ``.safetensors`` with ``meta`` (JSON) in the file's metadata."""
    from safetensors.torch import save as st_save

    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    # clone(): safetensors refuses tensors that share storage (tied or view weights).
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    metadata = {SAFETENSORS_META_KEY: json.dumps(_jsonable(meta))}
    try:
        return atomic_write(path, st_save(tensors, metadata=metadata))
    except OSError as err:
        raise CheckpointError(f"cannot write {path}: {err.strerror or err}") from err


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and meta of a ``.safetensors`` file written by :func:`save_weights`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as err:
        raise CheckpointError(f"weights file {path} is truncated or corrupt ({_first_line(err)})") from None
    if SAFETENSORS_META_KEY not in metadata:
        raise CheckpointError(f"{path} has no fermetric metadata; it was not written by fermetric.save_weights")
    try:
        meta = json.loads(metadata[SAFETENSORS_META_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: fermetric metadata is not valid JSON") from None
    return tensors, check_meta(meta, path)


def default_weights_path() -> Path:
    return weights_dir() / DEFAULT_WEIGHTS


def resolve_source(source: str | os.PathLike) -> Path:
    """A file to load for ``source``: a .pt/.safetensors file, a run directory, or the name of a
    shipped model (``"default"``, see :mod:`fermetric.engine.shipped`)."""
    if str(source) == "default" or str(source) in shipped_models():
        return shipped_model(str(source)).path
    path = Path(source)
    if path.is_dir():
        for name in (BEST, LAST, LAST_PREV):
            if (path / name).is_file():
                return path / name
        weights = sorted(path.glob("*.safetensors"))
        if weights:
            return weights[0]
        raise CheckpointError(f"run directory {path} holds no best.pt, last.pt or .safetensors file")
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a .pt/.safetensors file, a run directory "
            f"or a shipped model ({', '.join(shipped_models()) or 'none in this install'})"
        )
    return path


def read_source(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """(weights, meta, path) of any loadable source, without building a model."""
    path = resolve_source(source)
    if path.suffix == ".safetensors":
        tensors, meta = load_weights(path)
    else:
        payload = load(path)
        tensors, meta = model_weights(payload), payload["meta"]
    return tensors, meta, path


#: what a fine-tuned run takes from its source: the network's shape (the weights must fit) and
#: the input preprocessing (its features expect those pixels); method modules (attention,
#: partial) stay the recipe's and start fresh when the source has none
ARCHITECTURE_FIELDS = {
    "model": ("backbone", "width", "small_input", "embedding_dim"),
    "data": ("input_size", "mean", "std"),
}


def architecture_overrides(source: str | os.PathLike) -> list[str]:
    """``["model.backbone=...", "data.input_size=...", ...]``: the recipe overrides that give a run
    ``source``'s network and preprocessing, so that ``init_from=source`` fits (the command line
    puts the user's own ``--set`` after them)."""
    _, meta, _ = read_source(source)
    recipe = meta["recipe"]
    return [
        f"{group}.{field}={json.dumps(recipe[group][field])}"
        for group, fields in ARCHITECTURE_FIELDS.items()
        for field in fields
        if field in recipe.get(group, {})
    ]


def build_model(meta: dict, where: Any = "checkpoint") -> torch.nn.Module:
    """An untrained model with the architecture that ``meta["recipe"]["model"]`` describes."""
    try:
        recipe = Recipe.from_dict(meta["recipe"])
    except ConfigError as err:
        raise CheckpointError(
            f"{where}: its recipe does not fit this fermetric {__version__} ({err}); "
            f"it was written by fermetric {meta.get('fermetric_version', '?')}"
        ) from None
    # Never download or look for pretrained weights: the checkpoint brings its own.
    model_cfg = recipe.model
    if getattr(model_cfg, "pretrained", False):
        import dataclasses

        model_cfg = dataclasses.replace(model_cfg, pretrained=False)
    return create_model(model_cfg, num_classes=len(meta["classes"]))


def load_model(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    expect_classes=None,
    expect_preprocessing=None,
) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model (eval mode, on ``device``) and return ``(model, meta)``.

    Args:
        source: a ``.pt`` checkpoint, a ``.safetensors`` file, a run directory (``best.pt``,
            else ``last.pt``), or a shipped model's name (``"default"``).
        expect_classes: when given, the model's class list must equal it (same names, same order).
        expect_preprocessing: when given (a ``Preprocessing`` or its dict), it must equal the
            model's: a model is only valid on inputs prepared the way it was trained.
    """
    tensors, meta, path = read_source(source)
    if expect_classes is not None and list(expect_classes) != list(meta["classes"]):
        raise CheckpointError(
            f"{path} predicts classes {list(meta['classes'])} but {list(expect_classes)} were expected; "
            "use a model trained on this class vocabulary"
        )
    if expect_preprocessing is not None:
        wanted = preprocessing_dict(expect_preprocessing)
        have = meta.get("preprocessing", {})
        if _jsonable(wanted) != _jsonable(have):
            raise CheckpointError(
                f"{path} was trained with preprocessing {have} but {wanted} was requested; "
                "use the checkpoint's own preprocessing (meta['preprocessing'])"
            )
    model = build_model(meta, path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the recorded architecture ({_first_line(err)})") from None
    model.eval()
    return model.to(device), meta
