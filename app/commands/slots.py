"""`selfsup eval slots`: FG-ARI / mBO of a slot model's object masks (slot_attention, spot) on
the objects sample (images/ + masks/) or mBO on DAVIS frames (engine/evaluation/objects.py)."""

from __future__ import annotations

import argparse

from app.commands.common import add_device_args


def add_eval_commands(ev: argparse._SubParsersAction) -> None:
    p = ev.add_parser(
        "slots",
        help="FG-ARI / mBO of a slot model's masks against ground-truth object masks",
    )
    p.add_argument("--run", required=True, help="run dir or checkpoint of slot_attention / spot")
    p.add_argument(
        "--data",
        help="objects-sample layout (images/<split>/, masks/<split>/; default: the generated "
        "sample in assets/sample/objects) or a DAVIS folder (JPEGImages/, Annotations/: mBO only)",
    )
    p.add_argument("--split", default="val", help="split of the objects sample (default val)")
    p.add_argument(
        "--masks",
        default="decoder",
        choices=["decoder", "slots"],
        help="the decoder's masks (the papers' evaluation) or slot attention's",
    )
    p.add_argument(
        "--mask-size",
        type=int,
        default=0,
        help="resolution of the comparison (default: the sample's 64 px, 128 px on DAVIS)",
    )
    p.add_argument("--every", type=int, default=8, help="DAVIS: every N-th frame (default 8)")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also score the same model untrained (random weights, seeded 0; same encoder)",
    )
    add_device_args(p)
    p.set_defaults(func=run_slots)


def _untrained(run: str, extractor):
    """The run's method rebuilt from its config with fresh weights (seed 0) and the run's
    encoder copied in: slot attention and decoder untrained, the features they see the same."""
    import torch

    from engine.build import build_method, config_of
    from engine.methods.slots import SlotMasks

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        method = build_method(config_of(run))
    method.backbone.load_state_dict(extractor.method.backbone.state_dict())
    method.to(extractor.device)
    return SlotMasks(method, source="untrained", which=extractor.which)


def run_slots(args) -> int:
    from engine.evaluation.common import format_table, write_result
    from engine.evaluation.objects import evaluate_slots
    from engine.features import load_features
    from engine.objects_sample import ensure_objects_sample
    from engine.trainer import resolve_device

    data = args.data or str(ensure_objects_sample())
    extractor = load_features(args.run, "slots", resolve_device(args.device), args.precision)
    extractor.which = args.masks
    r = evaluate_slots(extractor, data, args.split, args.mask_size, args.every)
    r.update(checkpoint=args.run, masks=args.masks)
    columns = ["fg_ari", "mbo", "images", "slots", "mask_size"]
    if r["kind"] == "davis":
        columns.remove("fg_ari")
    rows = [r]
    if args.baseline:
        base = evaluate_slots(
            _untrained(args.run, extractor), data, args.split, args.mask_size, args.every
        )
        r["baseline"] = base
        rows = [{"model": "trained", **r}, {"model": "untrained", **base}]
        columns = ["model", *columns]
    print(format_table(rows, columns))
    # one file per data kind and mask kind: slots_objects.json (decoder masks, the papers'
    # protocol), slots_objects_slots.json (slot attention's), slots_davis[...].json
    suffix = "" if args.masks == "decoder" else f"_{args.masks}"
    out = write_result(args.run, f"slots_{r['kind']}{suffix}", r)
    if out:
        print(f"wrote {out}")
    args.result = r
    return 0
