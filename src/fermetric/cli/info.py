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
    default = info["default_model"]
    if default.get("shipped"):
        default_text = (
            f"shipped ({default.get('recipe')} on {default.get('dataset')})"
            if "error" not in default
            else f"shipped but unreadable: {default['error']}"
        )
    else:
        default_text = "not shipped"
    lines = [f"fermetric {info['fermetric']} (python {info['python']}, {info['platform']})"]
    lines += [f"  {name:<24} {version or 'not installed'}" for name, version in info["versions"].items()]
    lines += [
        f"device:        {device_text}",
        f"backbones:     {listing(info['backbones'])} (and timm:<any timm architecture>)",
        f"recipes:       {listing(info['recipes'])}",
        f"datasets:      {listing(info['datasets'])}",
        f"losses:        {listing(info['losses'])} (and pml:<any pytorch-metric-learning loss>)",
        f"default model: {default_text}",
    ]
    return "\n".join(lines)


def run(args) -> int:
    info = collect()
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        print(format_info(info))
    return 0
