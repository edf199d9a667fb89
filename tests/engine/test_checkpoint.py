"""Checkpoint files: atomic writes, corruption detection, resume fallback, load_model checks."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from fermetric.engine import checkpoint as ckpt
from fermetric.errors import CheckpointError
from fermetric.models import create_model

from .engine_helpers import CLASSES, tiny_recipe

PREP = {"size": 24, "mean": 0.5, "std": 0.25}


def _model_and_meta(classes=CLASSES):
    recipe = tiny_recipe("ce")
    torch.manual_seed(0)
    model = create_model(recipe.model, num_classes=len(classes))
    return model, ckpt.make_meta(recipe, classes, PREP, "synthetic", 0)


def _payload(model, meta, epoch=1):
    return {
        "meta": meta,
        "model": model.state_dict(),
        "optimizer": {},
        "scheduler": {},
        "loss": {},
        "ema": None,
        "epoch": epoch,
        "step": 10 * epoch,
        "best": None,
        "rng": ckpt.rng_state(),
        "history": [],
        "partial": None,
    }


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_is_atomic_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.pt"
    ckpt.save(path, {"meta": {"recipe": {}, "classes": ["a"]}, "model": {"w": torch.ones(3)}})
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError, match="boom"):
        ckpt.save(path, {"meta": {}, "model": {"w": torch.zeros(10_000)}, "bad": Unpicklable()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temp file left behind


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "bitflip"])
def test_load_detects_damaged_files(tmp_path, damage):
    model, meta = _model_and_meta()
    path = tmp_path / "last.pt"
    ckpt.save(path, _payload(model, meta))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    elif damage == "empty":
        data = b""
    elif damage == "garbage":
        data = os.urandom(len(data))
    else:  # one flipped byte inside the largest tensor's storage
        weight = model.backbone.stages[-1][-1][0].weight.detach().numpy().tobytes()
        offset = bytes(data).find(weight[:64])
        assert offset > 0
        data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        ckpt.load(path)
    assert "\n" not in str(info.value) and "last.pt" in str(info.value)


def test_newer_format_is_refused(tmp_path):
    model, meta = _model_and_meta()
    meta = {**meta, "format": ckpt.FORMAT_VERSION + 1, "fermetric_version": "9.0.0"}
    ckpt.save(tmp_path / "new.pt", _payload(model, meta))
    with pytest.raises(CheckpointError, match="9.0.0.*upgrade fermetric"):
        ckpt.load(tmp_path / "new.pt")
    ckpt.save_weights(tmp_path / "new.safetensors", model, meta)
    with pytest.raises(CheckpointError, match="upgrade"):
        ckpt.load_model(tmp_path / "new.safetensors")


def test_training_rotation_and_fallback_to_previous(tmp_path):
    model, meta = _model_and_meta()
    ckpt.save_training(tmp_path, _payload(model, meta, epoch=1), is_best=True)
    ckpt.save_training(tmp_path, _payload(model, meta, epoch=2))
    assert ckpt.load(tmp_path / "last.pt")["epoch"] == 2
    assert ckpt.load(tmp_path / "last.prev.pt")["epoch"] == 1
    assert ckpt.load(tmp_path / "best.pt")["epoch"] == 1
    payload, path = ckpt.resume_checkpoint(tmp_path)
    assert path.name == "last.pt" and payload["epoch"] == 2

    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="previous complete checkpoint last.prev.pt"):
        payload, path = ckpt.resume_checkpoint(tmp_path)
    assert path.name == "last.prev.pt" and payload["epoch"] == 1

    (tmp_path / "last.prev.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        ckpt.resume_checkpoint(tmp_path)
    assert ckpt.resume_checkpoint(tmp_path / "fresh") is None


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(5)
    ckpt.save(
        tmp_path / "r.pt",
        {"meta": {"recipe": {}, "classes": []}, "model": {}, "rng": ckpt.rng_state({"aug": generator})},
    )
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    ckpt.set_rng_state(ckpt.load(tmp_path / "r.pt")["rng"], {"aug": generator})
    assert (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generator).item(),
    ) == expected


def test_load_model_from_pt_safetensors_and_run_dir(tmp_path):
    model, meta = _model_and_meta()
    ckpt.save_training(tmp_path / "run", _payload(model, meta), is_best=True)
    ckpt.save_weights(tmp_path / "w.safetensors", model, meta)
    x = torch.randn(3, 1, 24, 24)
    model.eval()
    expected = model(x)["logits"]
    for source in (tmp_path / "run" / "last.pt", tmp_path / "w.safetensors", tmp_path / "run"):
        loaded, loaded_meta = ckpt.load_model(source)
        assert loaded_meta["classes"] == list(CLASSES) and not loaded.training
        assert _same_weights(loaded, model)
        torch.testing.assert_close(loaded(x)["logits"], expected)


def test_load_model_prefers_ema_weights(tmp_path):
    from torch.optim.swa_utils import AveragedModel

    model, meta = _model_and_meta()
    ema = AveragedModel(model, use_buffers=True)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    payload = {**_payload(model, meta), "ema": ema.state_dict()}
    ckpt.save(tmp_path / "e.pt", payload)
    loaded, _ = ckpt.load_model(tmp_path / "e.pt")
    assert _same_weights(loaded, ema.module) and not _same_weights(loaded, model)


def test_load_model_refusals(tmp_path, monkeypatch):
    model, meta = _model_and_meta()
    ckpt.save_weights(tmp_path / "w.safetensors", model, meta)
    with pytest.raises(CheckpointError, match="expected"):
        ckpt.load_model(tmp_path / "w.safetensors", expect_classes=["happy", "sad"])
    with pytest.raises(CheckpointError, match="preprocessing"):
        ckpt.load_model(tmp_path / "w.safetensors", expect_preprocessing={**PREP, "size": 48})
    ckpt.load_model(tmp_path / "w.safetensors", expect_classes=list(CLASSES), expect_preprocessing=PREP)

    # Architecture in meta does not match the tensors (wider embedding): strict load refuses.
    other = {**meta, "recipe": {**meta["recipe"], "model": {**meta["recipe"]["model"], "embedding_dim": 64}}}
    ckpt.save_weights(tmp_path / "bad.safetensors", model, other)
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.load_model(tmp_path / "bad.safetensors")

    # A recipe option this version does not know (written by a newer fermetric).
    newer = {**meta, "recipe": {**meta["recipe"], "brand_new_option": 1}}
    ckpt.save_weights(tmp_path / "newer.safetensors", model, newer)
    with pytest.raises(CheckpointError, match="does not fit this fermetric"):
        ckpt.load_model(tmp_path / "newer.safetensors")

    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_model(tmp_path / "missing.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no best.pt"):
        ckpt.load_model(tmp_path / "empty_run")
    from fermetric.engine import shipped

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(shipped, "weights_dir", lambda: weights)
    with pytest.raises(CheckpointError, match="no shipped model 'default'; shipped: none"):
        ckpt.load_model("default")
    (weights / "models.json").write_text(json.dumps({"default": {"file": "d.safetensors", "summary": "a test"}}))
    with pytest.raises(CheckpointError, match="listed but .* is missing"):
        ckpt.load_model("default")
    shutil.copy(tmp_path / "w.safetensors", weights / "d.safetensors")
    assert _same_weights(ckpt.load_model("default")[0], model)
