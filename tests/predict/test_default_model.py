"""The shipped model: it loads offline, the README's demo runs, and its card's number reproduces."""

import json
from pathlib import Path

import pytest

import fermetric
from fermetric.cli import main
from fermetric.engine.checkpoint import default_weights_path

REPO = Path(__file__).resolve().parents[2]
CARD_RESULT = REPO / "benchmarks" / "results" / "default_model_fer2013_test.json"


def test_default_model_ships_inside_the_package():
    path = default_weights_path()
    assert path.is_file()
    assert path.stat().st_size < 25 * 2**20  # the package limit for a shipped model
    predictor = fermetric.load("default")
    assert predictor.classes == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")


def test_demo_finds_the_astronaut_face(capsys):
    assert main(["demo", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(records) == 1
    face = records[0]
    assert face["label"] in face["probabilities"]
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    x0, y0, x1, y1 = face["box"]
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # Eileen Collins' face in the 512 px photo


@pytest.mark.realdata
def test_eval_default_reproduces_the_model_card(shared_data, capsys):
    recorded = json.loads(CARD_RESULT.read_text())
    code = main(
        ["eval", "--checkpoint", "default", "--data", f"fer2013={shared_data / 'fer2013'}", "--split", "test", "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == recorded["metrics"]["n"] == 3589
    assert result["accuracy"] == pytest.approx(recorded["metrics"]["accuracy"], abs=1e-9)
    assert result["macro_f1"] == pytest.approx(recorded["metrics"]["macro_f1"], abs=1e-9)


@pytest.mark.realdata
def test_bf16_predictions_agree_with_fp32_on_fer2013_test(shared_data):
    """The precision policy may pick bf16 for inference: it must not change what users get."""
    import numpy as np

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import embed, preprocessing_from_meta

    test = load_dataset("fer2013", shared_data / "fer2013", "test")
    crops = np.asarray(test.images[:1000])  # bf16 is emulated (slow) on CPUs without native support
    model, meta = load_model("default")
    prep = preprocessing_from_meta(meta)
    fp32, _ = embed(model, crops, prep, precision="fp32")
    bf16, _ = embed(model, crops, prep, precision="bf16")
    agreement = float(np.mean(fp32.argmax(1) == bf16.argmax(1)))
    assert agreement >= 0.995, agreement


def test_shipped_metadata_names_its_own_backbone():
    from fermetric.engine.checkpoint import load_weights

    _, meta = load_weights(default_weights_path())
    backbone = meta["recipe"]["model"]["backbone"]
    assert "ResNet" not in meta["recipe"]["description"] or backbone.startswith("resnet")
