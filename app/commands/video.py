"""`selfsup propagate` (a first-frame mask / keypoints through a video), `selfsup overlay` and
`selfsup eval davis` (J&F)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from app.cli import add_events_arg
from app.commands.common import MODEL_HELP, add_device_args
from engine.config import add_dataclass_args, collect_dataclass_args


def _features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="lab",
        help="features: 'lab' (raw Lab pixels, default) or " + MODEL_HELP,
    )
    add_device_args(p)
    p.add_argument(
        "--impl",
        default="local",
        choices=["local", "dense"],
        help="local window (fast) or the dense reference",
    )
    from video.config import PropagationConfig

    add_dataclass_args(p, PropagationConfig)


def _setup(args):
    from engine.trainer import resolve_device
    from video.features import load_dense_features
    from video.propagation import PropagationConfig

    device = resolve_device(args.device)
    features = load_dense_features(args.checkpoint, device, precision=args.precision)
    cfg = dataclasses.replace(
        PropagationConfig(), **collect_dataclass_args(args, PropagationConfig)
    )
    return features, cfg, device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "propagate",
        help="carry masks / keypoints from keyframes (any frames) through a video; resumable",
    )
    p.add_argument(
        "--video", help="video file (mp4, mov, mkv, webm, avi) or folder of frames (required)"
    )
    p.add_argument(
        "--keyframes",
        metavar="DIR_OR_JSON",
        help='annotated frames: a folder of palette PNGs named by frame (+ keypoints.csv), a JSON {"keyframes": [{"frame", "mask", "points"}]}, or a COCO RLE JSON',
    )
    p.add_argument(
        "--mode",
        default="forward",
        choices=["forward", "blend", "backward"],
        help="forward from each keyframe (default); blend: forward and backward between two keyframes mixed by distance; backward",
    )
    p.add_argument(
        "--from-frame",
        type=int,
        default=0,
        metavar="T",
        help="leave the keyframe intervals before the one holding frame T as they are",
    )
    p.add_argument(
        "--export",
        nargs="+",
        default=["png"],
        choices=["png", "coco", "ffv1", "csv", "overlay"],
        help="png: palette PNGs (always written); coco: <name>_coco.json (RLE); ffv1: <name>_masks_obj<K>.mkv (lossless); csv: keypoints; overlay: <name>_overlay.mp4",
    )
    p.add_argument(
        "--cache-info", action="store_true", help="list the feature cache (entries, sizes) and exit"
    )
    p.add_argument("--no-cache", action="store_true", help="keep features in memory only")
    p.add_argument("--cache-dir", help="feature cache folder (default: ~/.cache/selfsup/features)")
    p.add_argument(
        "--cache-mem-mb", type=float, default=256, help="features kept in RAM (default 256 MB)"
    )
    p.add_argument(
        "--cache-disk-gb",
        type=float,
        default=4.0,
        help="bound of the whole feature cache folder, least recently used out first (default 4 GB)",
    )
    p.add_argument("--mask", help="first-frame mask: palette PNG, object ids 1..N, 0 = background")
    p.add_argument(
        "--points",
        nargs="+",
        metavar="X,Y[,OBJ]",
        help="first-frame keypoints in pixels (and the object they belong to), written to <name>_keypoints.csv",
    )
    p.add_argument(
        "--out",
        help="output folder: <name>/<frame>.png masks, <name>_timeline.json, result.json, exports; running again resumes",
    )
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    p.add_argument(
        "--ground-truth",
        metavar="DIR",
        help="annotation PNGs, one per frame: score the propagated masks with J&F",
    )
    add_events_arg(p)
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "decord", "pyav", "folder"],
        help="video decoder",
    )
    _features_args(p)
    p.set_defaults(func=run_propagate)
    o = sub.add_parser("overlay", help="draw propagated masks and keypoints over a video")
    o.add_argument("--video", required=True, help="video file or folder of frames")
    o.add_argument("--masks", metavar="DIR", help="mask PNGs, one per frame (palette colours)")
    o.add_argument("--keypoints", metavar="CSV", help="a keypoints CSV of `selfsup propagate`")
    o.add_argument("--alpha", type=float, default=0.5, help="mask opacity (default: 0.5)")
    o.add_argument("--out", required=True, help="output video (.mp4)")
    add_events_arg(o)
    o.set_defaults(func=run_overlay)


def add_eval_commands(ev: argparse._SubParsersAction) -> None:
    p = ev.add_parser("davis", help="J&F of mask propagation on a DAVIS-layout folder")
    p.add_argument(
        "--root",
        required=True,
        help="folder with JPEGImages/480p/<seq>/ and Annotations/480p/<seq>/",
    )
    p.add_argument("--sequences", nargs="+", help="only these sequences (default: all)")
    p.add_argument("--out", help="also write the predicted masks here (<seq>/<frame>.png)")
    p.add_argument(
        "--max-frames",
        type=int,
        default=0,
        help="only the first N frames of each sequence (0 = all)",
    )
    _features_args(p)
    p.set_defaults(func=run_davis)
    c = ev.add_parser(
        "clips",
        help="clip retrieval / kNN / linear probe of a video SSL model (CPC, MaskFeat on clips)",
    )
    c.add_argument(
        "--checkpoint", required=True, help="run dir or checkpoint .pt of a video method"
    )
    c.add_argument(
        "--data", required=True, help="labelled clips: root/<class>/<video or frame folder>"
    )
    c.add_argument(
        "--baseline", action="store_true", help="also score the same model with random weights"
    )
    c.add_argument("--device", default="auto")
    c.set_defaults(func=run_clips)
    k = ev.add_parser(
        "correspondence",
        help="PCK of dense features: matches on warped image pairs and keypoint tracks in a video",
    )
    k.add_argument(
        "--images", help="held-out images to warp (default: the sample's validation images)"
    )
    k.add_argument("--video", help="video or frame folder with --tracks (default: the sample)")
    k.add_argument(
        "--tracks", help="ground-truth keypoints CSV of --video (frame,point,object,x,y)"
    )
    k.add_argument("--image-size", type=int, default=64, help="size of the warped pairs")
    k.add_argument("--seed", type=int, default=0, help="seed of the homographies")
    _features_args(k)
    k.set_defaults(func=run_correspondence)


def _parse_points(values: list[str]) -> list[tuple[float, ...]]:
    """X,Y or X,Y,OBJECT (the object id the point belongs to, for colours and exports)."""
    from engine.errors import UserError

    out = []
    for v in values:
        try:
            parts = [float(t) for t in v.split(",")]
            if len(parts) not in (2, 3):
                raise ValueError
        except ValueError:
            raise UserError(f"--points: '{v}' is not X,Y or X,Y,OBJECT") from None
        out.append((parts[0], parts[1], int(parts[2])) if len(parts) == 3 else tuple(parts))
    return out


def _print_cache_info(root) -> dict:
    from video.feature_cache import cache_info

    info = cache_info(root)
    print(
        f"feature cache {info['root']}: {len(info['entries'])} entries, {info['bytes'] / 1e6:.1f} MB"
    )
    for e in info["entries"]:
        size = "x".join(str(v) for v in e.get("size", []))
        print(
            f"  {e['key']}  {e['frames']} frames  {e['bytes'] / 1e6:.1f} MB  {size}  last used {e['last_used']}  {e.get('video', '?')}  {e.get('model', '?')}"
        )
    return info


def run_propagate(args) -> int:
    import signal

    from app.progress import Progress
    from engine.errors import UserError
    from video.pipeline import run_propagation

    if args.cache_info:
        args.result = _print_cache_info(args.cache_dir)
        return 0
    if not args.video or not args.out:
        raise UserError("give --video and --out")
    if not args.mask and not args.points and not args.keyframes:
        raise UserError("give --keyframes, a first-frame --mask PNG and/or --points X,Y ...")
    points = _parse_points(args.points) if args.points else None
    features, cfg, device = _setup(args)
    exports = list(args.export)
    if points and "csv" not in exports:
        exports.append("csv")
    overlay = not args.no_overlay and bool(args.mask or points)  # the classic first-frame job
    stop = {"asked": False}

    def ask_stop(signum, frame):
        stop["asked"] = True

    old = {s: signal.signal(s, ask_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Progress(args.job) as progress:
            res = run_propagation(
                args.video,
                args.out,
                features,
                cfg,
                mask=args.mask,
                points=points,
                ground_truth=args.ground_truth,
                impl=args.impl,
                device=device,
                write_overlay=overlay,
                progress=progress,
                backend=args.backend,
                keyframes=args.keyframes,
                mode=args.mode,
                from_frame=args.from_frame,
                exports=exports,
                cancel=lambda: stop["asked"],
                cache=not args.no_cache,
                cache_dir=args.cache_dir,
                cache_mem_mb=args.cache_mem_mb,
                cache_disk_gb=args.cache_disk_gb,
            )
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    args.result = res
    c = res["cache"]
    print(
        f"{res['frames']} frames, keyframes {res['keyframes'][:10]}{'...' if len(res['keyframes']) > 10 else ''}, mode {res['mode']}: "
        f"{res['propagated']} propagated, {res['written']} written in {res['seconds']:.1f} s with {features!r}"
    )
    print(
        f"features: {c['computed']} computed, {c['hits_memory'] + c['hits_disk']} from the cache ({c['disk_bytes'] / 1e6:.1f} MB on disk, bound {c['disk_bound'] / 1e9:.1f} GB)"
    )
    st = res["states"]
    print(
        f"timeline {res['timeline']}: {st['keyframe']} keyframes, {st['done']} done, {st['pending']} pending, {st['none']} unlabelled"
        + (f"; look first at frames {res['look_first'][:8]}" if res["look_first"] else "")
    )
    if res.get("keypoints"):
        print(f"keypoints: {res['keypoints']}")
    for fmt, path in res["exports"].items():
        print(f"{fmt}: {path}")
    if res.get("jf"):
        jf = res["jf"]
        print(f"J&F {jf['J&F']:.4f} (J {jf['J']:.4f}, F {jf['F']:.4f}) on {jf['frames']} frames")
    if res.get("jf_unannotated"):
        jf = res["jf_unannotated"]
        print(f"J&F on the {jf['frames']} frames that are not keyframes: {jf['J&F']:.4f}")
    if res["stopped"]:
        print("stopped: run the same command again to continue")
    return 0


def run_overlay(args) -> int:
    from app.progress import Progress
    from engine.errors import UserError
    from video.io import list_frame_files
    from video.pipeline import render_overlay

    if not args.masks and not args.keypoints:
        raise UserError("give --masks FOLDER and/or --keypoints CSV to draw")
    masks = None
    if args.masks:
        if not Path(args.masks).is_dir():
            raise UserError(f"{args.masks}: no such folder of mask PNGs")
        masks = [p for p in list_frame_files(args.masks) if p.suffix.lower() == ".png"]
    with Progress(args.job) as progress:
        out = render_overlay(args.video, args.out, masks, args.keypoints, args.alpha, progress)
    args.result = {"out": str(out)}
    print(f"wrote {out}")
    return 0


def run_davis(args) -> int:
    from tqdm import tqdm

    from engine.evaluation.common import format_table, write_result
    from video.pipeline import evaluate_davis

    features, cfg, device = _setup(args)
    bars: list = []

    def progress(seq: str, done: int, total: int) -> None:
        if done == 1:
            for b in bars:
                b.close()
            bars[:] = [tqdm(total=total, unit="frame", dynamic_ncols=True, desc=seq)]
        bars[0].update(1)

    try:
        res = evaluate_davis(
            args.root,
            features,
            cfg,
            args.sequences,
            args.impl,
            device,
            args.out,
            progress,
            args.max_frames,
        )
    finally:
        for b in bars:
            b.close()
    rows = res["sequences"] + [
        {
            "sequence": "overall",
            "J": res["J"],
            "F": res["F"],
            "J&F": res["J&F"],
            "objects": sum(r["objects"] for r in res["sequences"]),
            "frames": res["frames"],
            "fps": res["fps"],
        }
    ]
    print(format_table(rows, ["sequence", "J", "F", "J&F", "objects", "frames", "fps"]))
    res.update(checkpoint=args.checkpoint, config=dataclasses.asdict(cfg), impl=args.impl)
    out = write_result(args.checkpoint, "davis", res)
    if out:
        print(f"wrote {out}")
    return 0


def run_clips(args) -> int:
    import torch

    from engine.build import build_method, config_of
    from engine.evaluation.common import format_table, write_result
    from engine.features import load_features
    from engine.trainer import resolve_device
    from video.data import ClipDataset, clip_options
    from video.evaluation import evaluate_clip_features

    device = resolve_device(args.device)
    method = load_features(args.checkpoint, "clip", device)  # refuses models without clip features
    cfg = config_of(args.checkpoint)
    opts = clip_options(cfg)
    ds = ClipDataset(
        args.data,
        clip_len=opts["clip_len"],
        stride=opts["stride"],
        sampling="uniform",
        load_size=cfg.image_size,
        clips_per_video=1,
    )
    rows = [{"model": f"{cfg.method} (trained)", **evaluate_clip_features(method, ds)}]
    if args.baseline:
        torch.manual_seed(cfg.seed)
        rows.append(
            {
                "model": f"{cfg.method} (random init)",
                **evaluate_clip_features(build_method(cfg).to(device).eval(), ds),
            }
        )
    print(
        format_table(
            rows, ["model", "retrieval_top1", "knn_top1", "linear_top1", "chance", "clips"]
        )
    )
    out = write_result(args.checkpoint, "clips", {"rows": rows, "data": args.data})
    if out:
        print(f"wrote {out}")
    return 0


def run_correspondence(args) -> int:
    """The model and the raw-pixel (Lab) baseline, side by side on the same pairs and tracks."""
    from engine.evaluation.common import format_table, write_result
    from engine.sample import sample_images_dir, sample_root
    from video.correspondence import correspondence_pck, folder_images, keypoint_tracking_pck
    from video.features import LabFeatures
    from video.sample import SEQ, keypoints_path

    features, cfg, device = _setup(args)
    images = folder_images(args.images or sample_images_dir() / "val", args.image_size)
    video_root = sample_root() / "video"
    video = args.video or video_root / "JPEGImages" / "480p" / SEQ
    tracks = args.tracks or keypoints_path(video_root)
    models = [(args.checkpoint, features), ("lab (raw pixels)", LabFeatures())]
    if str(args.checkpoint).lower() != "lab":
        from engine.features import random_init_features

        untrained = random_init_features(args.checkpoint, "dense", device, args.seed)
        models.insert(1, ("same model, random init", untrained))
    else:
        models = models[:1]
    rows = []
    for name, feats in models:
        pairs = correspondence_pck(feats, images, seed=args.seed)
        track = keypoint_tracking_pck(feats, video, tracks, cfg, args.impl, device)
        rows.append(
            {"model": name}
            | {f"pairs {k}": v for k, v in pairs.items() if k.startswith(("pck", "median"))}
            | {f"tracks {k}": v for k, v in track.items() if k.startswith(("pck", "median"))}
        )
    print(f"{len(images)} warped pairs of {args.image_size} px; tracks: {tracks}")
    print(format_table(rows, list(rows[0])))
    out = write_result(args.checkpoint, "correspondence", {"rows": rows, "video": str(video)})
    if out:
        print(f"wrote {out}")
    return 0
