"""Reproduce a results table from scratch: one JSON per run, written as each run lands.

    python benchmarks/protocol.py --table main --data packed=.pack/fer2013.npz --seeds 0 1 2 \\
        --recipes ce mtdml dmsl tcl-full tcl-semi tcl-pred pidml --epochs 30 --bundle $OUT/main.jsonl
    python benchmarks/protocol.py --table ablations --data packed=.pack/fer2013.npz --seeds 0 --epochs 15
    python benchmarks/protocol.py --table time-to-accuracy --data packed=.pack/fer2013.npz --seeds 0 --epochs 30
    python benchmarks/protocol.py --table throughput --data packed=.pack/fer2013.npz --epochs 3 [--jobs 3 --seeds 0 1 2]

Tables (what each runs; ``make_tables.py`` turns the JSONs into docs/RESULTS.md):

- ``main``: every recipe x seed (x fold for subject-fold datasets such as CK+: the standard 10-fold
  subject-independent cross-validation; every fold is one run and one file).
- ``ablations``: the variants of ``specs.VARIANTS`` (a recipe plus ``--set`` overrides: MT-DML
  slices, threshold range and dual loss; TCL negatives and selective attention; DMSL sigma and
  mixup; PI&DML partial images). A variant whose recipe is exactly a main-table run of the same
  seed (the method's defaults, same epochs) reuses that result instead of training again.
- ``time-to-accuracy``: the main runs again, one at a time (``--jobs 1`` only), so that the per-epoch
  training seconds and validation accuracies in their history are comparable; needs a val split.
  A main-table run that trained alone (``--jobs 1``) with the same recipe and seed is reused.
- ``throughput``: training speed without validation or test evaluation (default 3 epochs; the
  first epoch includes cudnn autotuning, so the steady rate is the median of the later epochs).
  ``--jobs J`` runs J copies at once (one per seed) to measure how much running several runs on
  one GPU gains; files carry the ``-xJ`` suffix.

Design decisions (each with its default):

- **Data** comes through :func:`fermetric.data.load_dataset`, so ``--data`` takes any dataset
  (``fer2013=ROOT``) or a pack (``packed=.pack/fer2013.npz``, the form a lent GPU gets). Reports
  use the ``test`` split (FER2013 PrivateTest, FER+ test, the CK+ fold's test subjects), or
  ``val`` where a dataset has no test split. Training selects on ``val`` where there is one.
- **Results as they land**: each run's JSON is written atomically the moment it ends, and with
  ``--bundle FILE`` also appended (one fsynced line) to FILE, e.g. ``$OUT/main.jsonl``: a device
  call returns at most 8 files, and what is under ``$OUT`` comes back even when the call is killed
  at its time limit. ``make_tables.py --import FILE`` unpacks a bundle into ``benchmarks/results``.
- **Resumable**: a run whose JSON exists is skipped (a warning says when its settings differ from
  the requested ones: delete it to re-run). Run directories (checkpoints) live under ``--work``
  (default ``runs/benchmarks``, git-ignored) and every run is started with ``resume=True``, so a
  run killed mid-way continues from its last epoch while that folder survives (on a lent machine:
  while it stays warm). Checkpoints (``*.pt``) are deleted once a run's JSON is written
  (``--keep-checkpoints`` keeps them); ``results.json``, ``metrics.jsonl`` and the weights stay.
- **Time budget**: ``--time-budget S`` starts a run only if the elapsed time plus the longest run
  so far fits within S seconds; the exit status is 3 when runs were left for a later call.
- **Scale**: ``--scale gpu`` runs the recipes as written; ``--scale cpu`` adds the overrides of
  ``specs.SCALES["cpu"]`` (ResNet-18 width 0.25, batch 128, lr 0.05, 12 epochs: about 40
  minutes per FER2013 run on a 2-core CPU) and keeps its results apart (``<out>/cpu/``).
- **Concurrency**: ``--jobs J`` (default 1) trains J runs at once in spawned worker processes
  (FER models at 48 px leave most of an H100 idle; on the CPU each run gets cores // J threads); every JSON records ``concurrent_runs`` and
  its timings are then not single-run timings (``throughput`` reports them as such; ``time-to-accuracy``
  refuses ``--jobs`` above 1).
- **A failed run** (NaN loss, bad data) is reported and recorded in the bundle; the others go
  on; the exit status is then 1.
- Every JSON holds the recipe, overrides, dataset, seed, fold, the test metrics (accuracy,
  macro-F1, k-NN accuracy, MAP@R, precision@1, NMI, centroid accuracy, per-class recall,
  confusion), validation accuracy, per-epoch history, wall and training seconds, images/s,
  parameters, peak GPU memory, GPU name, torch/CUDA/fermetric versions, git commit, date, TTA
  mode and the exact command.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from fermetric.fileio import json_default

sys.path.insert(0, str(Path(__file__).resolve().parent))
import specs  # noqa: E402
from eval_checkpoint import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXIT_FAILED = 1
EXIT_BUDGET = 3
THROUGHPUT_EPOCHS = 3


@dataclass(frozen=True)
class Run:
    """One training run of a table."""

    table: str
    name: str  # the recipe (main, time-to-accuracy, throughput) or the ablation variant
    recipe: str
    overrides: tuple[str, ...]
    seed: int
    fold: int | None = None


@dataclass(frozen=True)
class Settings:
    """What every run of one invocation shares (plain values: it travels to worker processes)."""

    data: str
    label_mode: str | None
    dataset: str  # the results folder: the dataset's name (+ "-<label mode>" when not majority)
    num_folds: int | None  # subject-fold datasets
    out: str
    work: str
    bundle: str | None
    device: str
    epochs: int | None
    extra: tuple[str, ...]  # --set overrides applied to every run
    max_steps: int | None
    concurrency: int
    threads: int | None  # torch threads per run (the available cores split between --jobs runs)
    init_from: str | None  # fine-tune each recipe from its own run on this dataset (same scale and seed)
    scale: str
    progress: bool
    keep_checkpoints: bool
    command: str


# ------------------------------------------------------------------------------------ planning
def describe_dataset(data: str, label_mode: str | None) -> tuple[str, int | None, list[str]]:
    """``(results folder name, number of subject folds or None, splits)`` without decoding images."""
    from fermetric.data import DATASETS, dataset_splits, parse_data_arg

    name, root = parse_data_arg(data)
    if name == "packed":
        from fermetric.data.packed import pack_splits, read_pack_meta

        meta = read_pack_meta(root)
        dataset, kfold, mode = meta["dataset"], meta.get("kfold"), meta["options"].get("label_mode")
        num_folds = int(kfold["num_folds"]) if kfold else None
        splits = pack_splits(meta)
    else:
        reader = DATASETS.get(name)
        dataset = name
        mode = label_mode or reader.options.get("label_mode")
        num_folds = int(reader.options.get("num_folds") or 10) if "fold" in reader.options else None
        splits = dataset_splits(name, root)
    label = dataset if mode in (None, "majority") else f"{dataset}-{mode}"
    return label, num_folds, splits


def plan_runs(table: str, recipes, variants, seeds, folds, init_from: str | None = None) -> list[Run]:
    """Every run of ``table`` in execution order (seed-major, so one full seed lands first).

    With ``init_from`` (a dataset name) each main-table run is named ``<recipe>-from-<dataset>``:
    fine-tuned from that recipe's own run on that dataset, a separate row from training from scratch.
    """
    folds = list(folds) if folds else [None]
    runs = []
    for seed in seeds:
        if table == "ablations":
            for name in variants:
                variant = specs.VARIANTS[name]
                runs += [Run(table, name, variant.recipe, variant.overrides, seed, fold) for fold in folds]
        else:
            for recipe in recipes:
                name = f"{recipe}-from-{init_from}" if init_from else recipe
                runs += [Run(table, name, recipe, (), seed, fold) for fold in folds]
    return runs


def run_overrides(run: Run, settings: Settings) -> list[str]:
    extra = list(specs.SCALES[settings.scale]) + list(run.overrides) + list(settings.extra)
    if settings.epochs is not None:
        extra.append(f"epochs={settings.epochs}")
    return extra


def build_recipe(run: Run, settings: Settings):
    from fermetric.config import load_recipe

    return load_recipe(run.recipe, run_overrides(run, settings))


def result_file(run: Run, settings: Settings) -> Path:
    return specs.result_path(
        settings.out, settings.dataset, run.table, run.name, run.seed, run.fold, settings.concurrency
    )


def source_run(run: Run, settings: Settings) -> Path | None:
    """The weights a fine-tuned run starts from: the same recipe and seed's run on ``init_from``."""
    if settings.init_from is None:
        return None
    source = Run("main", run.recipe, run.recipe, (), run.seed)
    folder = Path(settings.work) / specs.result_path(
        settings.out, settings.init_from, "main", source.name, source.seed
    ).relative_to(settings.out).with_suffix("")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        from fermetric.errors import ConfigError

        raise ConfigError(
            f"--init-from {settings.init_from}: {weights} does not exist; run the {run.recipe} "
            f"seed {run.seed} main-table run on {settings.init_from} first (same --scale and --work)"
        )
    return weights


