"""Render every page of the desktop app on the sample data into docs/screenshots/ (offscreen).

    python scripts/screenshots.py [--out docs/screenshots] [--work runs/screenshots]

It drives the real window the way a user would: opens the sample images on the Data page,
trains a tiny CLIP and an image model from the Train page (child processes, as in the app),
inspects the image model on the Features page, propagates the sample video's first-frame mask
on the Video page, corrects a later frame (a keyframe) and propagates again, and searches the
sample with the CLIP model on the Search page. Only the models the chosen --pages need are
trained; finished runs in --work are reused, so a second call only re-renders. PNGs are
colour-quantised to stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SIZE = (1360, 860)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    ap.add_argument(
        "--work",
        default=str(REPO / "runs" / "screenshots"),
        help="runs, index and app settings of the script",
    )
    ap.add_argument("--steps", type=int, default=60, help="training steps of the image model")
    ap.add_argument("--clip-steps", type=int, default=300, help="training steps of the tiny CLIP")
    ap.add_argument("--pages", default="data,train,features,video,search")
    ap.add_argument(
        "--image-model", help="use this run/checkpoint on the Features page instead of training one"
    )
    ap.add_argument(
        "--clip-model", help="use this CLIP run on the Search page instead of training one"
    )
    ap.add_argument(
        "--query", default="a checker on a noisy background", help="text query of the Search shot"
    )
    args = ap.parse_args()
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SELFSUP_STUDIO_HOME"] = str(work / "studio-home")  # clean recent lists

    from app.gui.app import make_app, make_window
    from app.gui.errors import dialogs
    from engine.run import RunDir

    def status_of(run):
        return RunDir(run).status()

    from engine.sample import ensure_sample

    app = make_app()
    images = ensure_sample()
    win = make_window()
    win.resize(*SIZE)
    win.show()
    pages = args.pages.split(",")
    shots_taken: list[str] = []

    def spin(seconds: float, until=None, what: str = "") -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            if until is not None and until():
                return
            time.sleep(0.02)
        if until is not None:
            raise SystemExit(f"timed out waiting for {what}")

    def shot(name: str) -> None:
        spin(0.4)
        path = out / f"{name}.png"
        win.grab().save(str(path))
        _shrink(path)
        shots_taken.append(name)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
        if dialogs.shown:
            print(f"  note: dialogs shown so far: {dialogs.shown}")

    runs = work / "runs"
    train = win.train_page
    train.runs_root.setText(str(runs))
    train.refresh_runs()

    def train_run(
        name: str,
        method: str,
        data: Path,
        values: dict,
        optim: dict | None = None,
        backbone: str | None = None,
        shot_at: float | None = None,
    ) -> Path:
        run = runs / name
        if run.exists() and status_of(run) == "done":
            return run
        if run.exists():
            import shutil

            shutil.rmtree(run)
        win.show_page("train")
        train.select_method(method)
        train.data_picker.set_path(str(data), emit=False)
        if backbone:
            train.backbone_combo.setCurrentText(backbone)
        train.train_form.set_values(values)
        train.optim_form.set_values(optim or {})
        train.run_name.setText(name)
        train.start()
        if shot_at is not None:
            spin(
                3600,
                lambda: train.curves.step >= shot_at * values["max_steps"] or not train.is_active(),
                f"{name} to reach {shot_at:.0%}",
            )
            if "train" in pages:
                shot("train")
        spin(3600, lambda: not train.is_active(), f"{name} to finish")
        if status_of(run) != "done":
            raise SystemExit(f"{name}: training did not finish ({status_of(run)}); see the Log box")
        return run

    caps = images.parent / "captions" / "train.tsv"
    if not caps.exists():
        from multimodal.sample import ensure_sample_captions

        ensure_sample_captions()
    clip_run = (
        Path(args.clip_model or "")
        if args.clip_model or "search" not in pages
        else train_run(
            "clip-sample",
            "clip",
            caps,
            {
                "image_size": 32,
                "batch_size": 120,
                "max_steps": args.clip_steps,
                "num_workers": 2,
                "log_every": 5,
                "checkpoint_every": 1000,
            },
            {"lr": 2e-3, "warmup_epochs": 3.0},
        )
    )
    image_run = (
        Path(args.image_model or "")
        if args.image_model or not {"train", "features"} & set(pages)
        else train_run(
            "simclr-sample",
            "simclr",
            images / "train",
            {
                "image_size": 32,
                "batch_size": 32,
                "max_steps": args.steps,
                "num_workers": 2,
                "log_every": 2,
                "checkpoint_every": 1000,
            },
            backbone="resnet18",
            shot_at=0.6,
        )
    )
    if "train" in pages and not shots_taken.count("train"):
        train.refresh_runs(select=image_run)
        train.watch(image_run)
        shot("train")

    if "data" in pages:
        win.show_page("data")
        data = win.data_page
        data.open_path(images / "train", "images")
        spin(120, lambda: data.listing is not None and not data.checking, "the data check")
        spin(
            60, lambda: len(data.grid.thumbs.pix) >= min(30, len(data.listing.items)), "thumbnails"
        )
        shot("data")

    if "features" in pages:
        win.show_page("features")
        feats = win.features_page
        feats.set_source(image_run)
        feats.images_picker.set_path(str(images / "val"), emit=False)
        feats.compute()
        spin(
            600,
            lambda: feats.fs is not None and not feats.computing and feats._xy is not None,
            "features",
        )
        for i, name in enumerate(["features-attention", "features-pca", "features-neighbours"]):
            feats.tabs.setCurrentIndex(i)
            if name == "features-neighbours":
                feats.nn_strip.setCurrentRow(4)
            shot(name)
        feats.tabs.setCurrentIndex(3)
        feats.emb_method.setCurrentIndex(feats.emb_method.findData("tsne"))
        spin(
            600,
            lambda: (
                feats.emb_note.text().startswith(str(len(feats.fs.files)))
                and "t-SNE" in feats.emb_note.text()
            ),
            "t-SNE",
        )
        feats.show_point(int(len(feats.fs.files) * 0.4))
        shot("features-embedding")

    if "video" in pages:
        win.show_page("video")
        video = win.video_page
        import shutil

        shutil.rmtree(work / "studio-home" / "data" / "propagation", ignore_errors=True)
        video.open(REPO / "assets" / "sample" / "video")
        spin(120, lambda: video.video is not None and not video.loading, "the video")
        video.use_ground_truth()
        video.set_tool("point")
        h, w = video.video.size
        video.canvas.current = 1
        video.canvas.add_point(w * 0.2, h * 0.25)
        video.set_tool("brush")
        shot("video-annotate")
        video.propagate()
        spin(900, lambda: not video.is_active(), "propagation")
        video.timeline.setValue(int(video.video.num_frames * 0.7))
        shot("video")
        # a correction: frame 20 gets object 2 widened by a stroke, then only 20.. is recomputed
        n = video.video.num_frames
        video.timeline.setValue(20)
        canvas = video.canvas
        canvas.current, canvas.brush = 2, max(2, w // 40)
        ys, xs = np.nonzero(canvas.ids == 2)
        if len(xs):
            canvas._push_undo()
            canvas._last = None
            y = int(ys.mean())
            canvas.paint_at(int(xs.max()), y)
            canvas.paint_at(min(w - 1, int(xs.max()) + w // 12), y)
            canvas._last = None
            canvas.edited.emit()
        video.propagate()
        spin(900, lambda: not video.is_active(), "the correction")
        video.timeline.setValue(min(n - 1, 24))
        shot("video-keyframes")

    if "search" in pages:
        win.show_page("search")
        search = win.search_page
        search.folder_picker.set_path(str(images / "val"))
        search.index_picker.set_path(str(work / "index"), emit=False)
        search.model_combo.setCurrentText(str(clip_run))
        search.build_index()
        spin(900, lambda: not search.is_active(), "indexing")
        search.query.setText(args.query)
        search.search_text()
        spin(120, lambda: not search.searching, "the search")
        spin(
            30,
            lambda: len(search.grid.thumbs.pix) >= min(10, len(search.hits)),
            "result thumbnails",
        )
        shot("search")

    for page in win.pages.values():
        page.shutdown()
    return 0


def _shrink(path: Path) -> None:
    """256-colour PNG: a fraction of the size, no visible loss on a UI screenshot."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


if __name__ == "__main__":
    sys.exit(main())
