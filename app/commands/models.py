"""`selfsup models`: every pretrained model name the tool knows, with what it is and whether its
weights are already on this machine."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the published self-supervised models you can use by name (dino:vits16, ...)",
        description="Names accepted wherever a model is taken (--checkpoint, --model, --init-from). "
        "Add :FILE to use a local weights file; without it the weights download once when online.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


FREE_FORM = [
    ("timm:<name>[:FILE]", "any timm ViT or CNN (e.g. timm:vit_small_patch16_224.dino)"),
    ("torchvision:<resnet18|resnet50>[:FILE]", "torchvision's ImageNet ResNets"),
    (
        "open_clip:<model>/<tag>",
        "an open_clip image tower (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k)",
    ),
    ("solo:resnet50:FILE", "a solo-learn ResNet checkpoint (backbone. prefix)"),
    ("lightly:resnet50:FILE", "a lightly ResNet backbone (nn.Sequential of the ResNet's children)"),
    ("vissl:resnet50:FILE", "a VISSL ResNet checkpoint (trunk._feature_blocks)"),
]


def run(args) -> int:
    from engine.pretrained import describe

    rows = describe()
    args.result = {"models": rows}
    if args.json:
        print(json.dumps({"models": rows, "free_form": dict(FREE_FORM)}, indent=1))
        return 0
    print(f"{'name':<20}{'arch':<16}{'params':>8}  {'patch':>5}  {'cached':<7}{'licence':<14}about")
    for r in rows:
        patch = str(r["patch"] or "-")
        cached = "yes" if r["cached"] else "no"
        print(
            f"{r['name']:<20}{r['arch']:<16}{r['params_m']:>7.1f}M  {patch:>5}  {cached:<7}"
            f"{r['licence']:<14}{r['about']}"
        )
    print("\nalso, by pattern:")
    for name, about in FREE_FORM:
        print(f"  {name:<40}{about}")
    print("\nAppend :FILE to any name to load a local file instead of downloading.")
    return 0
