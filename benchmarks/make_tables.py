"""Regenerate the tables of docs/RESULTS.md from the result JSONs of ``protocol.py``.

    python benchmarks/make_tables.py                         # benchmarks/results/**/*.json -> docs/RESULTS.md
    python benchmarks/make_tables.py --import DIR/main.jsonl # first unpack bundles from a GPU call

Each table sits between ``<!-- fermetric:NAME:start -->`` and ``<!-- fermetric:NAME:end -->``
comments in the document (NAME: main, ablations, time-to-accuracy, throughput, published,
provenance); everything outside the markers is left as written. Design decisions:

- Numbers are percentages with two decimals. ``mean ± std`` uses the sample standard deviation
  (n - 1); a single run shows its value alone.
- Fixed-split datasets (FER2013, FER+): mean ± std over seeds. Subject-fold datasets (CK+):
  mean ± std over the folds, each fold's value first averaged over the seeds that ran it (the
  usual way k-fold results are reported); an incomplete CV says how many folds it holds.
- A cell without a result says "not run"; a metric a run did not produce says "n/a".
- Time-to-accuracy targets are fractions (``specs.TIME_TO_ACCURACY_TARGETS``) of the
  cross-entropy baseline's best validation accuracy (mean over its seeds) in the same table;
  seconds are training seconds (validation excluded), summed over epochs until the target.
- Machine, versions, precision, seeds and dates come from the JSONs (the provenance table).
- "Acc. − CE": the method's accuracy minus ``ce``'s on the same test images, in points, with a
  paired bootstrap 95% interval (10,000 resamples of the images, seed 0); a run fine-tuned from
  another dataset (``<recipe>-from-<D>``) is paired with ``ce-from-<D>``, fine-tuned the same
  way, so the cell measures the method, not the pretraining. Runs pair by (fold, seed); per
  image, correctness is averaged over the common seeds; k-fold test sets are concatenated. The interval covers which test images were drawn, not the training seed (the
  ``± std`` of the other cells shows that).
- Each protocol scale (``specs.SCALES``: ``gpu``, ``cpu``) has its own tables: a record counts
  only in its own scale's tables (``cpu-main``, ``cpu-ablations``, ``cpu-provenance`` for the
  CPU protocol), so CPU-sized runs never mix with GPU ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import specs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("main", "ablations", "time-to-accuracy", "throughput", "published", "provenance")
NOT_RUN = "not run"
MAIN_METRICS = (
    ("accuracy", "Accuracy"),
    ("macro_f1", "Macro-F1"),
    ("knn_accuracy", "k-NN acc."),
    ("map_at_r", "MAP@R"),
)
DEFAULT_DATASETS = ("fer2013", "ferplus", "ckplus48")  # always listed, so unrun cells show
BASELINE = "ce"  # every method's accuracy difference is paired with this recipe's runs
BOOTSTRAP_RESAMPLES = 10000


def baseline_of(name: str) -> str:
    """The row a main-table row is compared with: ``ce``, or ``ce-from-<D>`` for a run
    fine-tuned from dataset ``D`` (``<recipe>-from-<D>``)."""
    _, fine_tuned, source = name.partition("-from-")
    return f"{BASELINE}-from-{source}" if fine_tuned else BASELINE


def method_title(name: str) -> str:
    """``"MT-DML"`` for ``mtdml``; ``"MT-DML fine-tuned from FER2013"`` for ``mtdml-from-fer2013``."""
    recipe, fine_tuned, source = name.partition("-from-")
    title = specs.METHOD_NAMES.get(recipe, recipe)
    return f"{title} fine-tuned from {dataset_title(source)}" if fine_tuned else title


class TableError(Exception):
    """A results file or the document cannot be used (one-line message)."""


# ------------------------------------------------------------------------------------ reading
def load_results(root: str | Path) -> list[dict]:
    """Every result JSON under ``root`` (``_file`` holds its path relative to ``root``)."""
    root = Path(root)
    records = []
    for path in sorted(root.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"make_tables: skipping unreadable {path}: {err}", file=sys.stderr)
            continue
        if not isinstance(record, dict) or "schema" not in record:
            continue  # another tool's output (e.g. loss_step_time.py), not a protocol result
        if record["schema"] != specs.SCHEMA:
            print(f"make_tables: skipping {path}: schema {record['schema']!r} is not {specs.SCHEMA!r}", file=sys.stderr)
            continue
        record["_file"] = path.relative_to(root).as_posix()
        records.append(record)
    return records


def import_bundles(bundles, root: str | Path) -> tuple[int, int]:
    """Write every result line of the bundles to ``root/<file>``; returns (written, failed runs)."""
    root = Path(root).resolve()
    written = failed = 0
    for bundle in bundles:
        for number, line in enumerate(Path(bundle).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill at the time limit
                print(f"make_tables: {bundle}:{number}: incomplete line skipped", file=sys.stderr)
                continue
            target = (root / entry["file"]).resolve()
            if root not in target.parents:
                raise TableError(f"{bundle}:{number}: file {entry['file']!r} points outside {root}")
            if "error" in entry:
                failed += 1
                print(f"make_tables: failed run {entry['file']}: {entry['error']}", file=sys.stderr)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.tmp")
            temp.write_text(json.dumps(entry["result"], indent=1) + "\n")
            os.replace(temp, target)
            written += 1
    return written, failed


# ---------------------------------------------------------------------------------- statistics
def mean_std(values) -> tuple[float | None, float | None, int]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


def pct(mean: float | None, std: float | None = None, n: int = 1) -> str:
    if n == 0 or mean is None:
        return "n/a"
    text = f"{100 * mean:.2f}"
    return f"{text} ± {100 * std:.2f}" if std is not None else text


def metric_cell(records: list[dict], metric: str) -> str:
    """The ``mean ± std`` cell of one metric over a group of runs (see the module docstring)."""
    if not records:
        return NOT_RUN
    values = per_unit_values(records, metric)
    mean, std, n = mean_std(values)
    return pct(mean, std, n)


def per_unit_values(records: list[dict], metric: str) -> list[float | None]:
    """Seed values (fixed splits) or fold values averaged over seeds (k-fold)."""
    if any(r.get("fold") is not None for r in records):
        by_fold = defaultdict(list)
        for r in records:
            value = (r.get("metrics") or {}).get(metric)
            if value is not None:
                by_fold[r.get("fold")].append(value)
        return [statistics.fmean(v) for _, v in sorted(by_fold.items(), key=lambda kv: kv[0])]
    return [(r.get("metrics") or {}).get(metric) for r in records]


def cost_cell(records: list[dict], key: str, scale: float, digits: int) -> str:
    """Mean (± std over runs) of a per-run cost such as training seconds, scaled (e.g. to minutes)."""
    if not records:
        return NOT_RUN
    return _mean_text([r[key] * scale if r.get(key) is not None else None for r in records], digits)


def runs_cell(records: list[dict]) -> str:
    if not records:
        return NOT_RUN
    seeds = sorted({r.get("seed") for r in records})
    text = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    folds = {r.get("fold") for r in records} - {None}
    if folds:
        total = max((r.get("num_folds") or 0) for r in records)
        text += f" x {len(folds)}/{total} folds" if len(folds) != total else f" x {total} folds"
    return text


def epochs_cell(records: list[dict]) -> str:
    epochs = sorted({r.get("epochs") for r in records if r.get("epochs") is not None})
    steps = sorted({r.get("max_steps") for r in records if r.get("max_steps") is not None})
    text = "/".join(str(e) for e in epochs) or "-"
    return text + (f" (max {steps[0]} steps)" if steps else "")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def group(records: list[dict], table_name: str) -> dict:
    """``{dataset: {name: [records]}}`` of one table."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("table") == table_name:
            out[r.get("dataset")][r.get("name")].append(r)
    return out


