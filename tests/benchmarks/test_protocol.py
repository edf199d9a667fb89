"""protocol.py: one tiny CPU run end to end, resumable skipping, budget, reuse, folds and failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fermetric.engine.train", reason="the training engine (src/fermetric/engine/train.py) is absent")

import make_tables  # noqa: E402
import protocol  # noqa: E402
import specs  # noqa: E402

TINY = [
    "--set",
    "model.backbone=tiny",
    "--set",
    "model.embedding_dim=16",
    "--set",
    "data.input_size=16",
    "--set",
    "data.batch_size=14",
    "--epochs",
    "1",
    "--max-steps",
    "2",
    "--device",
    "cpu",
]


def args(tmp_path: Path, pack: Path, *extra: str) -> list[str]:
    return [
        "--data",
        f"packed={pack}",
        "--out",
        str(tmp_path / "results"),
        "--work",
        str(tmp_path / "work"),
        "--bundle",
        str(tmp_path / "out" / "bundle.jsonl"),
        *TINY,
        *extra,
    ]


def test_one_tiny_run_end_to_end(tmp_path, fer_pack, capsys):
    import torch

    import fermetric

    rc = protocol.main(["--table", "main", "--seeds", "0", "--recipes", "ce", *args(tmp_path, fer_pack)])
    assert rc == 0, capsys.readouterr()
    path = tmp_path / "results" / "fer2013" / "ce-seed0.json"
    record = json.loads(path.read_text())
    assert record["schema"] == specs.SCHEMA and (record["table"], record["recipe"], record["seed"]) == ("main", "ce", 0)
    assert record["dataset"] == "fer2013" and record["split"] == "test" and record["tta"] == "none"
    assert set(specs.METRICS) <= set(record["metrics"]) and record["metrics"]["n"] == 14  # 7 classes x 2 test faces
    assert all(0.0 <= record["metrics"][m] <= 1.0 for m in specs.METRICS)
    assert record["epochs"] == 1 and 1 <= record["steps"] <= 2 and record["max_steps"] == 2
    assert record["torch_version"] == torch.__version__ and record["fermetric_version"] == fermetric.__version__
    assert record["device"].startswith("cpu") and record["gpu_name"] is None and record["date"]
    assert record["concurrent_runs"] == 1 and record["parameters"] > 0 and record["train_images"] == 28
    assert [h["epoch"] for h in record["history"]] == [1] and record["history"][0]["val_accuracy"] is not None
    assert "model.backbone=tiny" in record["overrides"] and "epochs=1" in record["overrides"]
    # The JSON reports what the engine measured on the test split, and the run's checkpoints are gone.
    run_dir = tmp_path / "work" / "fer2013" / "ce-seed0"
    engine = json.loads((run_dir / "results.json").read_text())
    assert record["metrics"]["accuracy"] == engine["metrics"]["test"]["accuracy"]
    assert record["val"]["accuracy"] == engine["metrics"]["val"]["accuracy"]
    assert not list(run_dir.glob("*.pt")) and (run_dir / "model.safetensors").exists()
    # Per-image test predictions (for the paired intervals), each numeric array on one line.
    assert len(record["predictions"]) == len(record["labels"]) == 14
    hits = sum(p == t for p, t in zip(record["predictions"], record["labels"]))
    assert hits / 14 == pytest.approx(record["metrics"]["accuracy"])
    assert '"labels": [' + ", ".join(str(v) for v in record["labels"]) + "]" in path.read_text()
    # An older file without them gets the same predictions back from the saved weights.
    import add_predictions

    path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("predictions", "labels")}))
    assert add_predictions.backfill(path, tmp_path / "results", tmp_path / "work").startswith("added")
    backfilled = json.loads(path.read_text())
    assert backfilled["predictions"] == record["predictions"] and backfilled["labels"] == record["labels"]
    assert add_predictions.backfill(path, tmp_path / "results", tmp_path / "work") == "has predictions"
    path.write_text(json.dumps(record) + "\n")
    # The bundle holds the same record, keyed by its path under the results root.
    lines = (tmp_path / "out" / "bundle.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"file": "fer2013/ce-seed0.json", "result": record}]

    # A second call skips the existing result without training.
    before = path.stat().st_mtime_ns
    capsys.readouterr()
    assert protocol.main(["--table", "main", "--seeds", "0", "--recipes", "ce", *args(tmp_path, fer_pack)]) == 0
    assert "1 exist, 0 reused, 0 to run" in capsys.readouterr().out and path.stat().st_mtime_ns == before
    # ... and warns when the existing result was made with other settings.
    protocol.main(["--table", "main", "--seeds", "0", "--recipes", "ce", *args(tmp_path, fer_pack), "--epochs", "2"])
    assert "differs" in capsys.readouterr().out and path.stat().st_mtime_ns == before

    table = make_tables.render_main(make_tables.load_results(tmp_path / "results"))
    assert f"| Cross-entropy (baseline) | {100 * record['metrics']['accuracy']:.2f} |" in table


def test_time_budget_starts_nothing_it_cannot_fit(tmp_path, fer_pack, capsys):
    rc = protocol.main(
        ["--table", "main", "--seeds", "0", "1", "--recipes", "ce", "--time-budget", "0", *args(tmp_path, fer_pack)]
    )
    assert rc == protocol.EXIT_BUDGET
    assert "0 done, 0 failed, 2 left" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_ablation_defaults_reuse_the_identical_main_run(tmp_path, fer_pack, capsys):
    settings_args = args(tmp_path, fer_pack)
    parsed = protocol.build_parser().parse_args(["--table", "ablations", *settings_args])
    overrides = list(parsed.overrides) + [f"epochs={parsed.epochs}"]
    from fermetric.config import load_recipe

    main_record = {
        "schema": specs.SCHEMA,
        "table": "main",
        "name": "mtdml",
        "recipe": "mtdml",
        "dataset": "fer2013",
        "seed": 0,
        "fold": None,
        "max_steps": 2,
        "concurrent_runs": 2,
        "overrides": overrides,
        "metrics": {"accuracy": 0.5},
        "recipe_config": protocol.recipe_json(load_recipe("mtdml", overrides)),
    }
    main_path = tmp_path / "results" / "fer2013" / "mtdml-seed0.json"
    main_path.parent.mkdir(parents=True)
    main_path.write_text(json.dumps(main_record))

    rc = protocol.main(
        ["--table", "ablations", "--seeds", "0", "--ablations", "mtdml", "mtdml-nodual", "--dry-run", *settings_args]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "reuse  fer2013/ablations/mtdml-seed0.json <- fer2013/mtdml-seed0.json" in out
    assert "run    fer2013/ablations/mtdml-nodual-seed0.json" in out
    assert protocol.main(["--table", "ablations", "--seeds", "0", "--ablations", "mtdml", *settings_args]) == 0
    reused = json.loads((tmp_path / "results" / "fer2013" / "ablations" / "mtdml-seed0.json").read_text())
    assert reused["reused_from"] == "fer2013/mtdml-seed0.json" and reused["table"] == "ablations"
    assert reused["metrics"] == main_record["metrics"]
    # Timing tables reuse only runs that trained alone: this one shared the device.
    capsys.readouterr()
    protocol.main(["--table", "time-to-accuracy", "--seeds", "0", "--recipes", "mtdml", "--dry-run", *settings_args])
    assert "run    fer2013/time-to-accuracy/mtdml-seed0.json" in capsys.readouterr().out


def test_the_default_ablations_are_those_of_the_scales_table(tmp_path, fer_pack, capsys):
    for scale in ("cpu", "gpu"):
        rc = protocol.main(
            ["--table", "ablations", "--seeds", "0", "--scale", scale, "--dry-run", *args(tmp_path, fer_pack)]
        )
        planned = {line.split("/")[-1] for line in capsys.readouterr().out.splitlines() if "ablations/" in line}
        assert rc == 0 and planned == {f"{name}-seed0.json" for name in specs.ablation_variants(scale)}


def test_subject_folds_are_planned_per_fold(tmp_path, ck_pack, capsys):
    rc = protocol.main(
        ["--table", "main", "--seeds", "0", "1", "--recipes", "ce", "--dry-run", *args(tmp_path, ck_pack)]
    )
    out = capsys.readouterr().out
    planned = sorted(line.split()[1] for line in out.splitlines() if line.startswith("run "))
    assert rc == 0 and planned == sorted(f"ckplus48/ce-seed{s}-fold{f}.json" for s in (0, 1) for f in range(3))
    assert protocol.main(["--table", "main", "--folds", "3", "--dry-run", *args(tmp_path, ck_pack)]) == 2
    assert protocol.main(["--table", "time-to-accuracy", "--dry-run", *args(tmp_path, ck_pack)]) == 2
    assert "needs a validation split" in capsys.readouterr().err


def test_bad_settings_fail_before_training_and_failed_runs_are_recorded(tmp_path, fer_pack, capsys):
    assert (
        protocol.main(
            ["--table", "main", "--recipes", "ce", "--set", "model.no_such_option=1", *args(tmp_path, fer_pack)]
        )
        == 2
    )
    assert "no_such_option" in capsys.readouterr().err
    assert protocol.main(["--table", "main", "--recipes", "nonesuch", *args(tmp_path, fer_pack)]) == 2
    # A run that fails inside training is reported, recorded in the bundle, and leaves no result.
    rc = protocol.main(
        [
            "--table",
            "main",
            "--seeds",
            "0",
            "--recipes",
            "ce",
            *args(tmp_path, fer_pack),
            "--set",
            "model.backbone=no_such_backbone",
        ]
    )
    assert rc == protocol.EXIT_FAILED
    assert "FAILED fer2013/ce-seed0.json" in capsys.readouterr().out
    entry = json.loads((tmp_path / "out" / "bundle.jsonl").read_text())
    assert entry["file"] == "fer2013/ce-seed0.json" and "no_such_backbone" in entry["error"]
    assert not (tmp_path / "results" / "fer2013" / "ce-seed0.json").exists()


def test_ck_runs_fine_tune_from_their_own_fer2013_run(tmp_path, fer_pack, ck_pack, capsys):
    def ck_args(*extra):
        return [
            "--data",
            f"packed={ck_pack}",
            "--out",
            str(tmp_path / "results"),
            "--work",
            str(tmp_path / "work"),
            *TINY,
            "--folds",
            "0",
            *extra,
        ]

    # Without the FER2013 run there is nothing to start from: a clear failure, nothing written.
    rc = protocol.main(["--table", "main", "--seeds", "0", "--recipes", "ce", *ck_args("--init-from", "fer2013")])
    assert rc == protocol.EXIT_FAILED and "run the ce seed 0 main-table run on fer2013 first" in capsys.readouterr().out
    assert protocol.main(["--table", "main", "--seeds", "0", "--recipes", "ce", *args(tmp_path, fer_pack)]) == 0
    rc = protocol.main(["--table", "main", "--seeds", "0", "--recipes", "ce", *ck_args("--init-from", "fer2013")])
    assert rc == 0, capsys.readouterr()
    record = json.loads((tmp_path / "results" / "ckplus48" / "ce-from-fer2013-seed0-fold0.json").read_text())
    assert record["init_from"].endswith("fer2013/ce-seed0/model.safetensors") and record["recipe"] == "ce"
    engine = json.loads((tmp_path / "work" / "ckplus48" / "ce-from-fer2013-seed0-fold0" / "results.json").read_text())
    assert engine["classes"] != json.loads((tmp_path / "results" / "fer2013" / "ce-seed0.json").read_text())["classes"]
    from fermetric.engine.checkpoint import load_weights

    _, meta = load_weights(tmp_path / "work" / "ckplus48" / "ce-from-fer2013-seed0-fold0" / "model.safetensors")
    assert meta["init_classifier"] == "new"  # CK+ has contempt and no neutral: a new classifier


def test_a_result_written_before_a_new_recipe_section_is_still_the_same_recipe():
    from fermetric.config import load_recipe

    recipe = load_recipe("mtdml", ["epochs=3"])
    stored = protocol.recipe_json(recipe)
    older = {key: value for key, value in stored.items() if key != "distill"}  # as d06c959 wrote it
    assert "distill" in stored and protocol.same_recipe(older, recipe)
    changed = json.loads(json.dumps(older))
    changed["epochs"] = 4
    assert not protocol.same_recipe(changed, recipe)
    assert not protocol.same_recipe(None, recipe)
    assert not protocol.same_recipe({"no_such_section": {}}, recipe)
