"""Training: every recipe learns, runs are reproducible, resume is exact, failures are clean."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fermetric.engine import checkpoint as ckpt
from fermetric.engine import rundir
from fermetric.engine import train as train_module
from fermetric.engine.train import train
from fermetric.errors import ConfigError, TrainingError
from tests.training_faults import nan_losses_at

from .engine_helpers import assert_same_run, final_weights, single_thread, tiny_recipe
from .engine_helpers import history as read_history

RECIPES = ["ce", "mtdml", "dmsl", "tcl-full", "tcl-semi", "tcl-pred", "pidml"]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_reduces_the_loss(name, tiny_sets, tmp_path):
    train_set, val_set, _ = tiny_sets
    # Milder augmentation (no erasing/rotation) so that 3-batch epoch means are not dominated by it.
    recipe = tiny_recipe(name, epochs=4, **{"optim.lr": 0.1, "data.augment.erasing": 0.0, "data.augment.rotation": 0.0})
    results = train(recipe, train_set, val_set, tmp_path, device="cpu", seed=0, progress=False)
    history = read_history(tmp_path)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    losses = [h["train"]["loss"] for h in history]
    assert np.mean(losses[-2:]) < 0.85 * losses[0], losses
    if name != "ce":
        assert set(history[0]["train"]) == {"loss", "ce", "metric"}
        # the method's own term must fall too (a DMSL sigma on the wrong scale once made it rise)
        metric = [h["train"]["metric"] for h in history]
        assert np.mean(metric[-2:]) < 0.9 * metric[0], metric
    # the embedding head's BatchNorm shift stays at 0 (a learnable one let MT-DML collapse z)
    weights = final_weights(tmp_path)
    assert not weights["embedding_head.bn.bias"].any()
    val = results["metrics"]["val"]
    assert val["n"] == len(val_set) and 0 <= val["accuracy"] <= 1 and val["reference"] == "synthetic/train"
    assert results["recipe"] == name and results["tta"] == "none" and results["steps"] == 12
    assert {"best.pt", "last.pt", "last.prev.pt", "model.safetensors", "results.json"} <= {
        p.name for p in tmp_path.iterdir()
    }


# A recipe that exercises every piece of resumable state: learnable centres (tcl), an EMA, dropout
# (global torch RNG), the P x K sampler and augmentation.
RESUME_OVERRIDES = {"ema": 0.9, "model.dropout": 0.2, "data.sampler": "pk"}


@pytest.fixture(scope="module")
def reference_run(tiny_sets, tmp_path_factory):
    """An uninterrupted 2-epoch tcl-full run (3 steps per epoch)."""
    out = tmp_path_factory.mktemp("reference")
    train_set, val_set, test_set = tiny_sets
    with single_thread():  # module fixtures run outside the autouse one_torch_thread
        train(
            tiny_recipe("tcl-full", epochs=2, **RESUME_OVERRIDES),
            train_set,
            val_set,
            out,
            device="cpu",
            seed=3,
            deterministic=True,
            progress=False,
            test_set=test_set,
        )
    return out


def test_same_seed_same_run_other_seed_other_run(tiny_sets, reference_run, tmp_path):
    train_set, val_set, test_set = tiny_sets
    recipe = tiny_recipe("tcl-full", epochs=2, **RESUME_OVERRIDES)
    train(
        recipe,
        train_set,
        val_set,
        tmp_path / "again",
        device="cpu",
        seed=3,
        deterministic=True,
        progress=False,
        test_set=test_set,
    )
    assert_same_run(reference_run, tmp_path / "again")
    train(
        tiny_recipe("ce", epochs=1),
        train_set,
        val_set,
        tmp_path / "a",
        device="cpu",
        seed=1,
        progress=False,
        max_steps=2,
    )
    train(
        tiny_recipe("ce", epochs=1),
        train_set,
        val_set,
        tmp_path / "b",
        device="cpu",
        seed=2,
        progress=False,
        max_steps=2,
    )
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("stop_after", [3, 4])  # at the end of epoch 1 / inside epoch 2
def test_resume_equals_uninterrupted(tiny_sets, reference_run, tmp_path, stop_after):
    train_set, val_set, test_set = tiny_sets
    recipe = tiny_recipe("tcl-full", epochs=2, **RESUME_OVERRIDES)
    first = train(
        recipe,
        train_set,
        val_set,
        tmp_path,
        device="cpu",
        seed=3,
        deterministic=True,
        progress=False,
        test_set=test_set,
        max_steps=stop_after,
    )
    assert first["steps"] == stop_after and first["stopped_by_max_steps"]
    assert ckpt.load(tmp_path / "last.pt")["step"] == stop_after
    with pytest.raises(TrainingError, match="already holds a run"):
        train(recipe, train_set, val_set, tmp_path, device="cpu", seed=3, deterministic=True, progress=False)
    with pytest.raises(TrainingError, match="different recipe"):
        train(
            tiny_recipe("tcl-full", epochs=3, **RESUME_OVERRIDES),
            train_set,
            val_set,
            tmp_path,
            device="cpu",
            seed=3,
            deterministic=True,
            progress=False,
            resume=True,
        )
    train(
        recipe,
        train_set,
        val_set,
        tmp_path,
        device="cpu",
        seed=3,
        deterministic=True,
        progress=False,
        test_set=test_set,
        resume=True,
    )
    assert_same_run(reference_run, tmp_path)


def test_corrupt_last_falls_back_to_previous(tiny_sets, reference_run, tmp_path):
    train_set, val_set, test_set = tiny_sets
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])  # epoch 2's checkpoint is damaged
    (run / "results.json").unlink()
    with pytest.warns(UserWarning, match="last.prev.pt"):
        train(
            tiny_recipe("tcl-full", epochs=2, **RESUME_OVERRIDES),
            train_set,
            val_set,
            run,
            device="cpu",
            seed=3,
            deterministic=True,
            progress=False,
            test_set=test_set,
            resume=True,
        )
    assert_same_run(reference_run, run)  # epoch 2 was trained again, identically


def test_nan_stop_keeps_the_last_good_checkpoint(tiny_sets, tmp_path, monkeypatch):
    train_set, val_set, _ = tiny_sets
    monkeypatch.setattr(train_module.Trainer, "_losses", nan_losses_at({5}))  # epoch 2, batch 2
    with pytest.raises(TrainingError) as info:
        train(tiny_recipe("ce", epochs=2), train_set, val_set, tmp_path, device="cpu", progress=False)
    message = str(info.value)
    assert "epoch 2, step 5 (batch 2)" in message and "last.pt" in message and "\n" not in message
    payload = ckpt.load(tmp_path / "last.pt")
    assert payload["epoch"] == 1 and payload["step"] == 3
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())


def test_nan_skip_drops_batches_and_counts_them(tiny_sets, tmp_path, monkeypatch):
    train_set, val_set, _ = tiny_sets
    monkeypatch.setattr(train_module.Trainer, "_losses", nan_losses_at({2, 4}))
    results = train(
        tiny_recipe("ce", epochs=2), train_set, val_set, tmp_path, device="cpu", progress=False, on_nan="skip"
    )
    history = read_history(tmp_path)
    assert [h["skipped_batches"] for h in history] == [1, 1]
    assert results["skipped_batches"] == 2 and results["steps"] == 4
    assert np.isfinite(history[-1]["train"]["loss"])


def test_unwritable_or_full_output_is_refused_before_work(tiny_sets, tmp_path, monkeypatch):
    train_set, val_set, _ = tiny_sets
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="not writable"):
        train(tiny_recipe("ce"), train_set, val_set, blocker / "run", device="cpu", progress=False)

    class Usage:
        free = 10 * 2**20

    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(TrainingError, match="10 MiB free"):
        train(tiny_recipe("ce"), train_set, val_set, tmp_path / "full", device="cpu", progress=False)
    assert not (tmp_path / "full").exists()  # refused before work, and no empty folder left behind
    with pytest.raises(ConfigError, match="on_nan"):
        train(tiny_recipe("ce"), train_set, val_set, tmp_path / "x", device="cpu", on_nan="ignore")


def test_soft_labels_and_no_validation_split(tmp_path):
    from .engine_helpers import make_imageset

    soft_train = make_imageset(16, seed=4, soft=True)
    results = train(
        tiny_recipe("ce", epochs=1),
        soft_train,
        None,
        tmp_path,
        device="cpu",
        progress=False,
        test_set=make_imageset(4, seed=5, split="test"),
    )
    assert results["selection"].startswith("last epoch (no validation split")
    assert set(results["metrics"]) == {"test"} and not (tmp_path / "best.pt").exists()
    assert "val" not in read_history(tmp_path)[0]


def test_optimizer_groups_and_schedules():
    from fermetric.engine.optim import build_optimizer, build_scheduler
    from fermetric.losses import create_loss
    from fermetric.models import create_model

    recipe = tiny_recipe(
        "tcl-full",
        **{
            "optim.optimizer": "adamw",
            "optim.lr": 0.01,
            "optim.loss_lr_multiplier": 10,
            "optim.schedule": "cosine",
            "optim.warmup_epochs": 1,
        },
    )
    model = create_model(recipe.model, num_classes=4)
    loss = create_loss("tcl", 4, recipe.model.embedding_dim)
    optimizer = build_optimizer(model, loss, recipe.optim)
    decay, no_decay, centres = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == recipe.optim.weight_decay
    assert all(p.ndim <= 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert centres["params"] == list(loss.parameters()) and centres["lr"] == pytest.approx(0.1)
    assert centres["weight_decay"] == 0.0
    scheduler = build_scheduler(optimizer, recipe.optim, steps_per_epoch=4, epochs=3)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.002, 0.004, 0.006, 0.008])  # linear warm-up over one epoch
    assert lrs[4] == pytest.approx(0.01) and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    with pytest.raises(ConfigError, match="schedule"):
        build_scheduler(optimizer, tiny_recipe("ce", **{"optim.schedule": "step"}).optim, 4, 3)


def test_device_resolution_errors():
    from fermetric.engine.distributed import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_cli_train_on_a_ckplus_fold_has_no_selection(tmp_path, monkeypatch, capsys):
    from fermetric import cli
    from fermetric.data.synthetic import make_synthetic_faces

    monkeypatch.setenv("FERMETRIC_CACHE", "off")
    root = make_synthetic_faces(tmp_path / "ck", layout="ckplus48", n_per_class=10, size=48, seed=0)
    out = tmp_path / "run"
    code = cli.main(
        [
            "train",
            "--recipe",
            "ce",
            "--data",
            f"ckplus48={root}",
            "--fold",
            "0",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--set",
            "model.backbone=tiny",
            "--set",
            "data.input_size=16",
            "--set",
            "data.batch_size=16",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "ckplus48 fold=0" and set(results["metrics"]) == {"test"}
    assert results["selection"].startswith("last epoch (no validation split")
    assert results["metrics"]["test"]["n"] > 0 and not (out / "best.pt").exists()
    assert capsys.readouterr().out == ""  # --quiet


def test_init_from_starts_from_the_given_weights_and_metric_labels_reach_the_loss(tiny_sets, tmp_path, monkeypatch):
    from fermetric import losses
    from fermetric.models import create_model

    train_set, val_set, _ = tiny_sets
    source = tmp_path / "source"
    train(tiny_recipe("ce", epochs=1), train_set, val_set, source, device="cpu", progress=False, max_steps=2)
    recipe = tiny_recipe("dmsl", epochs=1, **{"optim.lr": 1e-12})
    seen = []
    original = losses.create_loss

    def spy(name, num_classes, dim, **options):
        seen.append(num_classes)
        return original(name, num_classes, dim, **options)

    monkeypatch.setattr(train_module, "create_loss", spy)
    sub = (np.asarray(train_set.labels) * 2 + np.arange(len(train_set)) % 2).astype(np.int64)  # two per class
    train(
        recipe,
        train_set,
        val_set,
        tmp_path / "warm",
        device="cpu",
        progress=False,
        max_steps=1,
        init_from=source,
        metric_labels=sub,
        metric_classes=2 * train_set.num_classes,
    )
    assert seen == [2 * train_set.num_classes]  # the metric loss sees the sub-classes
    start = ckpt.read_source(source)[0]
    after = ckpt.load(tmp_path / "warm" / "last.pt")["model"]
    params = {name for name, _ in create_model(recipe.model, num_classes=train_set.num_classes).named_parameters()}
    for name in params:  # lr ~ 0: one step leaves the warm-started parameters where they began
        torch.testing.assert_close(after[name], start[name], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="metric_labels need one label per training image"):
        train(
            recipe,
            train_set,
            val_set,
            tmp_path / "bad",
            device="cpu",
            progress=False,
            metric_labels=sub[:3],
            metric_classes=4,
        )


@pytest.mark.parametrize("loss_name", ["pml:SupConLoss", "pml:TripletMarginLoss"])
def test_a_pml_baseline_loss_trains_in_any_recipe(loss_name, tiny_sets, tmp_path):
    train_set, val_set, _ = tiny_sets
    overrides = {
        "optim.lr": 0.1,
        "data.augment.erasing": 0.0,
        "data.augment.rotation": 0.0,
        "data.sampler": "pk",
        "loss.name": loss_name,
        "loss.weight": 1.0,
    }
    if loss_name.endswith("TripletMarginLoss"):
        overrides["loss.options"] = "{margin: 0.2, miner: BatchHardMiner}"
    results = train(
        tiny_recipe("ce", epochs=4, **overrides), train_set, val_set, tmp_path, device="cpu", progress=False
    )
    metric = [h["train"]["metric"] for h in read_history(tmp_path)]
    assert np.mean(metric[-2:]) < metric[0], metric
    assert results["metrics"]["val"]["embedding_space"]["kind"] == "l2"


def test_a_student_learns_its_teachers_soft_targets(tiny_sets, tmp_path):
    from fermetric.engine.distill import Teacher
    from fermetric.engine.evaluate import preprocessing_from_meta

    train_set, val_set, _ = tiny_sets
    mild = {"optim.lr": 0.1, "data.augment.erasing": 0.0, "data.augment.rotation": 0.0}
    teacher_dir = tmp_path / "teacher"
    teacher_recipe = tiny_recipe("ce", epochs=8, **mild, **{"data.input_size": 24})
    train(teacher_recipe, train_set, val_set, teacher_dir, device="cpu", progress=False)
    teacher_weights = ckpt.read_source(teacher_dir)[0]

    # soft targets only (no cross-entropy on the labels): what the student learns is the teacher's
    options = {"distill.teacher": str(teacher_dir), "distill.temperature": 1.0, "distill.weight": 2.0}
    student = tiny_recipe("ce", epochs=4, **mild, **options, **{"loss.ce_weight": 0.0})
    train(student, train_set, val_set, tmp_path / "student", device="cpu", progress=False)
    history = read_history(tmp_path / "student")
    assert set(history[0]["train"]) == {"loss", "ce", "distill"}
    distill = [h["train"]["distill"] for h in history]
    assert np.mean(distill[-2:]) < 0.8 * distill[0], distill
    for h in history:  # loss = 0 x ce + 2 x distill
        assert h["train"]["loss"] == pytest.approx(2 * h["train"]["distill"], rel=1e-5)
    after = ckpt.read_source(teacher_dir)[0]
    assert all(torch.equal(after[k], v) for k, v in teacher_weights.items())  # the teacher never trains
    assert set(final_weights(tmp_path / "student")) == set(final_weights(teacher_dir))  # no teacher inside
    recorded = ckpt.read_source(tmp_path / "student")[1]["distill_teacher"]
    assert recorded == {
        "source": str(teacher_dir),
        "digest": Teacher(str(teacher_dir), train_set.classes, None, "cpu").digest,
    }

    # the teacher scores the student's batch as its own preprocessing would have prepared it
    student_prep = preprocessing_from_meta(ckpt.read_source(tmp_path / "student")[1])
    teacher = Teacher(str(teacher_dir), train_set.classes, student_prep, "cpu")
    images = torch.from_numpy(np.ascontiguousarray(train_set.images[:6]))
    direct = teacher.model(teacher.preprocessing.apply(images))["logits"]
    torch.testing.assert_close(teacher(student_prep.apply(images)), direct, rtol=1e-4, atol=1e-4)


def test_an_ensemble_teacher_teaches_the_mean_of_its_members_logits(tiny_sets, tmp_path):
    from fermetric.engine.distill import EnsembleTeacher, Teacher
    from fermetric.engine.evaluate import preprocessing_from_meta

    train_set, val_set, _ = tiny_sets
    members = []
    for size in (16, 24):  # members of other input sizes: each sees the batch its own way
        members.append(tmp_path / f"teacher{size}")
        recipe = tiny_recipe("ce", epochs=1, **{"data.input_size": size})
        train(recipe, train_set, val_set, members[-1], device="cpu", progress=False)
    sources = [str(m) for m in members]
    student = tiny_recipe("ce", epochs=1, **{"distill.teacher": f"[{sources[0]}, {sources[1]}]"})
    assert student.distill.teacher == sources
    train(student, train_set, val_set, tmp_path / "student", device="cpu", progress=False)
    assert {"distill"} <= set(read_history(tmp_path / "student")[0]["train"])
    meta = ckpt.read_source(tmp_path / "student")[1]
    digests = [Teacher(s, train_set.classes, None, "cpu").digest for s in sources]
    assert meta["distill_teacher"] == {"source": sources, "digest": digests}

    prep = preprocessing_from_meta(meta)
    images = prep.apply(torch.from_numpy(np.ascontiguousarray(train_set.images[:6])))
    ensemble = EnsembleTeacher(sources, train_set.classes, prep, "cpu")
    each = [Teacher(s, train_set.classes, prep, "cpu")(images) for s in sources]
    assert not torch.allclose(each[0], each[1], atol=1e-3)  # two different opinions to average
    torch.testing.assert_close(ensemble(images), (each[0] + each[1]) / 2, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="non-empty list"):
        tiny_recipe("ce", **{"distill.teacher": "[]"})


def test_a_flip_tta_teacher_averages_the_face_and_its_mirror(tiny_sets, tiny_checkpoint, tmp_path):
    from fermetric.engine.distill import EnsembleTeacher, Teacher
    from fermetric.engine.evaluate import preprocessing_from_meta

    train_set, val_set, _ = tiny_sets
    source = tmp_path / "teacher"
    train(tiny_recipe("ce", epochs=1), train_set, val_set, source, device="cpu", progress=False)
    prep = preprocessing_from_meta(ckpt.read_source(source)[1])
    images = prep.apply(torch.from_numpy(np.ascontiguousarray(train_set.images[:6])))
    plain = Teacher(str(source), train_set.classes, prep, "cpu")
    mirrored = plain(images.flip(-1))
    assert not torch.allclose(plain(images), mirrored, atol=1e-4)  # the mirror is another opinion
    flip = Teacher(str(source), train_set.classes, prep, "cpu", tta="flip")
    torch.testing.assert_close(flip(images), (plain(images) + mirrored) / 2, rtol=1e-5, atol=1e-5)
    ensemble = EnsembleTeacher([str(source), str(source)], train_set.classes, prep, "cpu", tta="flip")
    torch.testing.assert_close(ensemble(images), flip(images), rtol=1e-5, atol=1e-5)

    student = tiny_recipe("ce", epochs=1, **{"distill.teacher": str(source), "distill.tta": "flip"})
    train(student, train_set, val_set, tmp_path / "student", device="cpu", progress=False)
    assert ckpt.read_source(tmp_path / "student")[1]["recipe"]["distill"]["tta"] == "flip"
    bad = tiny_recipe("ce", epochs=1, **{"distill.teacher": str(source), "distill.tta": "mirror"})
    with pytest.raises(ConfigError, match="unknown tta 'mirror'"):
        train(bad, train_set, val_set, tmp_path / "bad", device="cpu", progress=False)


def test_a_teacher_of_other_classes_is_refused(tiny_sets, tiny_checkpoint, tmp_path):
    train_set, val_set, _ = tiny_sets
    recipe = tiny_recipe("ce", epochs=1, **{"distill.teacher": str(tiny_checkpoint)})
    with pytest.raises(ConfigError, match="the teacher must know the same classes"):
        train(recipe, train_set, val_set, tmp_path / "student", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="temperature > 0"):
        bad = tiny_recipe("ce", epochs=1, **{"distill.teacher": str(tiny_checkpoint), "distill.temperature": 0})
        train(bad, train_set, val_set, tmp_path / "bad", device="cpu", progress=False)


def test_a_run_records_the_class_frequencies_and_image_side_of_its_training_data(tmp_path):
    from .engine_helpers import make_imageset

    full = make_imageset(8, seed=6)
    labels = np.asarray(full.labels)
    keep = np.flatnonzero((labels != 5) | (np.arange(len(labels)) % 4 == 0))  # fewer of one class
    train_set = full.subset(keep)
    train(tiny_recipe("ce", epochs=1), train_set, None, tmp_path, device="cpu", progress=False, max_steps=1)
    _, meta = ckpt.load_weights(tmp_path / "model.safetensors")
    counts = np.bincount(np.asarray(train_set.labels), minlength=len(train_set.classes))
    assert meta["class_prior"] == pytest.approx(list(counts / counts.sum()))
    assert meta["train_image_size"] == train_set.images.shape[1]  # photos are cropped at this side
