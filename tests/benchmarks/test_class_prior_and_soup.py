"""class_prior.py records a file's training frequencies without touching its tensors and scores both
priors; weight_soup.py averages two checkpoints exactly and chooses alpha on validation only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fermetric.engine.checkpoint import load_weights, save_weights


def test_class_prior_is_recorded_from_the_training_folder_and_both_priors_are_scored(
    tiny_checkpoint, fer_folder, tmp_path
):
    import class_prior

    tensors, meta = load_weights(tiny_checkpoint)
    source = save_weights(tmp_path / "fer.safetensors", tensors, {**meta, "dataset": "fer2013"})
    argv = [
        "--checkpoint",
        str(source),
        "--train",
        f"fer2013={fer_folder}",
        "--report",
        f"fer2013/val,test={fer_folder}",
    ]
    assert (
        class_prior.main(argv + ["--write", str(tmp_path / "with.safetensors"), "--out", str(tmp_path / "r.json")]) == 0
    )
    written, written_meta = load_weights(tmp_path / "with.safetensors")
    assert written.keys() == tensors.keys() and all(torch.equal(written[k], v) for k, v in tensors.items())
    counts = np.array(
        [
            len(list((fer_folder / "train" / c).iterdir()))
            for c in ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")
        ]
    )
    assert written_meta["class_prior"] == pytest.approx(list(counts / counts.sum()))
    result = json.loads((tmp_path / "r.json").read_text())
    assert [(r["dataset"], r["split"]) for r in result["results"]] == [("fer2013", "val"), ("fer2013", "test")]
    for row in result["results"]:
        assert row["uniform_minus_train"]["difference"] == pytest.approx(row["uniform_prior"] - row["train_prior"])
    with pytest.raises(SystemExit, match="trained on 'synthetic'"):
        class_prior.main(
            [
                "--checkpoint",
                str(tiny_checkpoint),
                "--train",
                f"fer2013={fer_folder}",
                "--out",
                str(tmp_path / "x.json"),
            ]
        )


def test_a_soup_is_the_exact_weighted_mean_chosen_on_validation(tiny_checkpoint, fer_folder, tmp_path, perturbed_copy):
    import weight_soup

    tensors, meta = load_weights(tiny_checkpoint)
    b, other = perturbed_copy(tiny_checkpoint, scale=0.1, seed=0)
    out = tmp_path / "soup.json"
    argv = ["--a", str(tiny_checkpoint), "--b", str(b), "--alphas", "0,0.5,1", "--data", f"fer2013={fer_folder}"]
    assert weight_soup.main(argv + ["--write", str(tmp_path / "soup.safetensors"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    grid = result["select_split"]["grid"]
    best = max(row["accuracy"] for row in grid)
    alpha = min(row["alpha"] for row in grid if row["accuracy"] == best)
    assert result["selected_alpha"] == alpha
    soup, soup_meta = load_weights(tmp_path / "soup.safetensors")
    for name, value in tensors.items():
        expected = (
            alpha * value.float() + (1 - alpha) * other[name].float() if value.is_floating_point() else other[name]
        )
        if value.is_floating_point():
            assert soup[name].dtype == torch.float16
            torch.testing.assert_close(soup[name].float(), expected.half().float())
        else:
            assert torch.equal(soup[name], expected)
    assert soup_meta["soup"]["alpha"] == alpha and soup_meta["classes"] == meta["classes"]


def test_a_soup_needs_one_architecture_but_not_one_initialisation(tiny_checkpoint, fer_folder, tmp_path):
    import copy

    import weight_soup

    tensors, meta = load_weights(tiny_checkpoint)
    from_imagenet = copy.deepcopy(meta)
    from_imagenet["recipe"]["model"]["pretrained"] = not meta["recipe"]["model"].get("pretrained", False)
    b = save_weights(tmp_path / "b.safetensors", tensors, from_imagenet)
    argv = ["--a", str(tiny_checkpoint), "--alphas", "0.5", "--data", f"fer2013={fer_folder}"]
    assert weight_soup.main(argv + ["--b", str(b), "--out", str(tmp_path / "soup.json")]) == 0
    wider = copy.deepcopy(meta)
    wider["recipe"]["model"]["embedding_dim"] = meta["recipe"]["model"]["embedding_dim"] * 2
    c = save_weights(tmp_path / "c.safetensors", tensors, wider)
    with pytest.raises(SystemExit, match="differ in model"):
        weight_soup.main(argv + ["--b", str(c), "--out", str(tmp_path / "soup2.json")])
