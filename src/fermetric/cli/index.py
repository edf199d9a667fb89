"""``fermetric index build`` and ``fermetric index query``: nearest-expression retrieval."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..engine.progress import progress_bar
from ..retrieval import EmbeddingIndex
from .common import dataset_options


def run_build(args) -> int:
    """``fermetric index build --checkpoint C --data DATASET=ROOT|FOLDER --split S --out INDEX``."""
    with progress_bar("index build") as progress:
        index = EmbeddingIndex.build(
            args.checkpoint,
            args.data,
            split=args.split,
            device=args.device,
            detect=getattr(args, "detect", False),
            precision=args.precision,
            progress=progress,
            **dataset_options(args),
        )
    index.save(args.out)
    known = int((index.labels >= 0).sum())
    data = index.meta["data"]
    where = f"{data['name']}/{data['split']}" if data["kind"] == "dataset" else data["root"]
    print(
        f"indexed {len(index)} faces from {where} ({known} labelled, classes: {', '.join(index.classes) or 'none'}); "
        f"{index.dim}-d embeddings of {index.meta['checkpoint']}; wrote {args.out}"
    )
    return 0


def run_query(args) -> int:
    """``fermetric index query INDEX IMAGE -k 10 [--sheet PNG] [--json] [--no-detect]``."""
    index = EmbeddingIndex.load(args.index)
    predictor = index.predictor(device="cpu")
    crop = index.query_crop(args.image, detect=not args.no_detect, predictor=predictor)
    _, embedding = predictor.run_crops(crop[None])
    results = index.search(embedding, args.k)[0]
    if args.sheet:
        index.contact_sheet(crop, results, args.sheet)
    if args.json:
        for rank, result in enumerate(results, 1):
            sys.stdout.write(json.dumps({"rank": rank, **result._asdict()}) + "\n")
        return 0

    table = Table(title=Text(f"{len(results)} nearest to {args.image}"))  # Text: file names are not markup
    for column in ("rank", "path", "label", "distance"):
        table.add_column(column, justify="right" if column in ("rank", "distance") else "left")
    for rank, result in enumerate(results, 1):
        table.add_row(str(rank), Text(result.path), result.label or "?", f"{result.distance:.4f}")
    console = Console()
    console.print(table)
    votes: dict[str, int] = {}
    for result in results:
        if result.label:
            votes[result.label] = votes.get(result.label, 0) + 1
    if votes:
        console.print(
            "neighbours' labels: " + ", ".join(f"{c} {n}" for c, n in sorted(votes.items(), key=lambda kv: -kv[1])),
            highlight=False,
            markup=False,
        )
    if args.sheet:
        console.print(f"wrote {args.sheet}", highlight=False, markup=False)
    return 0
