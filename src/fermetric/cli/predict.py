"""``fermetric predict`` and ``fermetric demo``: expressions of the faces in photos, videos, streams."""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..assets import example_photo
from ..data.faces import create_detector
from ..engine.progress import progress_bar
from ..errors import ConfigError, ImageError
from ..predict import MAX_DECODE_SIDE, VIDEO_EXTENSIONS, PredictionReport, Predictor, detector_options
from .common import write_json_line


def _csv_header(classes: tuple[str, ...]) -> list[str]:
    return [
        "path",
        "frame",
        "time",
        "face",
        "x0",
        "y0",
        "x1",
        "y1",
        "score",
        "label",
        *[f"p_{c}" for c in classes],
        "embedding_norm",
    ]


def _csv_row(record: dict, classes: tuple[str, ...]) -> list:
    empty = lambda v: "" if v is None else v  # noqa: E731
    return [
        record["path"],
        empty(record["frame"]),
        empty(record["time"]),
        record["face"],
        *record["box"],
        empty(record["score"]),
        record["label"],
        *[f"{record['probabilities'][c]:.6f}" for c in classes],
        f"{record['embedding_norm']:.6f}",
    ]


def _video_summary(report: PredictionReport, video: str) -> str:
    """``video: N frames analysed; happy 60%, neutral 30%, no face 10%``: the share of analysed
    frames per expression of the frame's largest face."""
    largest: dict[int, dict] = {}
    for record in report.records:
        if record["path"] == video:
            x0, y0, x1, y1 = record["box"]
            best = largest.get(record["frame"])
            if best is None or (x1 - x0) * (y1 - y0) > (best["box"][2] - best["box"][0]) * (
                best["box"][3] - best["box"][1]
            ):
                largest[record["frame"]] = record
    without = sum(1 for path, _ in report.no_face if path == video)
    total = len(largest) + without
    counts: dict[str, int] = {}
    for record in largest.values():
        counts[record["label"]] = counts.get(record["label"], 0) + 1
    if without:
        counts["no face"] = without
    shares = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{video}: {total} frames analysed; {shares}"


def _summary_lines(report: PredictionReport, detect: bool = True) -> list[str]:
    counts = {c: n for c, n in report.class_counts().items() if n}
    lines = [
        f"files read: {len(report.files)}; images/frames analysed: {report.frames}; faces found: {len(report.records)}",
    ]
    if counts:
        lines.append("per class: " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    if report.no_face:
        where = [path if frame is None else f"{path} frame {frame}" for path, frame in report.no_face]
        shown = ", ".join(where[:5]) + (f" (+{len(report.no_face) - 5} more)" if len(report.no_face) > 5 else "")
        hint = " (images that are face crops already: use --no-detect)" if detect else ""
        lines.append(f"no face found in {len(report.no_face)}: {shown}{hint}")
    lines.extend(_video_summary(report, video) for video in report.videos)
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)}:")
        lines.extend(f"  {path}: {reason}" for path, reason in report.skipped)
    return lines


def _check_output_folder(folder: Path, option: str) -> None:
    """ConfigError unless ``folder`` can be created and written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"{option} {folder}: cannot write there ({err.strerror or err}); choose another folder"
        ) from None


def _check_output_file(target: Path, option: str) -> None:
    """ConfigError unless ``target`` can be written (its folder is created; an existing file is
    left as it is until the results are written)."""
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a"):
            pass
    except OSError as err:
        raise ConfigError(f"{option} {target}: cannot write it ({err.strerror or err}); choose another path") from None
    if not existed:
        target.unlink()


class Window:
    """``--show``: each annotated image in one OpenCV window, shown as it is analysed.

    Checked at creation: a display (``DISPLAY`` / ``WAYLAND_DISPLAY`` on Linux) and an OpenCV
    build with a GUI backend (``opencv-python``; the ``-headless`` build fermetric installs by
    default has none). q or Esc closes the window; the analysis and its output go on.
    """

    TITLE = "fermetric"

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConfigError("--show needs a display (no DISPLAY or WAYLAND_DISPLAY is set); use --annotate out.mp4")
        if not has_gui(cv2):
            raise ConfigError(
                "--show needs OpenCV with a GUI: pip install opencv-python (the -headless build has none); "
                "or use --annotate out.mp4"
            )
        self.open = True

    def __call__(self, canvas, path: str, frame: int | None) -> None:
        if not self.open:
            return
        self.cv2.imshow(self.TITLE, self.cv2.cvtColor(canvas, self.cv2.COLOR_RGB2BGR))
        if self.cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.close()

    def close(self) -> None:
        if self.open:
            self.cv2.destroyWindow(self.TITLE)
            self.open = False


def has_gui(cv2) -> bool:
    """Whether this OpenCV build has a window backend (its build information says ``GUI: NONE`` otherwise)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


