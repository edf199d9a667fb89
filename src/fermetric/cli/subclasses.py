"""``fermetric subclasses``: DMSL sub-class discovery ("mitosis") on a trained model."""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.evaluate import shown_as_trained
from ..engine.progress import progress_bar
from ..errors import DataError
from ..losses.space import space_of_meta
from ..methods.subclasses import (
    SubclassAssignment,
    contact_sheet,
    discover_subclasses,
    embed_set,
    exemplars,
    summary_dict,
    write_assignment_csv,
)
from .common import load_model, load_split, preprocessing_of


def format_summary(assignment: SubclassAssignment, title: str = "") -> str:
    """A readable, aligned text summary: per class, its sub-classes and their sizes."""
    width = max([len(c) for c in assignment.classes] + [5])
    lines = [title] if title else []
    lines.append(
        f"{len(assignment.classes)} classes -> {assignment.num_subclasses} sub-classes "
        f"(at most {assignment.options.get('max_components')} per class, "
        f"classes of >= {assignment.options.get('min_samples')} images split)"
    )
    for c, name in enumerate(assignment.classes):
        subs = assignment.subclasses_of(c)
        n = int(assignment.counts[subs].sum())
        parts = "  ".join(f"{assignment.names[s]} {int(assignment.counts[s])}" for s in subs) or "-"
        note = assignment.info.get(name, {}).get("reason")
        lines.append(f"  {name:<{width}} {n:>7}   {parts}" + (f"   ({note})" if note else ""))
    return "\n".join(lines)


def run(args) -> int:
    """``fermetric subclasses``: discover and write the sub-class structure of a dataset split."""
    device, model, meta = load_model(args)
    imageset, name, root, _ = load_split(args, meta, align=False)
    imageset = shown_as_trained(imageset, meta)  # as fermetric eval shows it
    if not (imageset.labels >= 0).any():
        raise DataError(
            f"{name} split {args.split!r} has no labelled image; choose a labelled split (e.g. --split train)"
        )
    preprocessing = preprocessing_of(meta)
    space = space_of_meta(meta)
    with progress_bar(f"embed {name}/{args.split}", total=len(imageset)) as progress:
        _, z = embed_set(model, imageset, preprocessing, device, space, precision=args.precision, progress=progress)
    assignment = discover_subclasses(
        z,
        imageset.labels,
        imageset.num_classes,
        max_components=args.max_components,
        min_samples=args.min_samples,
        classes=imageset.classes,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nearest = exemplars(z, assignment)
    summary = summary_dict(
        assignment,
        imageset.paths,
        nearest,
        checkpoint=str(args.checkpoint),
        dataset=name,
        root=str(root),
        split=args.split,
        n=len(imageset),
        embedding_space=space.to_dict(),
    )
    (out / "subclasses.json").write_text(json.dumps(summary, indent=2))
    write_assignment_csv(out / "assignment.csv", assignment, imageset)
    contact_sheet(out / "contact_sheet.png", imageset.images, assignment, nearest)
    print(format_summary(assignment, title=f"{name} {args.split}: {len(imageset)} images"))
    print(f"wrote {out / 'subclasses.json'}, {out / 'assignment.csv'}, {out / 'contact_sheet.png'}")
    return 0
