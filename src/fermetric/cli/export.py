"""``fermetric export``: a checkpoint as an ONNX graph or safetensors weights."""

from __future__ import annotations

from ..errors import ConfigError
from ..export import INPUT_NAME, export_onnx, export_onnx_int8, export_weights, read_onnx_meta
from .common import load_split


def run(args) -> int:
    """``fermetric export --checkpoint C --format onnx|safetensors [--dtype float16]
    [--int8-calibration --data DATASET=ROOT] --out FILE`` (with ``onnx``, the calibration makes an
    int8 graph)."""
    dtype = getattr(args, "dtype", None)
    calibrate = getattr(args, "int8_calibration", False)
    if args.format not in ("onnx", "safetensors"):
        raise ConfigError(f"unknown export format {args.format!r}; use onnx or safetensors")
    if args.format == "onnx" and dtype not in (None, "float32"):
        raise ConfigError("--dtype applies to --format safetensors; ONNX graphs are exported in float32")
    # the calibration faces: --data's training split (no labels needed)
    calibration = load_split(args, None, split="train", align=False)[0] if calibrate else None
    if args.format == "safetensors":
        out = export_weights(
            args.checkpoint,
            args.out,
            dtype or "float32",
            int8_calibration=calibration,
            calibration_faces=args.calibration_faces,
            seed=args.seed,
        )
        print(
            f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {dtype or 'float32'} weights"
            f"{', int8 calibration of ' + str(args.calibration_faces) + ' faces' if calibrate else ''}); "
            f"load it with fermetric.load({str(out)!r}) or --checkpoint {out}"
        )
        return 0
    if calibrate:
        out = export_onnx_int8(args.checkpoint, args.out, calibration, args.calibration_faces, args.seed)
    else:
        out = export_onnx(args.checkpoint, args.out)
    meta = read_onnx_meta(out)
    shape = meta["input"]["shape"]
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB{', int8 graph' if calibrate else ''}): input {INPUT_NAME} "
        f"float32 [N, {shape[1]}, {shape[2]}, {shape[3]}] normalised with {meta['preprocessing']}; outputs logits "
        f"[N, {len(meta['classes'])}] ({', '.join(meta['classes'])}) and embedding"
        + (f"; run it with --backend openvino-int8 --checkpoint {out}" if calibrate else "")
    )
    return 0
