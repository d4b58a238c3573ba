"""`selfsup eval {knn,linear,finetune}` (+ davis, zeroshot, retrieval from video/multimodal)."""

from __future__ import annotations

import argparse
import importlib

from app.cli import add_events_arg
from app.commands.common import MODEL_HELP, add_device_args


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help=MODEL_HELP,
    )
    p.add_argument(
        "--train", required=True, help="labelled image folder (one sub-folder per class)"
    )
    p.add_argument(
        "--val", help="labelled validation folder (default: a 20%% stratified hold-out of --train)"
    )
    p.add_argument(
        "--image-size", type=int, help="resize images to this (default: the model's training size)"
    )
    add_device_args(p)
    p.add_argument("--num-workers", type=int, default=2)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="measure learned features (kNN, linear probe, few-label fine-tuning, ...)"
    )
    ev = p.add_subparsers(dest="eval_command", metavar="PROTOCOL", required=True)
    k = ev.add_parser("knn", help="weighted kNN on frozen features (k=200, T=0.07)")
    _common(k)
    k.add_argument("--k", type=int, default=200)
    k.add_argument("--temperature", type=float, default=0.07)
    k.add_argument(
        "--baseline",
        action="store_true",
        help="also score the same architecture with random weights (seeded) on the same data: "
        "did training learn anything beyond what an untrained network gives?",
    )
    k.add_argument("--seed", type=int, default=0, help="seed of the --baseline random weights")
    add_events_arg(k)
    k.set_defaults(func=run_knn)
    li = ev.add_parser("linear", help="linear probe on frozen cached features")
    _common(li)
    li.add_argument("--epochs", type=int, default=100)
    li.add_argument("--lr", type=float, default=0.1)
    li.set_defaults(func=run_linear)
    f = ev.add_parser("finetune", help="fine-tune backbone + head with 1%% / 10%% of the labels")
    _common(f)
    f.add_argument("--fractions", default="0.01,0.1", help="comma-separated label fractions")
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--lr", type=float, default=0.01, help="backbone lr (head: 10x)")
    f.set_defaults(func=run_finetune)
    for name in ("video", "multimodal", "slots"):  # other modules add their protocols here
        try:
            module = importlib.import_module(f"app.commands.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(module, "add_eval_commands"):
            module.add_eval_commands(ev)


def _setup(args):
    from engine.evaluation.common import labelled_splits
    from engine.features import load_features
    from engine.trainer import resolve_device

    extractor = load_features(
        args.checkpoint, "global", resolve_device(args.device), args.precision
    )
    size = args.image_size or extractor.image_size
    splits = labelled_splits(args.train, args.val, size)
    return extractor, splits, args.checkpoint


def _report(name: str, rows: list[dict], columns: list[str], source: str, result: dict) -> None:
    from engine.evaluation.common import format_table, write_result

    print(format_table(rows, columns))
    out = write_result(source, name, result)
    if out:
        print(f"wrote {out}")


def _knn_scores(extractor, s, args) -> dict:
    from engine.evaluation.common import cached_features
    from engine.evaluation.knn import knn_accuracy

    tx, ty = cached_features(extractor, s.train, num_workers=args.num_workers)
    vx, vy = cached_features(extractor, s.val, num_workers=args.num_workers)
    r = knn_accuracy(tx, ty, vx, vy, args.k, args.temperature)
    r.update(train_images=len(ty), val_images=len(vy), classes=s.num_classes)
    return r


def run_knn(args) -> int:
    job = getattr(args, "job", None)
    stages = 2 if args.baseline else 1
    if job is not None:
        job.progress(0, stages, "trained model")
    extractor, s, source = _setup(args)
    r = _knn_scores(extractor, s, args)
    r.update(checkpoint=args.checkpoint)
    columns = ["top1", "top5", "k", "train_images", "val_images", "classes"]
    rows = [r]
    if args.baseline:
        if job is not None:
            job.progress(1, stages, "random init")
        from engine.features import random_init_features

        untrained = random_init_features(
            args.checkpoint, "global", extractor.device, args.seed, args.precision
        )
        base = _knn_scores(untrained, s, args)
        base.update(seed=args.seed)
        r["baseline"] = base
        r["gain"] = r["top1"] - base["top1"]
        rows = [{"model": "trained", **r}, {"model": "random init", **base}]
        columns = ["model", *columns]
    if job is not None:
        job.progress(stages, stages, "done")
    _report("knn", rows, columns, source, r)
    if args.baseline:
        print(_baseline_verdict(args.checkpoint, r))
    args.result = r
    return 0


def _baseline_verdict(checkpoint: str, r: dict) -> str:
    """The verdict line and, when training did not beat random init, what to change."""
    from engine.evaluation.verdict import result_verdict
    from engine.run import RunDir

    v = result_verdict(r, RunDir.of(checkpoint))
    return f"verdict: {v.text}. {v.advice}"


def run_linear(args) -> int:
    from engine.evaluation.common import cached_features
    from engine.evaluation.linear import linear_probe_accuracy

    extractor, s, source = _setup(args)
    tx, ty = cached_features(extractor, s.train, num_workers=args.num_workers)
    vx, vy = cached_features(extractor, s.val, num_workers=args.num_workers)
    r = linear_probe_accuracy(tx, ty, vx, vy, s.num_classes, args.epochs, args.lr)
    r.update(train_images=len(ty), val_images=len(vy), checkpoint=args.checkpoint)
    _report("linear", [r], ["top1", "epochs", "train_images", "val_images"], source, r)
    return 0


def run_finetune(args) -> int:
    from engine.errors import UserError
    from engine.evaluation.finetune import finetune

    extractor, s, source = _setup(args)
    try:
        fractions = [float(x) for x in args.fractions.split(",")]
    except ValueError:
        raise UserError(
            f"--fractions must be comma-separated numbers, got '{args.fractions}'"
        ) from None
    rows = [
        finetune(
            extractor,
            s.train,
            s.val,
            s.num_classes,
            f,
            args.epochs,
            args.lr,
            num_workers=args.num_workers,
        )
        for f in fractions
    ]
    _report(
        "finetune",
        rows,
        ["fraction", "labelled_images", "top1", "epochs"],
        source,
        {"results": rows, "checkpoint": args.checkpoint},
    )
    return 0
