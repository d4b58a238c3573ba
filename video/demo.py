"""Demo step: propagate the sample video's first-frame mask and score it with J&F, with raw Lab
pixels, the demo's image SSL checkpoint, and a colorization model trained briefly on the sample."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.run import RunDir

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample" / "video"


def ensure_sample_video() -> Path:
    """The shipped sample (regenerated if a checkout lacks it)."""
    if not (SAMPLE / "JPEGImages" / "480p" / "shapes").is_dir():
        from video.sample import write_motion_clips, write_sample

        write_sample(SAMPLE)
        write_motion_clips(SAMPLE / "motion")
    return SAMPLE


def run_demo(
    workdir: str | Path,
    checkpoint: str | Path | None = None,
    colorization_steps: int = 40,
    quiet: bool = False,
) -> dict[str, Any]:
    import torch

    import video.methods  # noqa: F401  (registers colorization_video and "clips")
    from engine.build import apply_method_defaults, train
    from engine.evaluation.common import format_table
    from video.features import LabFeatures, load_dense_features
    from video.pipeline import evaluate_davis, propagate_video

    say = (lambda *a: None) if quiet else print
    work = Path(workdir) / "video"
    sample = ensure_sample_video()
    sources: list[tuple[str, Any]] = [("raw Lab pixels", LabFeatures(8))]
    if checkpoint is not None:
        sources.append((f"image SSL ({Path(checkpoint).name})", load_dense_features(checkpoint)))
    if colorization_steps > 0:
        run = work / "colorization"
        cfg = apply_method_defaults(
            {
                "data": str(sample),
                "image_size": 64,
                "batch_size": 8,
                "max_steps": colorization_steps,
                "num_workers": 0,
                "run_dir": str(run),
                "log_every": 10,
                "checkpoint_every": colorization_steps,
                "method_args": {"kmeans_frames": 64},
            },
            {},
            "colorization_video",
        )
        if RunDir(run).exists():
            import shutil

            shutil.rmtree(run)
        t = time.time()
        res = train(cfg)
        say(
            f"colorization_video: {res['step']} steps on the sample video in {time.time() - t:.0f}s, loss {res['losses'].get('loss', float('nan')):.3f}"
        )
        sources.append(("colorization (sample, brief)", load_dense_features(run)))
    rows = []
    threads = torch.get_num_threads()
    for name, feats in sources:
        r = evaluate_davis(sample, feats)
        rows.append(
            {"features": name, "J": r["J"], "F": r["F"], "J&F": r["J&F"], "frames/s": r["fps"]}
        )
    say(format_table(rows, ["features", "J", "F", "J&F", "frames/s"]))
    out = propagate_video(
        sample / "shapes.mp4",
        sample / "Annotations" / "480p" / "shapes" / "00000.png",
        work / "propagation",
        LabFeatures(8),
    )
    say(
        f"masks in {out.out_dir / 'shapes'}/, overlay video {out.overlay} (torch threads: {threads})"
    )
    return {"rows": rows, "overlay": str(out.overlay), "masks": str(out.out_dir / "shapes")}