def run(args) -> int:
    """``fermetric predict PATH... [--checkpoint] [--json | --csv FILE] [--annotate DIR] [--no-detect]
    [--detector yunet] [--min-face PX] [--tta none|flip] [--prior train|uniform] [--crop-resolution train|input]
    [--every N] [--device]``."""
    detector = create_detector(args.detector, **detector_options(args.detector, args.min_face, args.device))
    predictor = Predictor.load(
        args.checkpoint,
        device=args.device,
        detector=detector,
        tta=args.tta,
        precision=args.precision,
        backend=args.backend,
        prior=args.prior,
        crop_resolution=args.crop_resolution,
    )
    predictor.with_embeddings = args.embeddings
    # Outputs are checked before any work, so an unwritable target does not waste the whole run.
    if args.csv:
        _check_output_file(Path(args.csv), "--csv")
    if args.annotate:
        target = Path(args.annotate)
        if target.suffix.lower() in VIDEO_EXTENSIONS:
            _check_output_file(target, "--annotate")
        else:
            _check_output_folder(target, "--annotate")
    window = Window() if args.show else None  # refused before any work where no window can open
    console = Console(stderr=bool(args.json))
    on_record = write_json_line if args.json else None

    with (
        progress_bar("predict", unit="file", enabled=not args.json) as progress,
        progress_bar("frames", unit="frame", enabled=not args.json, lazy=True, position=1) as frame_progress,
    ):
        report = predictor.predict_paths(
            args.paths,
            detect=not args.no_detect,
            every=args.every,
            annotate=args.annotate,
            on_record=on_record,
            progress=progress,
            on_no_face=on_record,
            max_frames=args.max_frames,
            on_frame=window,
            frame_progress=frame_progress,
        )
    if window is not None:
        window.close()
    if not report.files:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in report.skipped[:2]) or "no input"
        more = f" (and {len(report.skipped) - 2} more)" if len(report.skipped) > 2 else ""
        raise ImageError(f"nothing could be read: {reasons}{more}")
    if args.csv:
        target = Path(args.csv)
        try:
            with open(target, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(_csv_header(predictor.classes))
                writer.writerows(_csv_row(r, predictor.classes) for r in report.records)
        except OSError as err:  # e.g. the disk filled up during the run
            raise ConfigError(f"--csv {target}: cannot write it ({err.strerror or err})") from None
    if not args.json and not args.csv:
        table = Table(show_lines=False)
        for column in ("file", "frame", "face", "box (x0, y0, x1, y1)", "expression", "p", "detector score"):
            # fold, never truncate, the file name (a narrow or piped console would show "/tmp/pho…")
            table.add_column(
                column,
                justify="right" if column in ("frame", "face", "p", "detector score") else "left",
                overflow="fold" if column == "file" else "ellipsis",
            )
        rows = {}
        for record in report.records:
            rows.setdefault((record["path"], record["frame"]), []).append(record)
        for key in report.no_face:
            rows.setdefault(key, [])
        order = {path: i for i, path in enumerate(report.files)}
        for (path, frame), records in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0][1] or 0)):
            name = Text(path)  # plain text: a file named "[red]x.jpg" is not rich markup
            if not records:
                table.add_row(name, "" if frame is None else str(frame), "", "no face found", "", "", "")
            for r in records:
                table.add_row(
                    name,
                    "" if frame is None else str(frame),
                    str(r["face"]),
                    ", ".join(f"{v:.0f}" for v in r["box"]),
                    r["label"],
                    f"{r['probabilities'][r['label']]:.2f}",
                    "" if r["score"] is None else f"{r['score']:.2f}",
                )
        console.print(table)
    for line in _summary_lines(report, detect=not args.no_detect):
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # one line per file, even when piped
    if args.csv:
        console.print(f"wrote {len(report.records)} rows to {args.csv}", highlight=False, markup=False, soft_wrap=True)
    if args.annotate:
        console.print(f"annotated copies in {args.annotate}", highlight=False, markup=False, soft_wrap=True)
        if report.downscaled:
            console.print(
                f"{len(report.downscaled)} annotated copies are smaller than their originals (decoded at "
                f"most {MAX_DECODE_SIDE} px); boxes in the table, --json and --csv are in original pixels",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    return 0


def run_demo(args) -> int:
    """``fermetric demo``: the shipped model on the shipped example photo (the README's first command)."""
    photo = str(example_photo())
    print(f"fermetric demo: shipped model on {photo} (public-domain NASA photo)", file=sys.stderr)
    from . import build_parser  # the real parser: the demo is `fermetric predict PHOTO --device cpu`

    argv = ["predict", photo, "--checkpoint", "default", "--device", "cpu"]
    return run(build_parser().parse_args(argv + (["--json"] if args.json else [])))
