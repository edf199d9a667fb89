"""``fermetric audit-data``: class counts, duplicates, blank and unreadable images of a dataset."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..data import parse_data_arg
from ..data.audit import audit


def _print_table(report: dict) -> None:

    # Piped output has no terminal width: give the ten-column table room instead of Rich's 80.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    classes = report["classes"]
    table = Table(title=escape(f"{report['dataset']} at {report['root']}: {report['total']} images"))
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("size", justify="right")
    for c in classes:
        table.add_column(c, justify="right")
    for split, info in report["splits"].items():
        table.add_row(
            split,
            str(info["images"]),
            "x".join(map(str, info["image_size"])),
            *(str(info["classes"].get(c, 0)) for c in classes),
        )
    console.print(table)

    dup = report["exact_duplicates"]
    pix = report["pixel_duplicates"]
    checks = Table(title="checks", show_header=True)
    checks.add_column("check")
    checks.add_column("count", justify="right")
    checks.add_column("detail")
    pairs = ", ".join(f"{k}: {v}" for k, v in dup["split_pairs"].items()) or "none"
    pairs = escape(pairs)
    checks.add_row("exact duplicate groups", str(dup["groups"]), f"{dup['images']} images ({dup['method']})")
    checks.add_row("  across splits", str(dup["across_splits"]), pairs)
    checks.add_row("  conflicting labels", str(dup["conflicting_labels"]), "")
    checks.add_row(
        "pixel-identical groups",
        str(pix["groups"]),
        f"{pix['across_splits']} across splits, {pix['conflicting_labels']} conflicting",
    )
    blank = report["near_blank"]
    checks.add_row(
        "near-blank images",
        str(blank["count"]),
        escape(
            f"max-min <= {blank['threshold']}: "
            + ", ".join(i["path"] for i in blank["items"][:3])
            + (" ..." if blank["count"] > 3 else "")
        ),
    )
    bad = report["unreadable"]
    checks.add_row(
        "unreadable images",
        str(bad["count"]),
        escape(
            ", ".join(f"{i['path']} ({i['reason']})" for i in bad["items"][:2]) + (" ..." if bad["count"] > 2 else "")
        ),
    )
    console.print(checks)
    for group in dup["members"][:5]:
        console.print(
            "  duplicate: " + "  ==  ".join(f"{m['split']}:{m['path']} ({m['label']})" for m in group),
            markup=False,
            highlight=False,
        )
    for message in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def run(args) -> int:
    """``fermetric audit-data DATASET=ROOT [--json]``."""
    name, root = parse_data_arg(args.dataset)
    report = audit(name, root)
    if getattr(args, "json", False):
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0
