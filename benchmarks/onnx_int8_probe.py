"""Does int8 quantisation make a shipped model fast enough to ship quantised? A probe, not a test.

    python benchmarks/onnx_int8_probe.py --checkpoint fast --data ../shared/data/fer2013

Exports the checkpoint to ONNX (float32), quantises it with onnxruntime's static QDQ
quantisation (per-channel int8 weights, uint8 activations, calibrated on ``--calibration``
FER2013 Training faces), then runs both graphs side by side in one process on the same
``--crops`` PrivateTest faces with one thread each: faces/s at each batch size (best of
``--repeats`` passes) and top-1 accuracy. Writes ``benchmarks/results/onnx_int8_probe.json``.
The faces are prepared as evaluation prepares them (the checkpoint's ``Preprocessing``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import git_commit, machine_info  # noqa: E402


def prepared(model_meta, images, seed: int, count: int):
    """``count`` images (a seeded subset) as the float32 ``[N, 1, S, S]`` batch the graph takes."""
    import numpy as np
    import torch

    from fermetric.engine.evaluate import preprocessing_from_meta

    prep = preprocessing_from_meta(model_meta)
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return prep.apply(torch.as_tensor(np.asarray(images)[order])).numpy(), order


def run(args) -> dict:
    import numpy as np
    import onnxruntime as ort

    from fermetric.data import load_dataset
    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import align_classes
    from fermetric.export import export_onnx, quantize_onnx_int8

    _, meta = load_model(args.checkpoint)
    train = load_dataset("fer2013", args.data, "train")
    test = align_classes(load_dataset("fer2013", args.data, "test"), meta["classes"])
    calibration, _ = prepared(meta, train.images, args.seed + 1, args.calibration)
    crops, order = prepared(meta, test.images, args.seed, args.crops)
    labels = np.asarray(test.labels)[order]

    with tempfile.TemporaryDirectory() as folder:
        fp32 = Path(folder) / "model.onnx"
        export_onnx(args.checkpoint, fp32)
        int8 = quantize_onnx_int8(
            fp32, Path(folder) / "model.int8.onnx", (calibration[i : i + 32] for i in range(0, len(calibration), 32))
        )
        graphs = {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            graphs[name] = (ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), path)
        rows = {}
        for name, (session, path) in graphs.items():
            logits = np.concatenate(
                [session.run(["logits"], {"image": crops[i : i + 64]})[0] for i in range(0, len(crops), 64)]
            )
            rows[name] = {
                "accuracy": float(np.mean(logits.argmax(1) == labels)),
                "file_mb": path.stat().st_size / 1e6,
                "faces_per_second": {},
            }
        for batch in args.batch_sizes:
            for _ in range(args.repeats):  # alternate the two graphs pass by pass
                for name, (session, _) in graphs.items():
                    start = time.perf_counter()
                    for i in range(0, len(crops), batch):
                        session.run(["logits"], {"image": crops[i : i + batch]})
                    rate = len(crops) / (time.perf_counter() - start)
                    best = rows[name]["faces_per_second"].get(str(batch), 0.0)
                    rows[name]["faces_per_second"][str(batch)] = max(best, rate)
    return {
        "benchmark": "onnx_int8_probe",
        "checkpoint": args.checkpoint,
        "input_size": int(crops.shape[-1]),
        "crops": len(crops),
        "calibration": len(calibration),
        "threads": 1,
        "quantisation": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations",
        "rows": rows,
        "machine": machine_info(),
        "versions": {"onnxruntime": ort.__version__},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": "python benchmarks/onnx_int8_probe.py " + " ".join(sys.argv[1:]),
    }


def render(result: dict) -> str:
    lines = [
        f"`benchmarks/onnx_int8_probe.py`, `{result['checkpoint']}` at {result['input_size']} px, "
        f"{result['crops']} FER2013 PrivateTest crops, 1 thread, {result['date'][:10]}, "
        f"onnxruntime {result['versions']['onnxruntime']}.",
        "",
        "| graph | top-1 (%) | file (MB) | "
        + " | ".join(f"faces/s, batch {b}" for b in result["rows"]["fp32"]["faces_per_second"])
        + " |",
        "|---|---|---|" + "---|" * len(result["rows"]["fp32"]["faces_per_second"]),
    ]
    for name, row in result["rows"].items():
        rates = " | ".join(f"{rate:.0f}" for rate in row["faces_per_second"].values())
        lines.append(f"| {name} | {100 * row['accuracy']:.1f} | {row['file_mb']:.1f} | {rates} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="fast")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013"), help="FER2013 folder root")
    p.add_argument("--crops", type=int, default=1000)
    p.add_argument("--calibration", type=int, default=512)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "onnx_int8_probe.json"))
    p.add_argument("--render", metavar="JSON", help="print the markdown table of a result file and exit")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    from fermetric.fileio import atomic_write

    result = run(args)
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
