"""The shipped models: they load offline by name, the README's demo runs, and every figure the
catalogue (weights/models.json, shown by `fermetric info`) states is its result file's and
reproduces."""

import json
from pathlib import Path

import pytest

import fermetric
from fermetric.cli import main
from fermetric.engine.checkpoint import default_weights_path, load_weights, resolve_source
from fermetric.engine.shipped import CATALOGUE, shipped_models, weights_dir
from fermetric.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]
MEASURED = [(name, index) for name, model in shipped_models().items() for index in range(len(model.measured))]


def test_default_model_ships_inside_the_package():
    path = default_weights_path()
    assert path.is_file() and resolve_source("default") == path
    predictor = fermetric.load("default")
    assert predictor.classes == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry")


def test_the_catalogue_lists_every_weights_file_and_the_package_stays_small():
    models = shipped_models()
    assert "default" in models
    assert {model.path.name for model in models.values()} == {p.name for p in weights_dir().glob("*.safetensors")}
    total = sum(p.stat().st_size for p in weights_dir().iterdir())
    assert total < 45 * 2**20  # the wheel's limit is 50 MB in all
    for name, model in models.items():
        _, meta = load_weights(model.path)
        assert fermetric.load(name).classes == tuple(meta["classes"])
        assert model.measured, f"{name}: a shipped model states what was measured on it"


@pytest.mark.parametrize(("name", "index"), MEASURED)
def test_every_catalogue_figure_is_its_result_files(name, index):
    measured = shipped_models()[name].measured[index]
    recorded = json.loads((REPO / measured["result"]).read_text())
    assert recorded["checkpoint"] == name and recorded["data"] == measured["dataset"]
    assert recorded["split"] == measured["split"] and recorded["tta"] == "none"
    for key in ("n", "accuracy", "macro_f1"):
        assert measured[key] == pytest.approx(recorded["metrics"][key], abs=1e-12), key


def test_an_unknown_name_lists_the_shipped_models_and_a_local_folder_is_reached_by_path(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="default"):
        resolve_source("no-such-model")
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve_source("default") == default_weights_path()  # the name wins...
    assert resolve_source("./default") == Path("./default/model.safetensors")  # ...a path reaches the folder
    assert CATALOGUE == "models.json"


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
@pytest.mark.parametrize(("name", "index"), MEASURED)
def test_eval_reproduces_the_catalogue(shared_data, capsys, name, index):
    measured = shipped_models()[name].measured[index]
    dataset, split = measured["dataset"], measured["split"]
    data = f"{dataset}={shared_data / dataset}"
    # --reference none: accuracy and macro-F1 do not depend on it, and embedding the train split
    # costs minutes; fp32: the catalogue's figures are fp32 ones (auto may pick bf16 on AMX CPUs)
    options = ["--split", split, "--reference", "none", "--precision", "fp32", "--json"]
    assert main(["eval", "--checkpoint", name, "--data", data, *options]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == measured["n"]
    # other thread counts and kernels may flip a near-tie or two, never more
    assert result["accuracy"] == pytest.approx(measured["accuracy"], abs=2.5 / measured["n"])
    assert result["macro_f1"] == pytest.approx(measured["macro_f1"], abs=0.002)


@pytest.mark.realdata
@pytest.mark.timeout(1200)  # emulated bf16 took 328 s beside a training run (300 s is the default)
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
    # measured 98.4% for the MobileNetV2 default (its near-ties flip under bf16's 8-bit mantissa;
    # the earlier tiny CNN agreed on >= 99.5%); the model card states it
    assert agreement >= 0.98, agreement


def test_shipped_metadata_names_its_own_backbone():
    from fermetric.engine.checkpoint import load_weights

    _, meta = load_weights(default_weights_path())
    backbone = meta["recipe"]["model"]["backbone"]
    assert "ResNet" not in meta["recipe"]["description"] or backbone.startswith("resnet")


def test_every_shipped_model_records_the_side_of_its_48_px_training_faces():
    """Photos are cropped at this side (``crop_resolution="train"``); FER2013 and FER+ are 48 px."""
    for name, model in shipped_models().items():
        _, meta = load_weights(model.path)
        assert meta["train_image_size"] == 48, name
        assert meta["dataset"].split()[0] in ("fer2013", "ferplus"), name


def test_every_shipped_model_records_its_training_class_prior():
    """``prior="uniform"`` needs it; with the data present, it is FER2013 Training's class shares,
    counted here from the image folders (FER+ drops images by vote, so only the FER2013 models)."""
    import numpy as np

    from tests.conftest import SHARED_DATA

    for name, model in shipped_models().items():
        _, meta = load_weights(model.path)
        prior = np.asarray(meta["class_prior"])
        assert prior.shape == (len(meta["classes"]),) and prior.min() > 0 and prior.sum() == pytest.approx(1)
        fer2013 = SHARED_DATA / "fer2013" / "train"
        if meta["dataset"] == "fer2013" and fer2013.is_dir():
            counts = np.array([len(list((fer2013 / c).iterdir())) for c in meta["classes"]])
            assert prior == pytest.approx(counts / counts.sum(), abs=1e-9), name


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_every_shipped_model_carries_an_int8_calibration_this_torchao_can_use(name):
    pytest.importorskip("torchao")
    from fermetric.engine.checkpoint import load_model
    from fermetric.models.quantize import quantize_int8

    model, meta = load_model(name)
    calibration = meta["int8_calibration"]
    assert calibration["faces"] >= 512 and calibration["data"].endswith("/train")  # never a test split
    quantize_int8(model, calibration, meta["preprocessing"]["size"])  # the stored ranges fit this graph


@pytest.mark.realdata
@pytest.mark.parametrize("backend, needs", [("compiled-int8", "torchao"), ("openvino-int8", "openvino")])
def test_int8_predictions_agree_with_fp32_on_fer2013_test(shared_data, backend, needs):
    """The int8 backends must not change what users get beyond int8's near-ties."""
    pytest.importorskip(needs)
    import numpy as np

    from fermetric.data import load_dataset

    test = load_dataset("fer2013", shared_data / "fer2013", "test")
    crops = np.ascontiguousarray(test.images)
    fp32 = fermetric.load("default", precision="fp32").run_crops(crops)[0]
    int8 = fermetric.load("default", backend=backend).run_crops(crops)[0]
    agreement = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    # compiled-int8: 96.9% of the 3589 faces for the previous default (accuracy 69.57 vs 69.77%, a tie);
    # the shipped one scores 70.21 (compiled-int8) and 70.02% (openvino-int8) vs 70.08% (docs/RESULTS.md)
    assert agreement >= 0.95, agreement
