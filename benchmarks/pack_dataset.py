"""Pack a dataset into one ``.npz`` file that travels to a lent GPU machine.

    python benchmarks/pack_dataset.py fer2013=../shared/data/fer2013 --out .pack/fer2013.npz
    python benchmarks/pack_dataset.py ferplus=../shared/data/ferplus --out .pack/ferplus.npz --label-mode majority
    python benchmarks/pack_dataset.py ckplus48=../shared/data/ckplus48 --out .pack/ckplus48.npz

Every split is loaded through :func:`fermetric.data.load_dataset` (so the pack holds exactly
what training would read) and written by :func:`fermetric.data.packed.write_packed` (format,
codec and measured sizes are documented there). Datasets whose reader takes a ``fold`` option
(subject-independent k-fold protocols: ``ckplus48``, ``jaffe``) are packed as split ``all`` with
their subject groups; the folds are cut at load time. ``.pack/`` is git-ignored: packs hold
research-licensed images and must never be committed.

A lent GPU call carries at most 64 MiB (working tree included), so the script reports the size
and warns above ``--warn-mib`` (default 56 MiB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fermetric.data import DATASETS, dataset_splits, load_dataset, parse_data_arg
from fermetric.data.packed import DEFAULT_PRESET, write_packed
from fermetric.errors import FermetricError

MIB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", metavar="DATASET=ROOT", help="e.g. fer2013=../shared/data/fer2013")
    p.add_argument("--out", required=True, help="pack file to write, e.g. .pack/fer2013.npz")
    p.add_argument(
        "--label-mode",
        default=None,
        choices=["majority", "plurality", "probability"],
        help="FER+ label mode fixed into the pack (default: the reader's, majority)",
    )
    p.add_argument(
        "--num-folds",
        type=int,
        default=None,
        help="subject folds of a k-fold dataset (default: the reader's, 10 for ckplus48)",
    )
    p.add_argument(
        "--preset", type=int, default=DEFAULT_PRESET, help="xz preset 0-9 (default 6; 9 gains 0.05%% on FER2013)"
    )
    p.add_argument("--warn-mib", type=float, default=56.0, help="warn when the pack is larger (MiB)")
    return p


def pack(
    data: str,
    out: str | Path,
    label_mode: str | None = None,
    num_folds: int | None = None,
    preset: int = DEFAULT_PRESET,
) -> dict:
    """Load every split of ``data`` (``NAME=ROOT``) and write the pack; returns its meta."""
    name, root = parse_data_arg(data)
    reader = DATASETS.get(name)
    options = {}
    if "label_mode" in reader.options:
        options["label_mode"] = label_mode or reader.options["label_mode"]
    elif label_mode is not None:
        raise FermetricError(f"dataset {name!r} has no label modes; drop --label-mode")
    if "fold" in reader.options:  # a subject-fold protocol: pack everything, cut folds at load time
        folds = int(num_folds or reader.options.get("num_folds") or 10)
        splits = {"all": load_dataset(name, root, "all", **options)}
        kfold = {"num_folds": folds}
    else:
        if num_folds is not None:
            raise FermetricError(f"dataset {name!r} has fixed splits; drop --num-folds")
        names = [s for s in dataset_splits(name, root) if s != "all"]
        splits = {s: load_dataset(name, root, s, **options) for s in names}
        kfold = None
    return write_packed(out, splits, name, kfold=kfold, options=options, source_root=str(root), preset=preset)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        meta = pack(args.data, args.out, args.label_mode, args.num_folds, args.preset)
    except FermetricError as err:
        print(f"pack_dataset: error: {err}", file=sys.stderr)
        return err.exit_code
    size = Path(args.out).stat().st_size
    counts = ", ".join(f"{s} {v['n']}" for s, v in meta["splits"].items())
    codec = meta["codec"]
    print(
        f"{args.out}: {meta['dataset']} ({counts}; {codec['distinct_images']} distinct of "
        f"{codec['total_images']} images, {meta['image_shape'][0]}x{meta['image_shape'][1]}) "
        f"{size / 1e6:.1f} MB = {size / MIB:.1f} MiB in {time.perf_counter() - started:.0f} s"
    )
    if size > args.warn_mib * MIB:
        print(
            f"pack_dataset: warning: {args.out} is {size / MIB:.1f} MiB; a device call carries 64 MiB in all "
            "(working tree included)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
