"""The figures part of `selfsup demo`: every figure once, on the sample images, in about a minute.

From the demo's SimCLR run (a ResNet): activation attention per stage, patch-feature PCA, feature
vs pixel nearest neighbours and the PCA / t-SNE embedding of the val split, written into that
run's figures/. Then a short MAE run (ViT) for the [CLS] attention and reconstruction figures."""

from __future__ import annotations

from pathlib import Path

import torch


def _spread(items: list, n: int) -> list:
    step = max(1, len(items) // n)
    return items[::step][:n]


def run_demo(out: str | Path, checkpoint: str | Path | None = None, mae_steps: int = 40) -> dict:
    from engine.build import load_method
    from engine.data import ImageFolderDataset, load_images
    from engine.features import load_feature_extractor
    from engine.run import RunDir
    from engine.sample import ensure_sample
    from engine.visualize import (
        attention_figure,
        conv_attention_figure,
        embedding_figure,
        neighbours_figure,
        pca_figure,
        save_png,
    )
    from engine.visualize.neighbours import embed_batched
    from engine.visualize.reconstructions import mae_figure

    out = Path(out)
    sample = ensure_sample()
    val = ImageFolderDataset(sample / "val", load_size=32)
    train = ImageFolderDataset(sample / "train", load_size=32)
    pick = _spread(list(range(len(val))), 6)
    queries = load_images([val.files[i] for i in pick], 32)
    names = [val.files[i].parent.name for i in pick]
    written = []
    if checkpoint is not None:
        ex = load_feature_extractor(checkpoint)
        figs = Path(checkpoint) / "figures"
        written.append(
            save_png(conv_attention_figure(ex, queries, names=names), figs / "convattn.png")
        )
        written.append(save_png(pca_figure(ex, queries, names=names), figs / "pca.png"))
        db_idx = _spread(list(range(len(train))), 240)
        db = load_images([train.files[i] for i in db_idx], 32)
        db_labels = torch.tensor([train.targets[i] for i in db_idx])
        q_labels = torch.tensor([val.targets[i] for i in pick])
        written.append(
            save_png(
                neighbours_figure(
                    ex, queries[:4], db, 4, q_labels[:4], db_labels, class_names=train.classes
                ),
                figs / "neighbours.png",
            )
        )
        all_val = load_images(val.files, 32)
        feats = embed_batched(ex, all_val)
        written.append(
            save_png(
                embedding_figure(
                    feats,
                    torch.tensor(val.targets),
                    val.classes,
                    f"sample val split embedded by {ex.source}",
                ),
                figs / "embedding.png",
            )
        )

    mae_dir = out / "mae"
    if mae_steps > 0:
        import engine.methods  # noqa: F401  (registers mae)
        from engine.build import apply_method_defaults
        from engine.build import train as train_run

        if not RunDir(mae_dir).has_checkpoint():
            cfg = apply_method_defaults(
                {
                    "data": str(sample / "train"),
                    "image_size": 32,
                    "batch_size": 64,
                    "max_steps": mae_steps,
                    "num_workers": 0,
                    "run_dir": str(mae_dir),
                    "log_every": 10,
                    "checkpoint_every": 10**9,
                    "method_args": {"decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4},
                },
                {"warmup_epochs": 0.5, "lr": 1e-3},
                "mae",
            )
            train_run(cfg)
        mae, _cfg = load_method(mae_dir)
        ex = load_feature_extractor(mae_dir)
        written.append(
            save_png(
                attention_figure(ex, queries[:4], names=names[:4]),
                mae_dir / "figures" / "attention.png",
            )
        )
        written.append(
            save_png(
                mae_figure(mae, queries[:4], names=names[:4]),
                mae_dir / "figures" / "reconstruction.png",
            )
        )
    for p in written:
        print(f"wrote {p}")
    return {"figures": [str(p) for p in written]}
