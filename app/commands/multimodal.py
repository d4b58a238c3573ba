"""`selfsup index`, `selfsup search`, and `selfsup eval zeroshot|retrieval` (CLIP models)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli import add_events_arg
from app.commands.common import add_device_args

DEFAULT_INDEX = "photo-index"


def _model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--model",
        required=required,
        help="CLIP run folder / checkpoint, or an open_clip model name (selfsup-tiny, ViT-B-32, ...)",
    )
    p.add_argument(
        "--pretrained",
        default="",
        help="open_clip tag (downloaded when online), weights file, or local-dir:FOLDER",
    )
    add_device_args(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="embed every photo under PATH... into a searchable CLIP index")
    p.add_argument(
        "paths", nargs="*", help="folders or files (default: the folders the index already covers)"
    )
    p.add_argument(
        "--index", default=DEFAULT_INDEX, help=f"index folder (default: {DEFAULT_INDEX})"
    )
    _model_args(p)
    p.add_argument(
        "--videos",
        action="store_true",
        help="also index video files by their key frames (remembered: later updates keep them; --rebuild without it drops them)",
    )
    p.add_argument(
        "--max-video-frames",
        type=int,
        help="key frames per video at most (default: the index's recorded value, else 16)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2, help="decoding processes")
    p.add_argument("--rebuild", action="store_true", help="start over (e.g. with another model)")
    p.add_argument("--json", action="store_true", help="print the update summary as JSON")
    add_events_arg(p)
    p.set_defaults(func=run_index)

    s = sub.add_parser(
        "search", help='search an index by text ("dog on a beach") or by --image photo.jpg'
    )
    s.add_argument("query", nargs="?", help="text query")
    s.add_argument("--image", help="query image instead of text")
    s.add_argument(
        "--index", default=DEFAULT_INDEX, help=f"index folder (default: {DEFAULT_INDEX})"
    )
    s.add_argument("--model", help="the model that built the index (default: the one it records)")
    s.add_argument("--pretrained", default="")
    s.add_argument("--device", default="auto")
    s.add_argument("-k", "--top-k", type=int, default=10, dest="top_k")
    s.add_argument(
        "--threshold", type=float, help="drop results scoring below this cosine similarity"
    )
    s.add_argument("--json", action="store_true", help="JSON instead of a table")
    s.add_argument("--sheet", help="write a contact-sheet PNG of the results here")
    s.add_argument(
        "--faiss",
        choices=["auto", "on", "off"],
        default="auto",
        help="approximate search with faiss (auto: beyond 5M vectors when installed)",
    )
    s.set_defaults(func=run_search)


def add_eval_commands(ev: argparse._SubParsersAction) -> None:
    z = ev.add_parser(
        "zeroshot", help="CLIP zero-shot classification of class folders (prompt ensemble)"
    )
    _model_args(z, required=True)
    z.add_argument("--data", required=True, help="labelled image folder (one sub-folder per class)")
    z.add_argument(
        "--templates", help="text file, one prompt template per line with {} for the class name"
    )
    z.add_argument("--num-workers", type=int, default=2)
    z.set_defaults(func=run_zeroshot)
    r = ev.add_parser(
        "retrieval", help="CLIP image<->text recall@1/5/10 on a held-out caption file"
    )
    _model_args(r, required=True)
    r.add_argument("--captions", required=True, help="TSV/CSV caption file or captioned folder")
    r.add_argument("--image-key", default="filepath")
    r.add_argument("--caption-key", default="title")
    r.add_argument("--separator", default="")
    r.add_argument("--num-workers", type=int, default=2)
    r.set_defaults(func=run_retrieval)


def _device(name: str):
    from engine.trainer import resolve_device

    return resolve_device(name)


def _embedder(args, default: str | None = None):
    from multimodal.embedder import load_clip

    emb = load_clip(args.model or default, args.pretrained, _device(args.device))
    emb.features.set_precision(getattr(args, "precision", "auto"))
    return emb


def run_index(args) -> int:
    from engine.errors import UserError
    from multimodal.index import Index, Indexer, read_pointer

    folder = Path(args.index)
    if args.model is None:
        if args.rebuild or not (folder / "index.json").exists():
            raise UserError(
                "pass --model (a CLIP run folder or an open_clip model name) to create an index"
            )
        recorded = read_pointer(folder)["model"]
        args.model, args.pretrained = (
            recorded["source"],
            args.pretrained or recorded.get("pretrained", ""),
        )
    emb = _embedder(args)
    from engine import distributed as D

    D.init_from_env(emb.device.type)  # under torchrun: each rank embeds a shard, rank 0 merges
    job = args.job if D.is_main() else None
    if job is not None:
        job.progress(0, 0, "listing files")
    indexer = Indexer(
        folder,
        emb,
        args.batch_size,
        args.num_workers,
        args.videos,
        args.max_video_frames,
        progress=sys.stderr.isatty(),
        on_progress=(lambda d, t: job.progress(d, t, "embedding")) if job is not None else None,
    )
    stats = indexer.update(args.paths, rebuild=args.rebuild)
    if not D.is_main():
        return 0
    args.result = stats.as_dict()
    if args.json:
        print(json.dumps(stats.as_dict(), indent=1))
    else:
        print(
            f"{folder}: {stats.rows} embeddings; {stats.added} new, {stats.changed} changed, {stats.removed} removed, {stats.unchanged} unchanged, {stats.resumed} resumed ({stats.seconds:.1f}s)"
        )
        for path, why in stats.failed[:20]:
            print(f"  unreadable: {path}: {why}")
        if len(stats.failed) > 20:
            print(f"  ... and {len(stats.failed) - 20} more unreadable files (see --json)")
    errors = Index(folder).errors
    if errors and not stats.failed:
        print(f"  {len(errors)} unreadable files listed in the index (unchanged since last time)")
    return 0


def run_search(args) -> int:
    from multimodal.index import Index
    from multimodal.search import (
        Searcher,
        check_model,
        contact_sheet,
        format_json,
        format_table,
        query_vector,
    )

    idx = Index(args.index)
    recorded = idx.model
    if args.model is None:
        args.model, args.pretrained = recorded["source"], recorded.get("pretrained", "")
    emb = _embedder(args)
    check_model(idx, emb)
    q = query_vector(emb, text=args.query, image=args.image)
    use_faiss = {"auto": None, "on": True, "off": False}[args.faiss]
    hits = Searcher(idx, device=emb.device, use_faiss=use_faiss).search(
        q, args.top_k, args.threshold
    )
    query = {"text": args.query} if args.query is not None else {"image": str(args.image)}
    print(format_json(hits, query) if args.json else format_table(hits))
    if args.sheet:
        out = contact_sheet(hits, args.sheet, title=args.query or f"like {Path(args.image).name}")
        if not args.json:
            print(f"wrote {out}")
    return 0


def _report(name: str, result: dict, model: str, columns: list[str]) -> None:
    from engine.evaluation.common import format_table, write_result

    print(format_table([result], columns))
    out = write_result(model, name, {**result, "model": model})
    if out:
        print(f"wrote {out}")


def run_zeroshot(args) -> int:
    from multimodal.zeroshot import TEMPLATES, read_templates, zeroshot_eval

    templates = read_templates(args.templates) if args.templates else TEMPLATES
    r = zeroshot_eval(_embedder(args), args.data, templates, num_workers=args.num_workers)
    _report(
        "zeroshot", r, args.model, ["top1", "top5", "chance_top1", "images", "classes", "templates"]
    )
    return 0


def run_retrieval(args) -> int:
    from multimodal.retrieval import retrieval_eval

    r = retrieval_eval(
        _embedder(args),
        args.captions,
        args.image_key,
        args.caption_key,
        args.separator,
        num_workers=args.num_workers,
    )
    flat = {**r, **{f"chance_{k}": v for k, v in r["chance"].items()}}
    _report(
        "retrieval",
        flat,
        args.model,
        [
            "t2i_R@1",
            "t2i_R@5",
            "t2i_R@10",
            "i2t_R@1",
            "i2t_R@5",
            "i2t_R@10",
            "chance_t2i_R@5",
            "images",
            "captions",
        ],
    )
    return 0
