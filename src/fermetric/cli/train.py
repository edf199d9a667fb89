"""``fermetric train``: train a recipe on a dataset."""

from __future__ import annotations

from pathlib import Path

from ..config import load_recipe, replace
from ..data import dataset_splits, load_dataset, parse_data_arg
from ..engine import distributed as dist_utils
from ..engine.checkpoint import architecture_overrides
from ..engine.precision import available_cores
from ..engine.train import RESULTS_FILE, train
from .common import dataset_options


def run(args) -> int:
    """``fermetric train --recipe NAME --data DATASET=ROOT --out DIR [...]`` ."""
    # a fine-tuned run takes its source's network, so the weights fit; the user's --set comes last
    overrides = (architecture_overrides(args.init_from) if args.init_from else []) + list(args.overrides)
    recipe = load_recipe(args.recipe, overrides)
    if args.epochs is not None:
        recipe = replace(recipe, epochs=args.epochs)
    name, root = parse_data_arg(args.data)
    options = dataset_options(args)
    splits = set(dataset_splits(name, root))
    train_set = load_dataset(name, root, "train", **options)
    val_set = load_dataset(name, root, "val", **options) if "val" in splits else None
    test_set = load_dataset(name, root, "test", **options) if "test" in splits else None
    label = name + "".join(f" {k}={v}" for k, v in options.items())
    results = train(
        recipe,
        train_set,
        val_set,
        args.out,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        on_nan=args.on_nan,
        max_steps=args.max_steps,
        progress=not args.quiet,
        test_set=test_set,
        dataset=label,
        precision=args.precision,
        deterministic=args.deterministic,
        threads=args.threads or (None if dist_utils.env_world()[1] > 1 else available_cores()),
        init_from=args.init_from,
    )
    if not args.quiet and dist_utils.env_world()[0] == 0:
        scores = ", ".join(
            f"{split} accuracy {metrics['accuracy']:.4f}" for split, metrics in results["metrics"].items() if metrics
        )
        print(f"{results['selection']}: {scores}; wrote {Path(args.out) / RESULTS_FILE}")
    return 0