def dataset_order(found) -> list[str]:
    names = list(DEFAULT_DATASETS) + sorted(d for d in found if d not in DEFAULT_DATASETS)
    return names


def dataset_title(dataset: str) -> str:
    base, _, mode = dataset.partition("-")
    title = specs.DATASETS.get(base, base)
    return f"{title} ({mode} labels)" if mode else title


def split_note(records: list[dict]) -> str:
    splits = sorted({r.get("split") or "?" for r in records})
    tta = sorted({r.get("tta") or "none" for r in records})
    return f"split {'/'.join(splits)}, TTA {'/'.join(tta)}"


def paired_items(records: list[dict], baseline: list[dict]):
    """Per-image 0/1 correctness of ``records`` and of the ``baseline`` runs on the same test images.

    Runs pair by (fold, seed); per image, correctness is averaged over the seeds both have, and
    the folds' test images (disjoint in a k-fold protocol) are concatenated. ``None`` when no pair
    has stored predictions (older result files: ``benchmarks/add_predictions.py`` adds them).
    """
    import numpy as np

    def by_key(rs):
        return {(r.get("fold"), r.get("seed")): r for r in rs if r.get("predictions") is not None}

    ours, theirs = by_key(records), by_key(baseline)
    folds = defaultdict(list)
    for key in sorted(set(ours) & set(theirs), key=str):
        a, b = ours[key], theirs[key]
        if a.get("labels") != b.get("labels"):
            raise TableError(f"{a['_file']} and {b['_file']} were tested on different images; they cannot be paired")
        labels = np.asarray(a["labels"])
        folds[key[0]].append((np.asarray(a["predictions"]) == labels, np.asarray(b["predictions"]) == labels))
    if not folds:
        return None
    a = np.concatenate([np.mean([x for x, _ in pairs], axis=0) for _, pairs in sorted(folds.items(), key=str)])
    b = np.concatenate([np.mean([y for _, y in pairs], axis=0) for _, pairs in sorted(folds.items(), key=str)])
    return a, b


