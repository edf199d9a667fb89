"""openvino_profile.py: where an int8 graph spends its time, and the dead-channel census."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fermetric.engine.checkpoint import load_weights, save_weights


def test_the_census_counts_every_channel_of_a_silenced_layer(tiny_checkpoint, tmp_path):
    from openvino_profile import dead_channels

    tensors, meta = load_weights(tiny_checkpoint)
    silenced = dict(tensors)
    width = len(tensors["backbone.stages.1.0.1.weight"])
    silenced["backbone.stages.1.0.1.weight"] = torch.zeros(width)  # BN output = bias = -1: ReLU gives 0
    silenced["backbone.stages.1.0.1.bias"] = torch.full((width,), -1.0)
    path = save_weights(tmp_path / "silenced.safetensors", silenced, meta)
    images = np.random.default_rng(0).integers(0, 256, (20, 24, 24), dtype=np.uint8)

    census = dead_channels(str(path), images, batch_size=8)
    relu_widths = [len(v) for k, v in tensors.items() if k.startswith("backbone.stages.") and k.endswith(".1.weight")]
    assert census["images"] == 20 and census["channels"] == sum(relu_widths)
    assert census["per_layer"]["backbone.stages.1.0.2"] == width
    original = dead_channels(str(tiny_checkpoint), images, batch_size=8)
    assert original["per_layer"].get("backbone.stages.1.0.2", 0) < width
    upstream = {k: v for k, v in census["per_layer"].items() if k.startswith("backbone.stages.0.")}
    assert upstream == {k: v for k, v in original["per_layer"].items() if k.startswith("backbone.stages.0.")}


def test_profile_of_a_shipped_int8_graph(fer_folder, tmp_path):
    pytest.importorskip("openvino")
    import openvino_profile

    out = tmp_path / "profile.json"
    argv = ["--checkpoint", "fast", "--data", str(fer_folder), "--faces", "12", "--census", "8"]
    argv += ["--micro-batches", "4", "8", "--repeats", "1", "--top", "3", "--out", str(out)]
    assert openvino_profile.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["command"].startswith("python benchmarks/openvino_profile.py")
    (model,) = result["models"]
    assert model["checkpoint"] == "fast" and model["input_size"] == 72
    assert set(model["micro_batches"]) == {"4", "8"}
    assert all(v["faces_per_second_median"] > 0 for v in model["micro_batches"].values())
    assert 0 < model["pipeline"]["preprocessing_share"] < 1
    kernels = model["kernels"]
    assert kernels["chunk"] == 12 and len(kernels["slowest_layers"]) == 3  # 12 faces: one chunk of fewer than 32
    shares = [v["share"] for v in kernels["by_kernel"].values()]
    assert 0.9 < sum(shares) <= 1 + 1e-9 and any(k.startswith("Convolution") for k in kernels["by_kernel"])
    assert model["dead_channels"]["images"] == 8 and model["dead_channels"]["channels"] > 0
