"""Flags several commands share, spelled once."""

from __future__ import annotations

import argparse

MODEL_HELP = (
    "a run dir, checkpoint .pt, export .safetensors, or a published model by name: "
    "dino:vits16, dinov2:vits14, timm:NAME, ... (`selfsup models`; NAME:FILE for a local file)"
)


def add_device_args(p: argparse.ArgumentParser, default_device: str = "auto") -> None:
    p.add_argument("--device", default=default_device, help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--precision",
        default="auto",
        help="inference precision: auto (measured on CPUs), fp32, bf16, fp16",
    )