def difference_cell(records: list[dict], baseline: list[dict], baseline_name: str = BASELINE) -> str:
    """Accuracy difference to the baseline in points with its paired bootstrap 95% interval."""
    if not records:
        return NOT_RUN
    if not baseline:
        return f"n/a (no {baseline_name} run)"
    items = paired_items(records, baseline)
    if items is None:
        return "n/a (no per-image predictions)"
    from fermetric.engine.metrics import paired_bootstrap

    result = paired_bootstrap(*items, seed=0, resamples=BOOTSTRAP_RESAMPLES)
    low, high = result["ci95"]
    return f"{100 * result['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


# ------------------------------------------------------------------------------------- tables
def render_main(records: list[dict], planned: dict[str, tuple[str, ...]] | None = None) -> str:
    """The main table per dataset; ``planned``: the rows a protocol runs per dataset (default:
    every recipe), followed by any other run found."""
    grouped = group(records, "main")
    parts = []
    for dataset in dataset_order(grouped):
        runs = grouped.get(dataset, {})
        rows_of = list((planned or {}).get(dataset, specs.RECIPES))
        names = rows_of + sorted(n for n in runs if n not in rows_of)
        rows = []
        for name in names:
            rs = runs.get(name, [])
            reference = baseline_of(name)
            if name == reference:
                difference = "reference" if rs else NOT_RUN
            else:
                difference = difference_cell(rs, runs.get(reference, []), reference)
            rows.append(
                [specs.METHOD_NAMES.get(name, name)]
                + [metric_cell(rs, m) for m, _ in MAIN_METRICS]
                + [
                    difference,
                    cost_cell(rs, "train_seconds", 1 / 60, 1),
                    cost_cell(rs, "steady_images_per_second", 1, 0),
                    runs_cell(rs),
                    epochs_cell(rs) if rs else "-",
                ]
            )
        all_runs = [r for rs in runs.values() for r in rs]
        note = f" ({split_note(all_runs)})" if all_runs else ""
        parts.append(
            f"**{dataset_title(dataset)}**{note}\n\n"
            + table(
                ["Method"]
                + [f"{label} (%)" for _, label in MAIN_METRICS]
                + ["Acc. − CE, points [paired 95% CI]", "Train min", "Images/s", "Runs", "Epochs"],
                rows,
            )
        )
    return "\n\n".join(parts)


