"""make_tables: hand-made result files (written in tmp_path) give hand-computed cells."""

from __future__ import annotations

import json
import statistics

import make_tables
import pytest
import specs

DOC = (
    """# Results
intro text that must survive
<!-- fermetric:main:start -->
old table
<!-- fermetric:main:end -->
between
"""
    + "\n".join(
        f"<!-- fermetric:{name}:start -->\n<!-- fermetric:{name}:end -->"
        for name in make_tables.SECTIONS
        if name != "main"
    )
    + "\ntrailer\n"
)


def result(table="main", name="ce", dataset="fer2013", seed=0, fold=None, accuracy=0.5, **extra) -> dict:
    record = {
        "schema": specs.SCHEMA,
        "table": table,
        "name": name,
        "recipe": name,
        "dataset": dataset,
        "seed": seed,
        "fold": fold,
        "num_folds": 3 if fold is not None else None,
        "split": "test",
        "tta": "none",
        "epochs": 30,
        "max_steps": None,
        "concurrent_runs": 1,
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "device": "NVIDIA H100 80GB HBM3",
        "torch_version": "2.11.0+cu130",
        "cuda_version": "13.0",
        "fermetric_version": "0.1.0",
        "git_commit": "abc1234def",
        "date": f"2026-11-2{seed}T10:00:00+00:00",
        "metrics": {
            "accuracy": accuracy,
            "macro_f1": accuracy - 0.1,
            "knn_accuracy": accuracy - 0.05,
            "map_at_r": None,
            "precision_at_1": None,
            "nmi": None,
            "centroid_accuracy": None,
            "n": 100,
        },
    }
    record.update(extra)
    return record


