"""What each results table runs and shows; shared by ``protocol.py`` and ``make_tables.py``.

Pure data and small helpers (no torch): the recipes of the main table, the ablation variants
(a recipe plus ``--set`` overrides), the published numbers quoted for comparison, the result
file layout and the targets of the time-to-accuracy table.

Result files (one JSON per run, written by ``protocol.py`` as each run lands)::

    benchmarks/results/<dataset>/<recipe>-seed<S>[-fold<F>].json                 main
    benchmarks/results/<dataset>/ablations/<variant>-seed<S>[-fold<F>].json       ablations
    benchmarks/results/<dataset>/time-to-accuracy/<recipe>-seed<S>.json           time-to-accuracy
    benchmarks/results/<dataset>/throughput/<recipe>-seed<S>-x<J>.json            throughput (J concurrent runs)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCHEMA = "fermetric-benchmark/1"

#: Protocol scales: the same recipes, code path and augmentation; only these overrides differ.
#: ``cpu`` is sized by measurement on the 2-core CPU this project runs on (AMD EPYC, AVX2, no
#: native bf16, so fp32): ResNet-18 at width 0.25 trains at about 150 img/s there (width 0.5:
#: about 37 img/s, a 13-minute epoch), so 12 epochs of FER2013 Training take about 40 minutes.
#: Batch 128 with the learning rate scaled linearly from the recipes' 0.1 at batch 256.
#: Results of a scale other than ``gpu`` live under ``<results>/<scale>/``.
SCALES: dict[str, tuple[str, ...]] = {
    "gpu": (),
    "cpu": ("model.width=0.25", "data.batch_size=128", "optim.lr=0.05", "epochs=12"),
}
RECIPES: tuple[str, ...] = ("ce", "mtdml", "dmsl", "tcl-full", "tcl-semi", "tcl-pred", "pidml")
TABLES: tuple[str, ...] = ("main", "ablations", "time-to-accuracy", "throughput")

#: The main-table rows of the CPU protocol (sized for 2 cores): every recipe on FER2013 and
#: fine-tuned from it on CK+ (plus ce and MT-DML from scratch); on FER+ ce and the two best
#: metric-learning recipes of FER2013 (TCL fully- and semi-synthesized). The GPU protocol has
#: every recipe everywhere.
CPU_MAIN_ROWS: dict[str, tuple[str, ...]] = {
    "fer2013": RECIPES,
    "ferplus": ("ce", "tcl-full", "tcl-semi"),
    "ckplus48": ("ce", "mtdml") + tuple(f"{r}-from-fer2013" for r in RECIPES),
}
TABLE_FOLDERS = {
    "main": "",
    "ablations": "ablations",
    "time-to-accuracy": "time-to-accuracy",
    "throughput": "throughput",
}
#: Metrics copied from ``evaluate`` into every result (the protocol's numbers, methods.md).
METRICS: tuple[str, ...] = (
    "accuracy",
    "macro_f1",
    "knn_accuracy",
    "map_at_r",
    "precision_at_1",
    "nmi",
    "centroid_accuracy",
)
#: Datasets in the order the tables list them, with their display names.
DATASETS: dict[str, str] = {
    "fer2013": "FER2013",
    "ferplus": "FER+",
    "ckplus48": "CK+ (10-fold)",
    "rafdb": "RAF-DB",
    "jaffe": "JAFFE",
}
METHOD_NAMES: dict[str, str] = {
    "ce": "Cross-entropy (baseline)",
    "mtdml": "MT-DML",
    "dmsl": "DMSL",
    "tcl-full": "TCL fully-synthesized",
    "tcl-semi": "TCL semi-synthesized",
    "tcl-pred": "TCL prediction-based",
    "pidml": "PI&DML",
}


@dataclass(frozen=True)
class Variant:
    """One ablation run: ``recipe`` with ``overrides`` (``key.sub=value``, as ``--set``)."""

    name: str  # file-safe and unique: the result file's stem
    recipe: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """One block of the ablation table: rows ``(label, variant name)``; ``default`` marks the recipe's own setting."""

    title: str
    rows: tuple[tuple[str, str], ...]
    default: str
    scales: tuple[str, ...] = ("gpu", "cpu")  # the protocols whose ablation table has this block


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        # MT-DML (embedding 512 split into N slices; defaults: 8 slices, thresholds over [0.1, 0.8], dual loss)
        Variant("mtdml", "mtdml"),
        Variant("mtdml-slices1", "mtdml", ("loss.options.num_slices=1",)),
        Variant("mtdml-slices4", "mtdml", ("loss.options.num_slices=4",)),
        Variant("mtdml-slices16", "mtdml", ("loss.options.num_slices=16",)),
        Variant("mtdml-margin0.4-0.4", "mtdml", ("loss.options.margin_range=[0.4, 0.4]",)),
        Variant("mtdml-margin0.2-0.5", "mtdml", ("loss.options.margin_range=[0.2, 0.5]",)),
        Variant("mtdml-margin0.05-1.2", "mtdml", ("loss.options.margin_range=[0.05, 1.2]",)),
        Variant("mtdml-nodual", "mtdml", ("loss.options.dual=false",)),
        # TCL: the three negative-selection strategies, and selective attention off
        Variant("tcl-full", "tcl-full"),
        Variant("tcl-semi", "tcl-semi"),
        Variant("tcl-pred", "tcl-pred"),
        Variant("tcl-full-noattention", "tcl-full", ("model.attention=false",)),
        # DMSL: sigma of the Gaussian responsibilities (default 0.5) and embedding mixup (default off)
        Variant("dmsl", "dmsl"),
        Variant("dmsl-sigma0.25", "dmsl", ("loss.options.sigma=0.25",)),
        Variant("dmsl-sigma1.0", "dmsl", ("loss.options.sigma=1.0",)),
        Variant("dmsl-mixup", "dmsl", ("loss.options.mixup=true",)),
        # PI&DML: with and without the partial-image branches
        Variant("pidml", "pidml"),
        Variant("pidml-nopartial", "pidml", ("model.partial=null",)),
    )
}