def recipe_json(recipe) -> dict:
    return json.loads(json.dumps(recipe.to_dict()))  # tuples -> lists, as stored in result files


def same_recipe(stored: dict | None, recipe) -> bool:
    """Whether a result file's ``recipe_config`` is ``recipe``.

    The stored config is read back through ``Recipe.from_dict`` first, so a section or field
    added to ``Recipe`` after the file was written (at its default value) does not count as a
    difference: an old result stays reusable by a newer protocol.
    """
    from fermetric.config import Recipe
    from fermetric.errors import ConfigError

    if not isinstance(stored, dict):
        return False
    try:
        normalised = recipe_json(Recipe.from_dict(stored))
    except (ConfigError, TypeError, ValueError):
        return False
    return normalised == recipe_json(recipe)


# ----------------------------------------------------------------------------------- recording
#: a JSON array of numbers only, as ``json.dumps(indent=...)`` spreads it over one line per item
_NUMBER_ARRAY = re.compile(r"\[(\s*-?[\d.eE+-]+\s*(?:,\s*-?[\d.eE+-]+\s*)*)\]")


def result_json(data: dict) -> str:
    """Indented JSON with every array of numbers on one line (per-image predictions stay readable)."""
    text = json.dumps(data, indent=1, default=json_default)
    return _NUMBER_ARRAY.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "w") as handle:
        handle.write(result_json(data))
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def append_bundle(bundle: str | None, entry: dict) -> None:
    """Append one JSON line to the bundle with a single write, then fsync (survives a kill)."""
    if not bundle:
        return
    Path(bundle).parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, default=json_default) + "\n").encode()
    fd = os.open(bundle, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def relative_to_out(path: Path, settings: Settings) -> str:
    return Path(path).relative_to(settings.out).as_posix()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def read_history(run_dir: Path) -> list[dict]:
    """Per-epoch ``epoch, seconds, images_per_second, eval_seconds, val_accuracy`` of a run."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    history = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        val = record.get("val") or {}
        history.append(
            {
                "epoch": record.get("epoch"),
                "seconds": record.get("seconds"),
                "images_per_second": record.get("images_per_second"),
                "eval_seconds": record.get("eval_seconds"),
                "val_accuracy": val.get("accuracy"),
                "train_loss": (record.get("train") or {}).get("loss"),
            }
        )
    return history


def steady_rate(history: list[dict]) -> float | None:
    """Median images/s of the epochs after the first (the first includes autotuning), else the first's."""
    import statistics

    rates = [h["images_per_second"] for h in history if h.get("images_per_second")]
    if not rates:
        return None
    return float(statistics.median(rates[1:] if len(rates) > 1 else rates))


# ----------------------------------------------------------------------------------- executing
_SETS: dict = {}


def load_sets(settings: Settings, fold: int | None, table: str):
    """``(train, val, test)`` ImageSets for a run; cached per process (a pack decodes once)."""
    key = (settings.data, settings.label_mode, fold)
    if key not in _SETS:
        from fermetric.data import dataset_splits, load_dataset, parse_data_arg

        name, root = parse_data_arg(settings.data)
        options = {"label_mode": settings.label_mode} if settings.label_mode else {}
        if fold is not None:
            train = load_dataset(name, root, "train", fold=fold, **options)
            val, test = None, load_dataset(name, root, "test", fold=fold, **options)
        else:
            splits = dataset_splits(name, root)
            train = load_dataset(name, root, "train", **options)
            val = load_dataset(name, root, "val", **options) if "val" in splits else None
            test = load_dataset(name, root, "test", **options) if "test" in splits else None
        _SETS[key] = (train, val, test)
    train, val, test = _SETS[key]
    if table == "throughput":  # training speed only: no validation or test evaluation
        return train, None, None
    return train, val, test


def count_parameters(recipe, num_classes: int) -> int:
    from fermetric.models import create_model

    model = create_model(recipe.model, num_classes=num_classes)
    return int(sum(p.numel() for p in model.parameters()))


def execute(run: Run, settings: Settings) -> dict:
    """Train and evaluate one run, write its JSON (and bundle line); returns a short summary."""
    started = time.perf_counter()
    target = result_file(run, settings)
    try:
        import numpy as np
        import torch

        import fermetric
        from fermetric.engine.train import train

        recipe = build_recipe(run, settings)
        train_set, val_set, test_set = load_sets(settings, run.fold, run.table)
        run_dir = Path(settings.work) / target.relative_to(settings.out).with_suffix("")
        resumed = (run_dir / "last.pt").exists()
        cuda = torch.cuda.is_available() and settings.device != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        init_from = source_run(run, settings)
        results = train(
            recipe,
            train_set,
            val_set,
            run_dir,
            device=settings.device,
            seed=run.seed,
            resume=True,
            on_nan="stop",
            max_steps=settings.max_steps,
            progress=settings.progress,
            test_set=test_set,
            dataset=settings.dataset,
            threads=settings.threads,
            init_from=init_from,
        )
        device_is_cuda = cuda and not str(results.get("device", "")).startswith("cpu")
        metrics_by_split = results.get("metrics") or {}
        split = "test" if "test" in metrics_by_split else ("val" if "val" in metrics_by_split else None)
        m = metrics_by_split.get(split) or {}
        val = metrics_by_split.get("val") if split == "test" else None
        history = read_history(run_dir)
        record = {
            "schema": specs.SCHEMA,
            "table": run.table,
            "name": run.name,
            "recipe": run.recipe,
            "overrides": run_overrides(run, settings),
            "dataset": settings.dataset,
            "data": settings.data,
            "label_mode": settings.label_mode,
            "split": split,
            "seed": run.seed,
            "fold": run.fold,
            "num_folds": settings.num_folds if run.fold is not None else None,
            "metrics": {**{k: m.get(k) for k in specs.METRICS}, "n": m.get("n")},
            "per_class_recall": m.get("per_class_recall"),
            # per-image test predictions: make_tables pairs each method with ce on the same images
            "predictions": m.get("predictions"),
            "labels": m.get("labels"),
            "confusion": m.get("confusion"),
            "classes": results.get("classes"),
            "val": {"accuracy": val.get("accuracy"), "macro_f1": val.get("macro_f1"), "n": val.get("n")}
            if val
            else None,
            "tta": results.get("tta"),
            "selection": results.get("selection"),
            "epochs": results.get("epochs"),
            "epochs_completed": results.get("epochs_completed"),
            "steps": results.get("steps"),
            "max_steps": settings.max_steps,
            "stopped_by_max_steps": results.get("stopped_by_max_steps"),
            "resumed": resumed,
            "wall_seconds": time.perf_counter() - started,
            "train_seconds": results.get("train_seconds"),
            "images_per_second": results.get("images_per_second"),
            "steady_images_per_second": steady_rate(history),
            "history": history,
            "parameters": count_parameters(recipe, len(train_set.classes)),
            "peak_gpu_memory_bytes": int(torch.cuda.max_memory_allocated()) if device_is_cuda else None,
            "concurrent_runs": settings.concurrency,
            "scale": settings.scale,
            "init_from": str(init_from) if init_from is not None else None,
            "precision": results.get("precision"),
            "threads": results.get("threads"),
            "cpu_model": cpu_model(),
            "train_images": len(train_set),
            "device": results.get("device"),
            "gpu_name": torch.cuda.get_device_name() if device_is_cuda else None,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda if device_is_cuda else None,
            "cudnn_version": torch.backends.cudnn.version() if device_is_cuda else None,
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "fermetric_version": fermetric.__version__,
            "git_commit": git_commit(),
            "date": results.get("date"),
            "command": settings.command,
            "recipe_config": results.get("recipe_config") or recipe_json(recipe),
        }
        _atomic_write_json(target, record)
        append_bundle(settings.bundle, {"file": relative_to_out(target, settings), "result": record})
        if not settings.keep_checkpoints:
            for checkpoint in run_dir.glob("*.pt"):
                checkpoint.unlink()
        return {
            "status": "done",
            "file": str(target),
            "seconds": time.perf_counter() - started,
            "metrics": record["metrics"],
            "images_per_second": record["steady_images_per_second"],
        }
    except Exception as err:  # one failed run must not stop the table: report it and go on
        from fermetric.errors import FermetricError

        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, FermetricError):
            traceback.print_exc()
            message = f"{type(err).__name__}: {message}"
        append_bundle(
            settings.bundle, {"file": relative_to_out(target, settings), "error": message, "run": asdict(run)}
        )
        return {"status": "failed", "file": str(target), "seconds": time.perf_counter() - started, "error": message}