def write(root, record, stem=None) -> None:
    path = specs.result_path(
        root,
        record["dataset"],
        record["table"],
        record["name"],
        record["seed"],
        record["fold"],
        record.get("concurrent_runs"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def row_of(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_main_table_mean_and_sample_std_over_seeds(tmp_path):
    for seed, acc in enumerate([0.70, 0.72, 0.77]):
        write(tmp_path, result(seed=seed, accuracy=acc))
    write(tmp_path, result(name="mtdml", seed=0, accuracy=0.6543))
    (tmp_path / "loss_step_time_h100.json").write_text('{"ce": {"ms": 1.0}}')  # another tool's output: ignored
    records = make_tables.load_results(tmp_path)
    assert sorted(r["_file"] for r in records) == [
        "fer2013/ce-seed0.json",
        "fer2013/ce-seed1.json",
        "fer2013/ce-seed2.json",
        "fer2013/mtdml-seed0.json",
    ]
    text = make_tables.render_main(records)
    fer = text.split("**FER+**")[0]
    accs = [70.0, 72.0, 77.0]
    expected = f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f}"
    assert expected == "73.00 ± 3.61"
    ce = row_of(fer, "Cross-entropy (baseline)")
    assert ce[1] == expected
    assert ce[2] == f"{statistics.mean([60, 62, 67]):.2f} ± {statistics.stdev([60, 62, 67]):.2f}"
    assert ce[4] == "n/a"  # MAP@R missing from these runs
    assert ce[5] == "reference" and ce[8] == "3 seeds" and ce[9] == "30"
    assert row_of(fer, "MT-DML")[1:3] == ["65.43", "55.43"]  # one seed: no ± part
    assert row_of(fer, "DMSL")[1] == "not run"
    assert row_of(text.split("**FER+**")[1], "Cross-entropy (baseline)")[1] == "not run"


def test_kfold_mean_std_over_folds_of_seed_averages(tmp_path):
    accs = {(0, 0): 0.90, (1, 0): 0.94, (0, 1): 0.80, (1, 1): 0.80, (0, 2): 1.00}  # (seed, fold); fold 2 has one seed
    for (seed, fold), acc in accs.items():
        write(tmp_path, result(dataset="ckplus48", seed=seed, fold=fold, accuracy=acc))
    text = make_tables.render_main(make_tables.load_results(tmp_path))
    ck = text.split("**CK+ (10-fold)**")[1]
    folds = [92.0, 80.0, 100.0]  # per fold, mean over its seeds
    row = row_of(ck, "Cross-entropy (baseline)")
    assert row[1] == f"{statistics.mean(folds):.2f} ± {statistics.stdev(folds):.2f}"
    assert row[8] == "2 seeds x 3 folds"
    write(tmp_path, result(dataset="ckplus48", name="dmsl", seed=0, fold=1, accuracy=0.5))
    row = row_of(make_tables.render_main(make_tables.load_results(tmp_path)).split("**CK+ (10-fold)**")[1], "DMSL")
    assert row[1] == "50.00" and row[8] == "1 seed x 1/3 folds"


def with_predictions(record: dict, correct) -> dict:
    """``record`` with per-image predictions right where ``correct`` is 1 (labels all class 0)."""
    labels = [0] * len(correct)
    record.update(
        predictions=[0 if c else 1 for c in correct],
        labels=labels,
        metrics={**record["metrics"], "accuracy": sum(correct) / len(correct)},
    )
    return record


def test_accuracy_difference_to_ce_with_a_paired_interval(tmp_path):
    import numpy as np

    rng = np.random.default_rng(1)
    ce_correct = (rng.random(400) < 0.6).astype(int)
    ours = ce_correct.copy()
    flip = rng.choice(400, size=40, replace=False)  # 40 images change: ~30 gained, ~10 lost
    ours[flip[:30]], ours[flip[30:]] = 1, 0
    write(tmp_path, with_predictions(result(name="ce"), ce_correct.tolist()))
    write(tmp_path, with_predictions(result(name="mtdml"), ours.tolist()))
    write(tmp_path, result(name="dmsl", accuracy=0.6))  # an older file without predictions
    fer = make_tables.render_main(make_tables.load_results(tmp_path)).split("**FER+**")[0]
    cell = row_of(fer, "MT-DML")[5]
    d = ours - ce_correct
    # independent: the normal approximation of the bootstrap distribution of mean(d)
    mean, sd = d.mean(), d.std() / np.sqrt(len(d))
    shown = [float(x) for x in cell.replace("[", " ").replace("]", " ").replace(",", " ").split()]
    assert shown[0] == pytest.approx(100 * mean, abs=0.005)
    assert shown[1] == pytest.approx(100 * (mean - 1.96 * sd), abs=100 * 0.25 * sd)
    assert shown[2] == pytest.approx(100 * (mean + 1.96 * sd), abs=100 * 0.25 * sd)
    assert row_of(fer, "Cross-entropy (baseline)")[5] == "reference"
    assert row_of(fer, "DMSL")[5] == "n/a (no per-image predictions)"
    assert row_of(fer, "TCL fully-synthesized")[5] == "not run"


def test_kfold_pairs_fold_by_fold_and_refuses_other_images(tmp_path):
    folds = {0: ([1, 1, 0, 0], [1, 1, 1, 0]), 1: ([0, 0, 1], [1, 0, 1])}  # (ce, ours) per fold
    for fold, (ce_correct, ours) in folds.items():
        write(tmp_path, with_predictions(result(dataset="ckplus48", name="ce", fold=fold), ce_correct))
        write(tmp_path, with_predictions(result(dataset="ckplus48", name="mtdml", fold=fold), ours))
    records = make_tables.load_results(tmp_path)
    ck = make_tables.render_main(records).split("**CK+ (10-fold)**")[1]
    assert row_of(ck, "MT-DML")[5].startswith("+28.57 [")  # (5 - 3) / 7 images over both folds
    mtdml = [r for r in records if r["name"] == "mtdml"]
    mtdml[0]["labels"] = [1] * len(mtdml[0]["labels"])
    with pytest.raises(make_tables.TableError, match="different images"):
        make_tables.render_main(records)


def test_a_fine_tuned_row_is_paired_with_ce_fine_tuned_the_same_way(tmp_path):
    scratch, tuned_ce, tuned_tcl = [0, 0, 0, 1], [1, 1, 0, 1], [1, 1, 1, 1]
    for name, correct in (("ce", scratch), ("ce-from-fer2013", tuned_ce), ("tcl-full-from-fer2013", tuned_tcl)):
        write(tmp_path, with_predictions(result(dataset="ckplus48", name=name, fold=0), correct))
    write(tmp_path, with_predictions(result(dataset="ckplus48", name="dmsl-from-ferplus", fold=0), tuned_tcl))
    ck = make_tables.render_main(make_tables.load_results(tmp_path)).split("**CK+ (10-fold)**")[1]
    assert row_of(ck, "Cross-entropy (baseline)")[5] == "reference"
    assert row_of(ck, "ce-from-fer2013")[5] == "reference"
    assert row_of(ck, "tcl-full-from-fer2013")[5].startswith("+25.00 [")  # 4/4 against 3/4, not 1/4
    assert row_of(ck, "dmsl-from-ferplus")[5] == "n/a (no ce-from-ferplus run)"


def test_ablations_published_and_provenance(tmp_path):
    write(tmp_path, result(table="ablations", name="mtdml-nodual", seed=0, accuracy=0.61))
    write(
        tmp_path, result(table="ablations", name="mtdml", seed=0, accuracy=0.63, reused_from="fer2013/mtdml-seed0.json")
    )
    write(tmp_path, result(name="tcl-semi", seed=0, accuracy=0.66))
    write(tmp_path, result(name="ce", seed=0, accuracy=0.64))
    records = make_tables.load_results(tmp_path)
    ablations = make_tables.render_ablations(records)
    assert (
        "| dual off (plain batch-hard) | 61.00 | 51.00 | 56.00 | n/a | n/a (no per-image predictions) | 1 seed | 30 |"
        in ablations
    )
    assert "| 8 slices x 64 (default) | 63.00 | 53.00 | 58.00 | n/a | reference |" in ablations
    assert "| 1 slice x 512 | not run |" in ablations
    published = make_tables.render_published(records)
    assert "| FER2013 | LHC-Net (single network) | 74.42 |" in published
    assert "| FER2013 | fermetric TCL semi-synthesized | 66.00 |" in published  # the best recipe
    assert "| FER+ | fermetric, best recipe | not run |" in published
    provenance = make_tables.render_provenance(records)
    assert "NVIDIA H100 80GB HBM3" in provenance and "2.11.0+cu130" in provenance and "abc1234def" in provenance
    assert "| 2 (1 reused) |" in provenance and "| 2 |" in provenance  # ablations: 2 runs; main: 2 runs


def test_the_cpu_ablation_table_has_the_blocks_the_cpu_protocol_runs(tmp_path):
    assert specs.ablation_variants("cpu") == [
        "mtdml",
        "mtdml-slices1",
        "mtdml-slices4",
        "mtdml-slices16",
        "mtdml-nodual",
        "tcl-full",
        "tcl-semi",
        "tcl-pred",
        "tcl-full-noattention",
        "dmsl",
        "dmsl-sigma1.0",
        "pidml",
        "pidml-nopartial",
    ]
    assert set(specs.ablation_variants("gpu")) == set(specs.VARIANTS)
    write(tmp_path, result(table="ablations", name="dmsl-sigma1.0", accuracy=0.58, scale="cpu"))
    cpu = make_tables.render_all(make_tables.load_results(tmp_path), scale="cpu")["cpu-ablations"]
    assert "| DMSL: sigma | 0.5 (default) | not run |" in cpu and "|  | 1.0 | 58.00 |" in cpu
    assert "threshold range" not in cpu and "mixup" not in cpu and "0.25" not in cpu
    gpu = make_tables.render_ablations(make_tables.load_results(tmp_path))
    assert "| DMSL: sigma | 0.25 | not run |" in gpu and "threshold range" in gpu


def test_the_cpu_tables_compare_their_own_best_rows_with_the_papers():
    ck = [
        result(name=name, dataset="ckplus48", fold=fold, accuracy=acc, scale="cpu")
        for name, acc in (("mtdml", 0.3), ("mtdml-from-fer2013", 0.9), ("tcl-semi-from-fer2013", 0.95))
        for fold in range(3)
    ]
    gpu = [result(name="ce", accuracy=0.7)]
    sections = make_tables.render_all(ck + gpu, scale="cpu")
    assert set(sections) == {"cpu-main", "cpu-ablations", "cpu-published", "cpu-provenance"}
    published = sections["cpu-published"]
    assert row_of(published.split("| CK+ (10-fold) | MT-DML |")[1], "CK+ (10-fold)")[1:3] == [
        "fermetric TCL semi-synthesized fine-tuned from FER2013",
        "95.00 ± 0.00",
    ]
    assert "| CK+ (10-fold) | fermetric MT-DML | 30.00 ± 0.00 | this repository, CPU protocol, 1 seed x 3 folds |" in (
        published
    )
    assert "| fermetric MT-DML fine-tuned from FER2013 | 90.00 ± 0.00 |" in published
    assert "| FER2013 | fermetric, best recipe | not run | this repository, CPU protocol (main table) |" in published
    main = sections["cpu-main"].split("**CK+ (10-fold)**")[1]  # the CPU protocol's rows: no scratch DMSL
    assert [row_of(main, name)[1] for name in ("MT-DML", "ce-from-fer2013", "mtdml-from-fer2013")] == [
        "30.00 ± 0.00",
        "not run",
        "90.00 ± 0.00",
    ]
    assert "| DMSL |" not in main and "| dmsl-from-fer2013 | not run |" in main


def test_time_to_accuracy_against_the_ce_baseline(tmp_path):
    def history(accs, seconds=10.0):
        return [{"epoch": i + 1, "seconds": seconds, "val_accuracy": a} for i, a in enumerate(accs)]

    write(
        tmp_path,
        result(
            table="time-to-accuracy",
            name="ce",
            seed=0,
            history=history([0.3, 0.5, 0.6, 0.58]),
            train_seconds=40.0,
            steady_images_per_second=1000.0,
        ),
    )
    write(
        tmp_path,
        result(
            table="time-to-accuracy",
            name="ce",
            seed=1,
            history=history([0.4, 0.55, 0.62]),
            train_seconds=30.0,
            steady_images_per_second=1200.0,
        ),
    )
    write(
        tmp_path,
        result(
            table="time-to-accuracy",
            name="mtdml",
            seed=0,
            history=history([0.59, 0.65], seconds=5.0),
            train_seconds=10.0,
            steady_images_per_second=900.0,
        ),
    )
    text = make_tables.render_time_to_accuracy(make_tables.load_results(tmp_path))
    assert "CE best validation accuracy 61.00%" in text  # mean of 0.60 and 0.62
    ce = row_of(text, "Cross-entropy (baseline)")
    # 95% of 0.61 = 0.5795: seed 0 at epoch 3 (30 s), seed 1 at epoch 3 (30 s); 100%: seed 0 never, seed 1 epoch 3
    assert ce[1] == "61.00 ± 1.41"
    assert ce[2:4] == ["3.0 ± 0.0", "30.0 ± 0.0"]
    assert ce[4:6] == ["3.0 (1/2 not reached)", "30.0 (1/2 not reached)"]
    assert ce[6] == "35.0 ± 7.1" and ce[7] == "1100 ± 141"
    mtdml = row_of(text, "MT-DML")
    assert mtdml[2:6] == ["1.0", "5.0", "2.0", "10.0"]
    assert row_of(text, "DMSL")[1] == "not run"


def test_throughput_totals_concurrent_runs(tmp_path):
    for seed in range(3):
        write(
            tmp_path,
            result(
                table="throughput",
                name="ce",
                seed=seed,
                concurrent_runs=3,
                steady_images_per_second=8000.0 + 1000 * seed,
                peak_gpu_memory_bytes=2 * 2**30,
                parameters=11_000_000,
                history=[{"seconds": 4.0}, {"seconds": 3.0}, {"seconds": 3.0}],
            ),
        )
    write(
        tmp_path,
        result(
            table="throughput",
            name="ce",
            seed=0,
            concurrent_runs=1,
            steady_images_per_second=18000.0,
            parameters=11_000_000,
            peak_gpu_memory_bytes=None,
            history=[{"seconds": 2.0}],
        ),
    )
    text = make_tables.render_throughput(make_tables.load_results(tmp_path))
    rows = [line for line in text.splitlines() if line.startswith("| Cross-entropy")]
    assert rows[0].split(" | ")[1:5] == ["1", "18000", "18000", "2.00"]
    assert rows[1].split(" | ")[1:7] == ["3", "9000 ± 1000", "27000", "3.00", "2.00", "11.00"]


def test_document_sections_are_replaced_in_place(tmp_path):
    results, doc = tmp_path / "results", tmp_path / "RESULTS.md"
    doc.write_text(DOC)
    write(results, result(seed=0, accuracy=0.7))
    assert make_tables.main(["--results", str(results), "--doc", str(doc), "--check"]) == 1
    assert doc.read_text() == DOC  # --check writes nothing
    assert make_tables.main(["--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "old table" not in text and "| 70.00 |" in text
    assert text.startswith("# Results\nintro text that must survive\n") and text.endswith("trailer\n")
    assert make_tables.main(["--results", str(results), "--doc", str(doc), "--check"]) == 0
    doc.write_text(DOC.replace("<!-- fermetric:throughput:end -->", ""))
    assert make_tables.main(["--results", str(results), "--doc", str(doc)]) == 2


def test_bundles_are_unpacked_and_cannot_escape(tmp_path, capsys):
    good = result(seed=1, accuracy=0.7)
    lines = [
        json.dumps({"file": "fer2013/ce-seed1.json", "result": good}),
        json.dumps({"file": "fer2013/dmsl-seed0.json", "error": "loss is nan at epoch 3"}),
        json.dumps({"file": "fer2013/mtdml-seed0.json", "result": result(name="mtdml")})[:40],
    ]  # cut by a kill
    bundle = tmp_path / "main-fer2013.jsonl"
    bundle.write_text("\n".join(lines) + "\n")
    root = tmp_path / "results"
    assert make_tables.import_bundles([bundle], root) == (1, 1)
    assert json.loads((root / "fer2013" / "ce-seed1.json").read_text()) == good
    assert "loss is nan" in capsys.readouterr().err
    evil = tmp_path / "evil.jsonl"
    evil.write_text(json.dumps({"file": "../outside.json", "result": good}) + "\n")
    with pytest.raises(make_tables.TableError, match="outside"):
        make_tables.import_bundles([evil], root)
    assert not (tmp_path / "outside.json").exists()


def test_an_ablation_row_is_paired_with_its_blocks_default_run(tmp_path):
    labels = [0, 1, 2, 3, 0, 1, 2, 3]
    default = [0, 1, 2, 3, 0, 1, 0, 0]  # 6 of 8 right
    variant = [0, 1, 2, 3, 0, 0, 0, 0]  # 5 of 8: the one image it loses is one the default got
    write(tmp_path, result(table="ablations", name="tcl-full", accuracy=0.75, labels=labels, predictions=default))
    write(tmp_path, result(table="ablations", name="tcl-pred", accuracy=0.625, labels=labels, predictions=variant))
    write(tmp_path, result(table="ablations", name="mtdml-nodual", accuracy=0.6, labels=labels, predictions=variant))
    text = make_tables.render_ablations(make_tables.load_results(tmp_path))

    def row_of(text, setting):  # an ablation row is found by its setting (column 2)
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()]
        return next(cells for cells in rows if len(cells) > 1 and cells[1] == setting)

    pred = row_of(text, "prediction-based")
    assert pred[-3].startswith("-12.50 [")  # 5/8 - 6/8, against fully-synthesized, not against ce
    assert row_of(text, "fully-synthesized (default)")[-3] == "reference"
    assert row_of(text, "dual off (plain batch-hard)")[-3] == "n/a (no default run)"
    assert row_of(text, "attention off")[-3] == "not run"
