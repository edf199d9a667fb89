"""Where a shipped model's int8 graph spends its time in OpenVINO, one thread. A probe, not a test.

    python benchmarks/openvino_profile.py --data ../shared/data/fer2013 \
        --out benchmarks/results/openvino_profile.json

Answers "what is left to gain per face, and where?" for ``--checkpoint`` (repeatable; the three
shipped models by default), each run as ``fermetric predict --backend openvino-int8`` runs it, on
``--faces`` FER2013 PrivateTest faces prepared as evaluation prepares them:

* ``micro_batches``: faces/s of the bare graph (OpenVINO's ``infer`` on prepared faces, nothing
  else) at each chunk size (``--micro-batches``), the sizes interleaved, ``--repeats`` passes each;
* ``pipeline``: faces/s of ``Predictor.run_crops`` (uint8 crops in, probabilities out: what a user
  calls) beside the bare graph at the predictor's own chunk size and beside its preprocessing
  alone (to float, normalise, resize in torch), interleaved, so that the share spent outside the
  graph is measured, not guessed;
* ``kernels``: OpenVINO's own per-layer timing (``PERF_COUNT``) of that chunk size, in
  microseconds per face, summed by operation and kernel and the ``--top`` slowest layers;
* ``dead_channels``: how many ReLU6 channels of the float network never fire on ``--census``
  Training faces (removing those exactly would be free speed; few means that door is shut).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_predict_vs_fer import library_versions, provenance  # noqa: E402


def dead_channels(name: str, images, batch_size: int = 256) -> dict:
    """ReLU6 / ReLU channels of the float model whose output is 0 on every image of ``images``."""
    import torch

    from fermetric.engine.checkpoint import load_model
    from fermetric.engine.evaluate import preprocessing_from_meta

    model, meta = load_model(name)
    model.eval()
    prep = preprocessing_from_meta(meta)
    peak: dict[str, torch.Tensor] = {}

    def record(layer: str):
        def hook(_module, _inputs, output):
            top = output.detach().amax(dim=(0, 2, 3))
            peak[layer] = torch.maximum(peak[layer], top) if layer in peak else top

        return hook

    handles = [
        module.register_forward_hook(record(layer))
        for layer, module in model.named_modules()
        if isinstance(module, torch.nn.ReLU6 | torch.nn.ReLU)
    ]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            model(prep.apply(torch.from_numpy(images[start : start + batch_size])))
    for handle in handles:
        handle.remove()
    per_layer = {layer: int((top <= 0).sum()) for layer, top in peak.items()}
    total = sum(len(top) for top in peak.values())
    return {
        "images": len(images),
        "channels": total,
        "dead": sum(per_layer.values()),
        "dead_share": sum(per_layer.values()) / max(total, 1),
        "per_layer": {layer: n for layer, n in per_layer.items() if n},
    }


def kernel_profile(model, faces, top: int) -> dict:
    """OpenVINO's per-layer timing of one chunk (µs per face), by operation/kernel and slowest layers."""
    import openvino

    compiled = openvino.Core().compile_model(str(model.path), "CPU", {**model.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer({0: faces}, share_inputs=True)
    timings = defaultdict(float)
    runs = 20
    layers: dict[str, dict] = {}
    for _ in range(runs):
        request.infer({0: faces}, share_inputs=True)
        for node in request.profiling_info:
            us = node.real_time.total_seconds() * 1e6 / len(faces) / runs
            timings[f"{node.node_type} ({node.exec_type})"] += us
            layer = layers.setdefault(
                node.node_name, {"op": node.node_type, "kernel": node.exec_type, "us_per_face": 0.0}
            )
            layer["us_per_face"] += us
    total = sum(timings.values())
    slowest = sorted(layers.items(), key=lambda item: -item[1]["us_per_face"])[:top]
    return {
        "chunk": len(faces),
        "us_per_face": total,
        "by_kernel": {
            kind: {"us_per_face": us, "share": us / total}
            for kind, us in sorted(timings.items(), key=lambda item: -item[1])
            if us >= 0.05
        },
        "slowest_layers": [{"layer": name, **layer} for name, layer in slowest],
    }


def profile(name: str, crops, census, args) -> dict:
    import numpy as np
    import torch

    from fermetric.engine.evaluate import preprocessing_from_meta
    from fermetric.predict import Predictor

    predictor = Predictor.load(name, backend="openvino-int8")
    model = predictor.model
    preprocessing = preprocessing_from_meta(predictor.meta)
    faces = preprocessing.apply(torch.from_numpy(crops)).numpy()
    request = model.compiled.create_infer_request()

    def bare(chunk: int) -> float:
        start = time.perf_counter()
        for i in range(0, len(faces), chunk):
            request.infer({0: faces[i : i + chunk]}, share_inputs=True)
        return len(faces) / (time.perf_counter() - start)

    def pipeline() -> float:
        start = time.perf_counter()
        predictor.run_crops(crops)
        return len(crops) / (time.perf_counter() - start)

    def preprocess() -> float:  # run_crops's own preprocessing, in its batches
        start = time.perf_counter()
        for i in range(0, len(crops), predictor.batch_size):
            preprocessing.apply(torch.from_numpy(crops[i : i + predictor.batch_size]))
        return len(crops) / (time.perf_counter() - start)

    bare(model.micro_batch)  # warm-up: first inferences allocate
    pipeline()
    chunks = {chunk: [] for chunk in args.micro_batches}
    paired = {"bare": [], "run_crops": [], "preprocessing": []}
    for _ in range(args.repeats):  # interleaved, so that a slow minute of the host hits every size
        for chunk in chunks:
            chunks[chunk].append(bare(chunk))
        paired["bare"].append(bare(model.micro_batch))
        paired["run_crops"].append(pipeline())
        paired["preprocessing"].append(preprocess())
    bare_median = statistics.median(paired["bare"])
    pipeline_median = statistics.median(paired["run_crops"])
    return {
        "checkpoint": name,
        "graph": str(model.path.relative_to(REPO)) if model.path.is_relative_to(REPO) else str(model.path),
        "input_size": int(faces.shape[-1]),
        "micro_batches": {
            str(chunk): {"faces_per_second_median": statistics.median(v), "faces_per_second": v}
            for chunk, v in chunks.items()
        },
        "pipeline": {
            "micro_batch": model.micro_batch,
            "bare_faces_per_second": paired["bare"],
            "run_crops_faces_per_second": paired["run_crops"],
            "preprocessing_faces_per_second": paired["preprocessing"],
            "outside_graph_share": 1 - pipeline_median / bare_median,
            # the share of run_crops's time a face spends in preprocessing (to float, normalise, resize)
            "preprocessing_share": pipeline_median / statistics.median(paired["preprocessing"]),
        },
        "kernels": kernel_profile(model, np.ascontiguousarray(faces[: model.micro_batch]), args.top),
        "dead_channels": dead_channels(name, census),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", help="a shipped model with an int8 graph (repeatable)")
    p.add_argument(
        "--data", required=True, help="FER2013 root (PrivateTest faces to time, Training faces for the census)"
    )
    p.add_argument("--faces", type=int, default=1024)
    p.add_argument("--census", type=int, default=4000, help="Training faces for the dead-channel census")
    p.add_argument("--micro-batches", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if min(args.faces, args.census, args.repeats, args.top, *args.micro_batches) < 1:
        p.error("--faces, --census, --repeats, --top and --micro-batches must be >= 1")

    import numpy as np
    import openvino
    import torch

    from fermetric.data import load_dataset
    from fermetric.fileio import atomic_write

    torch.set_num_threads(1)  # OpenVinoModel takes torch's thread count: one thread, as fer's per-thread figures
    rng = np.random.default_rng(args.seed)
    test = load_dataset("fer2013", args.data, "test").images
    train = load_dataset("fer2013", args.data, "train").images
    crops = np.ascontiguousarray(np.asarray(test)[rng.permutation(len(test))[: args.faces]])
    census = np.ascontiguousarray(np.asarray(train)[rng.permutation(len(train))[: args.census]])
    models = [profile(name, crops, census, args) for name in args.checkpoint or ["default", "fast", "ferplus"]]
    result = {
        "benchmark": "openvino_profile",
        "threads": 1,
        "faces": args.faces,
        "seed": args.seed,
        "versions": {**library_versions(), "openvino": openvino.__version__},
        "models": models,
        **provenance("openvino_profile.py", argv),
    }
    atomic_write(args.out, (json.dumps(result, indent=1) + "\n").encode())
    for m in models:
        pipe = m["pipeline"]
        sweep = ", ".join(f"{c}: {v['faces_per_second_median']:.0f}" for c, v in m["micro_batches"].items())
        print(
            f"{m['checkpoint']} ({m['input_size']} px): bare graph faces/s by chunk {sweep}; run_crops "
            f"{statistics.median(pipe['run_crops_faces_per_second']):.0f} ({100 * pipe['outside_graph_share']:.1f}% "
            f"outside the graph, {100 * pipe['preprocessing_share']:.1f}% preprocessing); kernels {m['kernels']['us_per_face']:.0f} us/face; dead channels "
            f"{m['dead_channels']['dead']} of {m['dead_channels']['channels']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