def render_ablations(records: list[dict], scale: str = "gpu") -> str:
    grouped = group(records, "ablations")
    datasets = [d for d in dataset_order(grouped) if d in grouped] or ["fer2013"]
    parts = []
    for dataset in datasets:
        runs = grouped.get(dataset, {})
        rows = []
        for family in specs.families(scale):
            for i, (label, variant) in enumerate(family.rows):
                rs = runs.get(variant, [])
                if variant == family.default:
                    setting, difference = label + " (default)", ("reference" if rs else NOT_RUN)
                else:  # paired with the block's default run on the same test images
                    setting, difference = label, difference_cell(rs, runs.get(family.default, []), "default")
                rows.append(
                    [family.title if i == 0 else "", setting]
                    + [metric_cell(rs, m) for m, _ in MAIN_METRICS]
                    + [difference, runs_cell(rs), epochs_cell(rs) if rs else "-"]
                )
        header = ["Ablation", "Setting"] + [f"{label} (%)" for _, label in MAIN_METRICS]
        header += ["Acc. − default, points [paired 95% CI]", "Runs", "Epochs"]
        parts.append(f"**{dataset_title(dataset)}**\n\n" + table(header, rows))
    return "\n\n".join(parts)


def best_val(record: dict) -> float | None:
    values = [h.get("val_accuracy") for h in record.get("history") or [] if h.get("val_accuracy") is not None]
    return max(values) if values else None


def time_to(record: dict, threshold: float) -> tuple[int, float] | None:
    """``(epochs, training seconds)`` until validation accuracy first reaches ``threshold``."""
    seconds = 0.0
    for h in record.get("history") or []:
        seconds += h.get("seconds") or 0.0
        if h.get("val_accuracy") is not None and h["val_accuracy"] >= threshold:
            return int(h["epoch"]), seconds
    return None


def _mean_text(values, digits: int, spread: bool = True) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if spread and std is not None else "")


def render_time_to_accuracy(records: list[dict]) -> str:
    grouped = group(records, "time-to-accuracy")
    datasets = [d for d in dataset_order(grouped) if d in grouped] or ["fer2013"]
    targets = specs.TIME_TO_ACCURACY_TARGETS
    parts = []
    for dataset in datasets:
        runs = grouped.get(dataset, {})
        baseline, _, _ = mean_std(best_val(r) for r in runs.get("ce", []))
        header = ["Method", "Best val acc. (%)"]
        for t in targets:
            header += [f"Epochs to {t:.0%} of CE", f"Seconds to {t:.0%} of CE"]
        header += ["Train s (all epochs)", "Images/s", "Runs"]
        rows = []
        for name in list(specs.RECIPES) + sorted(n for n in runs if n not in specs.RECIPES):
            rs = runs.get(name, [])
            if not rs:
                rows.append([specs.METHOD_NAMES.get(name, name)] + [NOT_RUN] * (len(header) - 1))
                continue
            mean, std, n = mean_std(best_val(r) for r in rs)
            row = [specs.METHOD_NAMES.get(name, name), pct(mean, std, n)]
            for t in targets:
                if baseline is None:
                    row += ["n/a (no CE run)"] * 2
                    continue
                reached = [time_to(r, t * baseline) for r in rs]
                hit = [x for x in reached if x is not None]
                missed = len(reached) - len(hit)
                suffix = f" ({missed}/{len(reached)} not reached)" if missed else ""
                if not hit:
                    row += ["not reached"] * 2
                    continue
                row += [_mean_text([e for e, _ in hit], 1) + suffix, _mean_text([s for _, s in hit], 1) + suffix]
            row += [
                _mean_text([r.get("train_seconds") for r in rs], 1),
                _mean_text([r.get("steady_images_per_second") for r in rs], 0),
                runs_cell(rs),
            ]
            rows.append(row)
        note = f"CE best validation accuracy {pct(baseline)}%" if baseline is not None else "no CE baseline yet"
        parts.append(f"**{dataset_title(dataset)}** ({note})\n\n" + table(header, rows))
    return "\n\n".join(parts)


