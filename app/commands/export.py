"""`selfsup export`: a backbone as safetensors + JSON metadata, loadable as a feature extractor."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.commands.common import MODEL_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained backbone as safetensors with metadata")
    p.add_argument(
        "--checkpoint",
        required=True,
        help=MODEL_HELP,
    )
    p.add_argument(
        "--out", help="output .safetensors (default: RUN_DIR/exports/backbone.safetensors)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from engine.features import export_backbone, load_feature_extractor
    from engine.run import RunDir

    extractor = load_feature_extractor(args.checkpoint)
    run = RunDir.of(args.checkpoint)
    default = (run.subdir("exports") if run else Path("exports")) / "backbone.safetensors"
    out = Path(args.out) if args.out else default
    export_backbone(extractor, out)
    print(
        f"exported {extractor.arch.get('name')} ({extractor.embed_dim}-d features, {extractor.image_size}px) to {out}"
    )
    return 0