# ------------------------------------------------------------------------------------- driving
def existing_note(path: Path, run: Run, settings: Settings) -> str:
    """An empty string when an existing result matches the requested settings, else what differs."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable: delete it to re-run"
    wanted = {"overrides": run_overrides(run, settings), "max_steps": settings.max_steps}
    if run.table != "ablations":  # reused ablation rows record the main run's overrides
        differs = [f"{k} {record.get(k)!r} vs {v!r}" for k, v in wanted.items() if record.get(k) != v]
    else:
        differs = []
        if not same_recipe(record.get("recipe_config"), build_recipe(run, settings)):
            differs.append("recipe")
    return "; ".join(differs)


def reusable_main_result(run: Run, settings: Settings) -> Path | None:
    """A main-table result that is exactly this run (same recipe, seed, fold and step limit).

    Ablation variants reuse any such result; time-to-accuracy runs only one that trained alone
    (``concurrent_runs == 1``), since their point is the timing.
    """
    if run.table not in ("ablations", "time-to-accuracy"):
        return None
    main = specs.result_path(settings.out, settings.dataset, "main", run.recipe, run.seed, run.fold)
    if not main.exists():
        return None
    try:
        record = json.loads(main.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = (
        same_recipe(record.get("recipe_config"), build_recipe(run, settings))
        and record.get("max_steps") == settings.max_steps
        and (run.table == "ablations" or record.get("concurrent_runs") == 1)
    )
    return main if same else None


def reuse(run: Run, source: Path, settings: Settings) -> Path:
    record = json.loads(source.read_text())
    record.update({"table": run.table, "name": run.name, "reused_from": relative_to_out(source, settings)})
    target = result_file(run, settings)
    _atomic_write_json(target, record)
    append_bundle(settings.bundle, {"file": relative_to_out(target, settings), "result": record})
    return target


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(index: int, total: int, run: Run, outcome: dict, settings: Settings) -> None:
    where = relative_to_out(Path(outcome["file"]), settings)
    if outcome["status"] == "failed":
        print(f"[{index}/{total}] FAILED {where} after {outcome['seconds']:.0f} s: {outcome['error']}", flush=True)
        return
    m = outcome["metrics"]
    speed = outcome.get("images_per_second")
    scores = ""
    if m.get("accuracy") is not None:  # throughput runs are not evaluated
        scores = (
            f"accuracy {_fmt(m.get('accuracy'))} macro-F1 {_fmt(m.get('macro_f1'))} "
            f"k-NN {_fmt(m.get('knn_accuracy'))} MAP@R {_fmt(m.get('map_at_r'))} | "
        )
    print(
        f"[{index}/{total}] done {where}: {scores}{'-' if speed is None else f'{speed:,.0f}'} img/s | "
        f"{outcome['seconds']:.0f} s",
        flush=True,
    )


def drive(runs: list[Run], settings: Settings, jobs: int, budget: float | None, started: float) -> dict:
    """Run ``runs`` (``jobs`` at a time), honouring the time budget; returns the counts."""
    counts = {"done": 0, "failed": 0, "left": 0}
    longest = 0.0
    total = len(runs)
    finished = 0

    def fits() -> bool:
        return budget is None or (time.monotonic() - started) + longest <= budget

    def settle(run: Run, outcome: dict) -> None:
        nonlocal longest, finished
        finished += 1
        longest = max(longest, outcome["seconds"])
        counts["done" if outcome["status"] == "done" else "failed"] += 1
        report(finished, total, run, outcome, settings)

    pending = list(runs)
    if jobs == 1:
        while pending and fits():
            run = pending.pop(0)
            settle(run, execute(run, settings))
    else:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            in_flight = {}
            broken = False
            while pending or in_flight:
                while pending and len(in_flight) < jobs and fits() and not broken:
                    try:
                        future = pool.submit(execute, pending[0], settings)
                    except BrokenProcessPool:  # a worker died: the runs not started stay for a later call
                        broken = True
                        print("protocol: a worker process died; no further runs are started", flush=True)
                        break
                    in_flight[future] = pending.pop(0)
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    run = in_flight.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as err:  # a worker died (out of memory, killed)
                        outcome = {
                            "status": "failed",
                            "file": str(result_file(run, settings)),
                            "seconds": 0.0,
                            "error": f"worker process failed: {type(err).__name__}: {err}",
                        }
                        append_bundle(
                            settings.bundle,
                            {
                                "file": relative_to_out(Path(outcome["file"]), settings),
                                "error": outcome["error"],
                                "run": asdict(run),
                            },
                        )
                    settle(run, outcome)
    counts["left"] = len(pending)
    return counts


def _threads_per_run(jobs: int, device: str) -> int | None:
    """CPU runs share the available cores (J runs with all cores each thrash: ~10x slower each)."""
    import torch

    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return None
    from fermetric.engine.precision import available_cores

    return max(1, available_cores() // jobs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--table", required=True, choices=specs.TABLES)
    p.add_argument("--data", required=True, metavar="DATASET=ROOT", help="e.g. packed=.pack/fer2013.npz")
    p.add_argument(
        "--label-mode",
        default=None,
        choices=["majority", "plurality", "probability"],
        help="FER+ label mode (packs fix theirs at pack time)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=list(specs.RECIPES), help="main, time-to-accuracy, throughput")
    p.add_argument(
        "--ablations",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help=f"ablation variants (default: those of the --scale's ablation table): {', '.join(specs.VARIANTS)}",
    )
    p.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=None,
        help="subject-fold datasets: which folds (default all, e.g. 0-9 for CK+)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"override every recipe's epochs (default: the recipe's; throughput: {THROUGHPUT_EPOCHS})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override applied to every run (repeatable), e.g. model.backbone=tiny",
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps (smoke runs)")
    p.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results"), help="results root (default benchmarks/results)"
    )
    p.add_argument("--bundle", default=None, help="also append every result as a JSON line here (e.g. $OUT/main.jsonl)")
    p.add_argument("--work", default=str(REPO / "runs" / "benchmarks"), help="run directories (checkpoints)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once (default 1); on the CPU each gets its share of the cores",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="DATASET",
        help="main table: fine-tune each recipe from its own run on DATASET (e.g. fer2013 for CK+); "
        "rows are named <recipe>-from-<DATASET>",
    )
    p.add_argument(
        "--scale",
        choices=list(specs.SCALES),
        default="gpu",
        help="gpu (the recipes as written) or cpu (narrower, shorter runs sized for a 2-core CPU; "
        "results under <out>/cpu/)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start a run only if elapsed + the longest run so far fits in SECONDS",
    )
    p.add_argument("--keep-checkpoints", action="store_true", help="keep *.pt of finished runs")
    p.add_argument("--progress", action="store_true", help="per-epoch progress of every run")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether their results exist")
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from fermetric.config import recipe_names
    from fermetric.errors import ConfigError, FermetricError

    try:
        unknown = [r for r in args.recipes if r not in recipe_names()]
        if unknown:  # names only: a recipe's name is its result file's name
            raise ConfigError(f"unknown recipe(s) {unknown}; known: {', '.join(recipe_names())}")
        if args.ablations is None:
            args.ablations = specs.ablation_variants(args.scale)
        unknown = [v for v in args.ablations if v not in specs.VARIANTS]
        if unknown:
            raise ConfigError(f"unknown ablation variant(s) {unknown}; known: {', '.join(specs.VARIANTS)}")
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
        dataset, num_folds, splits = describe_dataset(args.data, args.label_mode)
        folds = None
        if num_folds is not None:
            folds = args.folds if args.folds is not None else list(range(num_folds))
            bad = [f for f in folds if not 0 <= f < num_folds]
            if bad:
                raise ConfigError(f"--folds {bad} out of range: {dataset} has folds 0..{num_folds - 1}")
        elif args.folds is not None:
            raise ConfigError(f"{dataset} has fixed splits; drop --folds")
        if args.table == "time-to-accuracy" and (num_folds is not None or "val" not in splits):
            raise ConfigError(
                f"time-to-accuracy needs a validation split, and {dataset} has none; run it on fer2013 or ferplus"
            )
        if args.table == "time-to-accuracy" and args.jobs != 1:
            raise ConfigError("time-to-accuracy compares single-run timings; use --jobs 1")
        if args.table == "throughput" and num_folds is not None:
            folds = [folds[0]]  # speed does not depend on the fold
        epochs = args.epochs if args.epochs is not None else (THROUGHPUT_EPOCHS if args.table == "throughput" else None)
        settings = Settings(
            data=args.data,
            label_mode=args.label_mode,
            dataset=dataset,
            num_folds=num_folds,
            out=str(Path(args.out) / args.scale if args.scale != "gpu" else Path(args.out)),
            work=str(Path(args.work) / args.scale if args.scale != "gpu" else Path(args.work)),
            bundle=args.bundle,
            device=args.device,
            epochs=epochs,
            extra=tuple(args.overrides),
            max_steps=args.max_steps,
            concurrency=args.jobs,
            threads=_threads_per_run(args.jobs, args.device),
            scale=args.scale,
            init_from=args.init_from,
            progress=args.progress,
            keep_checkpoints=args.keep_checkpoints,
            command=" ".join(shlex.quote(a) for a in ["python", "benchmarks/protocol.py", *argv]),
        )
        if args.init_from and args.table != "main":
            raise ConfigError("--init-from applies to the main table")
        runs = plan_runs(args.table, args.recipes, args.ablations, args.seeds, folds, args.init_from)
        for run in runs:
            build_recipe(run, settings)  # a bad override fails now, not after an hour of training
    except FermetricError as err:
        print(f"protocol: error: {err}", file=sys.stderr)
        return err.exit_code

    todo, skipped, reused = [], 0, 0
    for run in runs:
        target = result_file(run, settings)
        where = relative_to_out(target, settings)
        if target.exists():
            note = existing_note(target, run, settings)
            skipped += 1
            if note or args.dry_run:
                print(f"exists {where}" + (f" (differs: {note}; delete it to re-run)" if note else ""))
            continue
        source = reusable_main_result(run, settings)
        if source is not None:
            if args.dry_run:
                print(f"reuse  {where} <- {relative_to_out(source, settings)}")
            else:
                reuse(run, source, settings)
            reused += 1
            continue
        if args.dry_run:
            print(f"run    {where}")
        todo.append(run)
    print(
        f"{args.table} on {dataset}: {len(runs)} runs; {skipped} exist, {reused} reused, {len(todo)} to run"
        f" ({args.jobs} at a time)",
        flush=True,
    )
    if args.dry_run or not todo:
        return 0
    counts = drive(todo, settings, args.jobs, args.time_budget, started)
    print(
        f"{args.table} on {dataset}: {counts['done']} done, {counts['failed']} failed, "
        f"{counts['left']} left for the time budget ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    if counts["failed"]:
        return EXIT_FAILED
    return EXIT_BUDGET if counts["left"] else 0


if __name__ == "__main__":
    sys.exit(main())