def render_throughput(records: list[dict]) -> str:
    grouped = group(records, "throughput")
    datasets = [d for d in dataset_order(grouped) if d in grouped] or ["fer2013"]
    header = [
        "Method",
        "Concurrent runs",
        "Images/s per run",
        "Images/s total",
        "Epoch s",
        "Peak GPU memory (GiB)",
        "Parameters (M)",
        "Device",
    ]
    parts = []
    for dataset in datasets:
        runs = grouped.get(dataset, {})
        rows = []
        for name in list(specs.RECIPES) + sorted(n for n in runs if n not in specs.RECIPES):
            rs = runs.get(name, [])
            by_jobs = defaultdict(list)
            for r in rs:
                by_jobs[int(r.get("concurrent_runs") or 1)].append(r)
            if not by_jobs:
                rows.append([specs.METHOD_NAMES.get(name, name), "1"] + [NOT_RUN] * (len(header) - 2))
                continue
            for jobs, group_runs in sorted(by_jobs.items()):
                rates = [r.get("steady_images_per_second") for r in group_runs]
                mean, _, n = mean_std(rates)
                epoch_seconds = [
                    statistics.median([h["seconds"] for h in r.get("history") or [] if h.get("seconds")] or [0])
                    for r in group_runs
                ]
                memory = [r.get("peak_gpu_memory_bytes") for r in group_runs]
                params = [r.get("parameters") for r in group_runs]
                devices = sorted({r.get("gpu_name") or r.get("device") or "?" for r in group_runs})
                rows.append(
                    [
                        specs.METHOD_NAMES.get(name, name),
                        str(jobs),
                        _mean_text(rates, 0),
                        f"{mean * jobs:.0f}" if n else "n/a",
                        _mean_text(epoch_seconds, 2, spread=False),
                        _mean_text([m / 2**30 if m is not None else None for m in memory], 2, spread=False),
                        _mean_text([p / 1e6 if p is not None else None for p in params], 2, spread=False),
                        ", ".join(devices),
                    ]
                )
        parts.append(f"**{dataset_title(dataset)}**\n\n" + table(header, rows))
    return "\n\n".join(parts)


def render_published(records: list[dict], protocol: str = "") -> str:
    """The papers' accuracies beside this repository's best recipe per dataset (``protocol``: a
    note such as ``"CPU protocol"`` for the Source column)."""
    main = group(records, "main")
    where = f"this repository, {protocol}" if protocol else "this repository"
    rows = []
    for dataset in dict.fromkeys(p.dataset for p in specs.PUBLISHED):
        for p in (p for p in specs.PUBLISHED if p.dataset == dataset):
            rows.append(
                [dataset_title(dataset), p.method, f"{p.accuracy:.2f}", p.source + (f"; {p.note}" if p.note else "")]
            )
        runs = main.get(dataset, {})
        best = None
        for name, rs in runs.items():
            mean, _, _ = mean_std(per_unit_values(rs, "accuracy"))
            if mean is not None and (best is None or mean > best[1]):
                best = (name, mean, rs)
        if best is None:
            rows.append([dataset_title(dataset), "fermetric, best recipe", NOT_RUN, f"{where} (main table)"])
        else:
            name, _, rs = best
            rows.append(
                [
                    dataset_title(dataset),
                    f"fermetric {method_title(name)}",
                    metric_cell(rs, "accuracy"),
                    f"{where}, {runs_cell(rs)}, {split_note(rs)}",
                ]
            )
        if any(p.method == "MT-DML" for p in specs.PUBLISHED if p.dataset == dataset):
            # from scratch and fine-tuned from FER2013 (the usual CK+ practice), when both ran
            for name in [n for n in ("mtdml", "mtdml-from-fer2013") if n in runs] or ["mtdml"]:
                rs = runs.get(name, [])
                rows.append(
                    [
                        dataset_title(dataset),
                        f"fermetric {method_title(name)}",
                        metric_cell(rs, "accuracy"),
                        f"{where}, {runs_cell(rs)}" if rs else f"{where} (main table)",
                    ]
                )
    return table(["Dataset", "Method", "Top-1 accuracy (%)", "Source"], rows)


