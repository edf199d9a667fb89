"""``fermetric info``: versions, device, and what this install can do."""

from __future__ import annotations

import json
import sys

from ..info import collect


def format_info(info: dict) -> str:
    def listing(value):
        return ", ".join(value) if isinstance(value, list) else str(value)

    device = info["device"]
    if device.get("type") == "cuda":
        device_text = f"CUDA {device.get('cuda_version')}: " + ", ".join(device["names"])
    else:
        device_text = f"CPU ({device.get('threads', '?')} threads)"
    shipped = info["shipped_models"]
    if isinstance(shipped, str):  # the catalogue itself could not be read
        shipped_lines = [f"  {shipped}"]
    else:
        shipped_lines = [f"  {model['name']:<10} {_shipped_text(model)}" for model in shipped] or ["  none"]
    lines = [f"fermetric {info['fermetric']} (python {info['python']}, {info['platform']})"]
    lines += [f"  {name:<24} {version or 'not installed'}" for name, version in info["versions"].items()]
    backends = info.get("backends", {})
    lines += [
        f"device:        {device_text}",
        f"backends:      {_backends_text(backends)}",
        f"backbones:     {listing(info['backbones'])} (and timm:<any timm architecture>)",
        f"recipes:       {listing(info['recipes'])}",
        f"datasets:      {listing(info['datasets'])}",
        f"losses:        {listing(info['losses'])} (and pml:<any pytorch-metric-learning loss>)",
        "shipped models (fermetric.load(NAME), --checkpoint NAME):",
        *shipped_lines,
    ]
    return "\n".join(lines)


def _backends_text(backends: dict) -> str:
    onnx = (
        f"onnx (onnxruntime {backends['onnxruntime']})"
        if backends.get("onnxruntime")
        else ("onnx: pip install 'onnx>=1.15,<2' 'onnxruntime>=1.17,<2' (fermetric dependencies missing here)")
    )
    if not backends.get("torchao"):
        int8 = "compiled-int8: pip install 'fermetric[int8]'"
    elif backends.get("cpu_int8"):
        int8 = f"compiled-int8 (torchao {backends['torchao']}; CPU {'/'.join(backends['cpu_int8'])})"
    else:
        int8 = f"compiled-int8 (torchao {backends['torchao']}; no AMX-INT8 or VNNI on this CPU: not measured there)"
    bf16 = "bf16" if backends.get("cpu_bf16") else "fp32: no native bf16 on this CPU"
    openvino = (
        f"openvino, openvino-int8 (OpenVINO {backends['openvino']})"
        if backends.get("openvino")
        else "openvino, openvino-int8: pip install 'fermetric[openvino]'"
    )
    return f"torch, compiled ({bf16}), {onnx}, {openvino}, {int8}"


def _shipped_text(model: dict) -> str:
    if "error" in model:
        return f"unreadable: {model['error']}"
    measured = ", ".join(
        f"{100 * m['accuracy']:.1f}% on {m['dataset']} {m['split']} (n={m['n']})" for m in model["measured"]
    )
    size = f"{model['size_kb'] / 1024:.1f} MB" if model["size_kb"] >= 1024 else f"{model['size_kb']} KB"
    classes = len(model["classes"])
    int8 = " (+ int8 graph)" if model.get("int8_graph") else ""
    return f"{model['backbone']}, {model['recipe']}, {classes} classes, {size}{int8}: {measured or 'not measured'}"


def run(args) -> int:
    info = collect()
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        print(format_info(info))
    return 0