FAMILIES: tuple[Family, ...] = (
    Family(
        "MT-DML: number of slices (512-d embedding)",
        (
            ("1 slice x 512", "mtdml-slices1"),
            ("4 slices x 128", "mtdml-slices4"),
            ("8 slices x 64", "mtdml"),
            ("16 slices x 32", "mtdml-slices16"),
        ),
        "mtdml",
    ),
    Family(
        "MT-DML: threshold range (8 slices)",
        (
            ("[0.4, 0.4] (one threshold)", "mtdml-margin0.4-0.4"),
            ("[0.2, 0.5]", "mtdml-margin0.2-0.5"),
            ("[0.1, 0.8]", "mtdml"),
            ("[0.05, 1.2]", "mtdml-margin0.05-1.2"),
        ),
        "mtdml",
        ("gpu",),
    ),
    Family(
        "MT-DML: dual triplet loss", (("dual on", "mtdml"), ("dual off (plain batch-hard)", "mtdml-nodual")), "mtdml"
    ),
    Family(
        "TCL: negative selection (selective attention on)",
        (("fully-synthesized", "tcl-full"), ("semi-synthesized", "tcl-semi"), ("prediction-based", "tcl-pred")),
        "tcl-full",
    ),
    Family(
        "TCL: selective attention (fully-synthesized)",
        (("attention on", "tcl-full"), ("attention off", "tcl-full-noattention")),
        "tcl-full",
    ),
    Family("DMSL: sigma", (("0.25", "dmsl-sigma0.25"), ("0.5", "dmsl"), ("1.0", "dmsl-sigma1.0")), "dmsl", ("gpu",)),
    Family("DMSL: sigma", (("0.5", "dmsl"), ("1.0", "dmsl-sigma1.0")), "dmsl", ("cpu",)),
    Family("DMSL: embedding mixup", (("off", "dmsl"), ("on (Beta(2,2))", "dmsl-mixup")), "dmsl", ("gpu",)),
    Family(
        "PI&DML: partial images", (("with partial images", "pidml"), ("whole face only", "pidml-nopartial")), "pidml"
    ),
)


def families(scale: str) -> tuple[Family, ...]:
    """The ablation table's blocks at ``scale``. The CPU protocol runs a smaller set (slices,
    dual, TCL negatives and attention, one DMSL sigma, PI&DML partial images): the
    threshold-range and mixup blocks would cost five more 12-epoch runs on 2 cores."""
    return tuple(f for f in FAMILIES if scale in f.scales)


def ablation_variants(scale: str) -> list[str]:
    """The variants the ablation table at ``scale`` needs, in ``VARIANTS`` order."""
    needed = {variant for family in families(scale) for _, variant in family.rows}
    return [name for name in VARIANTS if name in needed]


#: Time-to-accuracy targets, as fractions of the cross-entropy baseline's best validation accuracy.
TIME_TO_ACCURACY_TARGETS: tuple[float, ...] = (0.95, 1.0)


@dataclass(frozen=True)
class Published:
    method: str
    dataset: str
    accuracy: float  # percent, as published
    source: str
    note: str = ""


#: Published top-1 accuracies quoted beside ours; their protocols differ (see the notes).
PUBLISHED: tuple[Published, ...] = (
    Published("VGGNet (single network)", "fer2013", 73.28, "Khaireddin & Chen, arXiv 2105.03588 (2021)"),
    Published("Residual Masking Network (single network)", "fer2013", 74.14, "Pham, Vu & Tran, ICPR 2020"),
    Published("LHC-Net (single network)", "fer2013", 74.42, "Pecoraro et al., Information 13(9):419 (2022)"),
    Published(
        "Segmentation VGG-19 (single network)",
        "fer2013",
        75.97,
        "Vignesh et al., Int. J. Information Technology 15:1777-1787 (2023)",
    ),
    Published("SCN", "ferplus", 89.35, "Wang et al., CVPR 2020 (Suppressing Uncertainties)"),
    Published(
        "MT-DML",
        "ckplus48",
        98.49,
        "Yang et al., Pattern Recognition 156:110711 (2024), arXiv 2406.16434",
        "the paper's CK+ protocol",
    ),
)


def result_path(
    root: str | Path,
    dataset: str,
    table: str,
    name: str,
    seed: int,
    fold: int | None = None,
    concurrency: int | None = None,
) -> Path:
    """Where one run's JSON lives under the results ``root``."""
    stem = f"{name}-seed{seed}"
    if fold is not None:
        stem += f"-fold{fold}"
    if table == "throughput":
        stem += f"-x{concurrency or 1}"
    folder = Path(root) / dataset
    if TABLE_FOLDERS[table]:
        folder = folder / TABLE_FOLDERS[table]
    return folder / f"{stem}.json"