def render_provenance(records: list[dict]) -> str:
    if not records:
        return "No results yet: every table above says " + f'"{NOT_RUN}".'
    groups = defaultdict(list)
    for r in records:
        device = r.get("gpu_name") or " ".join(str(v) for v in (r.get("cpu_model"), r.get("device")) if v) or "?"
        key = (
            r.get("table"),
            r.get("dataset"),
            device,
            r.get("precision") or "?",
            r.get("torch_version"),
            r.get("cuda_version"),
            r.get("fermetric_version"),
            (r.get("git_commit") or "?")[:10],
            r.get("concurrent_runs") or 1,
        )
        groups[key].append(r)
    rows = []
    for key, rs in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        table_name, dataset, device, precision, torch_v, cuda_v, fermetric_v, commit, jobs = key
        seeds = ", ".join(str(s) for s in sorted({r.get("seed") for r in rs}))
        dates = sorted((r.get("date") or "?")[:10] for r in rs)
        reused = sum(1 for r in rs if r.get("reused_from"))
        rows.append(
            [
                table_name,
                dataset,
                device,
                precision,
                torch_v or "?",
                cuda_v or "-",
                fermetric_v or "?",
                commit,
                str(jobs),
                seeds,
                dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}",
                f"{len(rs)}" + (f" ({reused} reused)" if reused else ""),
            ]
        )
    return table(
        [
            "Table",
            "Dataset",
            "Device",
            "Precision",
            "torch",
            "CUDA",
            "fermetric",
            "Commit",
            "Concurrent",
            "Seeds",
            "Dates",
            "Runs",
        ],
        rows,
    )


RENDERERS = {
    "main": render_main,
    "ablations": render_ablations,
    "time-to-accuracy": render_time_to_accuracy,
    "throughput": render_throughput,
    "published": render_published,
    "provenance": render_provenance,
}


#: The CPU protocol's tables (``--scale cpu``) sit under markers named ``cpu-<section>``.
CPU_SECTIONS = ("main", "ablations", "published", "provenance")


def render_all(records: list[dict], scale: str = "gpu") -> dict[str, str]:
    """Every section of ``scale``'s tables from the records of that scale only."""
    records = [r for r in records if (r.get("scale") or "gpu") == scale]
    if scale == "gpu":
        return {name: RENDERERS[name](records) for name in SECTIONS}
    renderers = {
        **RENDERERS,
        "main": lambda rs: render_main(rs, specs.CPU_MAIN_ROWS if scale == "cpu" else None),
        "ablations": lambda rs: render_ablations(rs, scale),
        "published": lambda rs: render_published(rs, f"{scale.upper()} protocol"),
    }
    return {f"{scale}-{name}": renderers[name](records) for name in CPU_SECTIONS}


def replace_sections(text: str, sections: dict[str, str], where: str = "document") -> str:
    """``text`` with the content between each section's start and end markers replaced."""
    for name, body in sections.items():
        start, end = f"<!-- fermetric:{name}:start -->", f"<!-- fermetric:{name}:end -->"
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            raise TableError(
                f"{where}: markers {start} ... {end} are missing or out of order; add them where "
                f"the {name} table belongs"
            )
        text = text[: i + len(start)] + "\n" + body.rstrip() + "\n" + text[j:]
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results"), help="results root")
    p.add_argument("--doc", default=str(REPO / "docs" / "RESULTS.md"), help="the document to update")
    p.add_argument(
        "--import",
        dest="bundles",
        nargs="+",
        default=[],
        metavar="BUNDLE",
        help="JSON-lines bundles from protocol.py --bundle to unpack into --results first",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if the document is not up to date; write nothing")
    p.add_argument(
        "--scale",
        nargs="+",
        default=None,
        choices=list(specs.SCALES),
        help="which protocol scales' tables to regenerate (default: gpu, plus every other scale "
        "whose markers the document has)",
    )
    args = p.parse_args(argv)
    try:
        if args.bundles:
            written, failed = import_bundles(args.bundles, args.results)
            print(f"imported {written} result(s)" + (f"; {failed} failed run(s) listed above" if failed else ""))
        records = load_results(args.results)
        doc = Path(args.doc)
        if not doc.is_file():
            raise TableError(f"{doc}: no such document; restore docs/RESULTS.md (it holds the table markers)")
        old = doc.read_text()
        scales = args.scale or ["gpu"] + [
            name for name in specs.SCALES if name != "gpu" and f"<!-- fermetric:{name}-main:start -->" in old
        ]
        new = old
        for scale in scales:
            new = replace_sections(new, render_all(records, scale), str(doc))
    except TableError as err:
        print(f"make_tables: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"{doc} is out of date: run python benchmarks/make_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        doc.write_text(new)
    print(f"{doc}: {len(records)} result(s) in the tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
