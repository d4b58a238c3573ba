"""`selfsup propagate` (a first-frame mask through a video) and `selfsup eval davis` (J&F)."""

from __future__ import annotations

import argparse
import dataclasses

from engine.config import add_dataclass_args, collect_dataclass_args


def _features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="lab",
        help="features: 'lab' (raw Lab pixels, default), a run dir, checkpoint .pt, export .safetensors or torchvision:resnet18[:FILE]",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--impl",
        default="local",
        choices=["local", "dense"],
        help="local window (fast) or the dense reference",
    )
    from video.propagation import PropagationConfig

    add_dataclass_args(p, PropagationConfig)


def _setup(args):
    from engine.trainer import resolve_device
    from video.features import load_dense_features
    from video.propagation import PropagationConfig

    device = resolve_device(args.device)
    features = load_dense_features(args.checkpoint, device)
    cfg = dataclasses.replace(
        PropagationConfig(), **collect_dataclass_args(args, PropagationConfig)
    )
    return features, cfg, device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "propagate", help="carry a first-frame mask (palette PNG) or keypoints through a video"
    )
    p.add_argument(
        "--video", required=True, help="video file (mp4, mov, mkv, webm, avi) or folder of frames"
    )
    p.add_argument("--mask", help="first-frame mask: palette PNG, object ids 1..N, 0 = background")
    p.add_argument(
        "--points",
        nargs="+",
        metavar="X,Y",
        help="first-frame keypoints in pixels, written to <name>_keypoints.csv",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: <name>/<frame>.png masks and <name>_overlay.mp4",
    )
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "decord", "pyav", "folder"],
        help="video decoder",
    )
    _features_args(p)
    p.set_defaults(func=run_propagate)


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


def _parse_points(values: list[str]) -> list[tuple[float, float]]:
    from engine.errors import UserError

    out = []
    for v in values:
        try:
            x, y = (float(t) for t in v.split(","))
        except ValueError:
            raise UserError(f"--points: '{v}' is not X,Y") from None
        out.append((x, y))
    return out


def run_propagate(args) -> int:
    from tqdm import tqdm

    from engine.errors import UserError
    from video.pipeline import propagate_points, propagate_video

    if not args.mask and not args.points:
        raise UserError("give a first-frame --mask PNG and/or --points X,Y ...")
    points = _parse_points(args.points) if args.points else None
    features, cfg, device = _setup(args)
    bars: list = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="frame", dynamic_ncols=True, desc="propagating"))
        bars[0].update(done - bars[0].n)
        rate = bars[0].format_dict.get("rate")
        if rate:
            bars[0].set_postfix(fps=f"{rate:.2f}")

    def close_bars() -> None:
        while bars:
            bars.pop().close()

    try:
        if points:
            csv = propagate_points(
                args.video,
                points,
                args.out,
                features,
                cfg,
                args.impl,
                device,
                progress,
                args.backend,
            )
            close_bars()
            print(f"{len(points)} keypoint(s) through the video: {csv}")
        if args.mask:
            res = propagate_video(
                args.video,
                args.mask,
                args.out,
                features,
                cfg,
                args.impl,
                device,
                not args.no_overlay,
                progress,
                args.backend,
            )
            close_bars()
            print(
                f"{res.frames} frames, {len(res.objects)} object(s), {res.fps:.2f} frames/s with {features!r}"
            )
            print(
                f"masks: {res.out_dir / res.masks[0].parent.name}/"
                + (f"\noverlay: {res.overlay}" if res.overlay else "")
            )
    finally:
        close_bars()
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

    from engine.build import build_method, load_method
    from engine.evaluation.common import format_table, write_result
    from engine.trainer import resolve_device
    from video.data import ClipDataset, clip_options
    from video.evaluation import evaluate_clip_features

    device = resolve_device(args.device)
    method, cfg = load_method(args.checkpoint, device)
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
