"""`selfsup visualize {attention,pca,convattn,neighbours,embedding,reconstruction}`: figures of
what a trained model sees, written as PNGs into the run's figures/ folder (or --out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.commands.common import MODEL_HELP, add_device_args

KINDS = {
    "attention": "ViT last-layer [CLS] attention per head, mean, and the 60%%-mass mask (DINO)",
    "pca": "PCA of patch features over the images: background removed, 3 components as RGB (DINOv2)",
    "convattn": "ResNet attention from activation energy per stage (Gidaris et al. / Zagoruyko)",
    "neighbours": "nearest neighbours of query images in feature space beside pixel space",
    "embedding": "PCA and t-SNE of a labelled folder's features, coloured by class",
    "reconstruction": "MAE reconstructions of masked images, or colorization predictions",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize", help="render figures of a trained model (attention, PCA, neighbours, ...)"
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, help_text in KINDS.items():
        k = kinds.add_parser(kind, help=help_text, description=help_text)
        k.add_argument(
            "--checkpoint",
            required=True,
            help=MODEL_HELP,
        )
        k.add_argument(
            "--images",
            nargs="+",
            required=True,
            help="image files and/or folders (searched recursively)",
        )
        k.add_argument("--out", help=f"output .png or folder (default: RUN_DIR/figures/{kind}.png)")
        k.add_argument(
            "--size",
            type=int,
            help="resize images to this many pixels (default: the model's training size)",
        )
        k.add_argument(
            "--max-images",
            type=int,
            default=1000 if kind == "embedding" else 8,
            help="use at most this many images, spread evenly over the sorted list",
        )
        add_device_args(k, default_device="cpu")
        k.set_defaults(func=run)
    kinds.choices["attention"].add_argument(
        "--mass",
        type=float,
        default=0.6,
        help="share of attention mass kept by the mask (DINO: 0.6)",
    )
    kinds.choices["pca"].add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="foreground = 1st component above this many std",
    )
    kinds.choices["pca"].add_argument(
        "--foreground",
        default="auto",
        choices=["auto", "positive", "negative", "all"],
        help="which side of the 1st component is foreground (auto: the side off the image border)",
    )
    kinds.choices["convattn"].add_argument(
        "--p", type=float, default=2.0, help="exponent p in sum_c |a_c|^p"
    )
    kinds.choices["neighbours"].add_argument(
        "--database",
        required=True,
        help="folder of images to search (class sub-folders give coloured borders)",
    )
    kinds.choices["neighbours"].add_argument(
        "--k", type=int, default=5, help="neighbours per query and space"
    )
    kinds.choices["neighbours"].add_argument(
        "--max-database", type=int, default=2000, help="search at most this many database images"
    )
    kinds.choices["embedding"].add_argument(
        "--methods", default="pca,tsne", help="comma list of pca, tsne"
    )
    kinds.choices["embedding"].add_argument(
        "--perplexity", type=float, default=30.0, help="t-SNE perplexity"
    )
    kinds.choices["reconstruction"].add_argument(
        "--mask-ratio", type=float, help="MAE masking ratio (default: the model's)"
    )
    kinds.choices["reconstruction"].add_argument(
        "--seed", type=int, default=0, help="seed of the random mask"
    )


def spread(items: list, n: int) -> list:
    """At most n items evenly spaced over the list (deterministic)."""
    if n <= 0 or len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def collect_images(sources: list[str], limit: int) -> list[Path]:
    from engine.data import is_image_file, list_images
    from engine.errors import UserError

    files: list[Path] = []
    for s in sources:
        p = Path(s).expanduser()
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise UserError(f"{p}: no images found in this folder")
            files += found
        elif p.is_file():
            if not is_image_file(p):
                raise UserError(f"{p}: not an image file (expected .jpg, .png, ...)")
            files.append(p)
        else:
            raise UserError(f"{p}: no such image or folder")
    return spread(files, limit)


def output_path(args) -> Path:
    from engine.errors import UserError
    from engine.run import RunDir

    if args.out:
        out = Path(args.out)
        return out if out.suffix.lower() == ".png" else out / f"{args.kind}.png"
    run = RunDir.of(args.checkpoint)
    if run is None:
        raise UserError(
            f"{args.checkpoint}: not inside a run directory; pass --out FOLDER or FILE.png"
        )
    return run.subdir("figures") / f"{args.kind}.png"


def class_labels(files: list[Path], classes: list[str]) -> list[int]:
    """Label of each file from its parent folder name (-1 when not a known class)."""
    index = {c: i for i, c in enumerate(classes)}
    return [index.get(f.parent.name, -1) for f in files]


def run(args) -> int:
    import torch

    from engine.data import load_images
    from engine.visualize import figures

    out = output_path(args)
    files = collect_images(args.images, args.max_images)
    names = [f"{f.parent.name}/{f.stem}" for f in files]
    if args.kind == "reconstruction":
        image = _reconstruction(args, files, names)
    else:
        from engine.features import load_features

        extractor = load_features(args.checkpoint, "global", args.device, args.precision)
        images = load_images(files, args.size or extractor.image_size)
        image = _figure(args, extractor, images, files, names, torch)
    figures.save_png(image, out)
    print(f"wrote {out} ({image.width}x{image.height}, {len(files)} images)")
    return 0


def _figure(args, extractor, images, files, names, torch):
    from engine import visualize as V
    from engine.data import load_images

    if args.kind == "attention":
        return V.attention_figure(extractor, images, args.mass, names)
    if args.kind == "pca":
        return V.pca_figure(extractor, images, args.threshold, args.foreground, names)
    if args.kind == "convattn":
        return V.conv_attention_figure(extractor, images, args.p, names)
    if args.kind == "neighbours":
        from engine.data import ImageFolderDataset

        db = ImageFolderDataset(args.database, load_size=images.shape[-1])
        idx = spread(list(range(len(db))), args.max_database)
        db_files = [db.files[i] for i in idx]
        db_images = load_images(db_files, images.shape[-1])
        db_labels = torch.tensor([db.targets[i] for i in idx]) if db.classes else None
        q_labels = torch.tensor(class_labels(files, db.classes)) if db.classes else None
        where = {str(f.resolve()): j for j, f in enumerate(db_files)}
        exclude = torch.tensor([where.get(str(f.resolve()), -1) for f in files])
        return V.neighbours_figure(
            extractor,
            images,
            db_images,
            args.k,
            q_labels,
            db_labels,
            exclude if (exclude >= 0).any() else None,
            db.classes or None,
        )
    if args.kind == "embedding":
        from engine.visualize.neighbours import embed_batched

        classes = sorted({f.parent.name for f in files})
        labels = class_labels(files, classes)
        feats = embed_batched(extractor, images)
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        bad = [m for m in methods if m not in ("pca", "tsne")]
        if bad or not methods:
            from engine.errors import UserError

            raise UserError(
                f"--methods: unknown {', '.join(bad) or '(empty)'}; choose from pca, tsne"
            )
        title = f"{len(files)} images embedded by {extractor.arch.get('name')} ({extractor.source})"
        return V.embedding_figure(feats, labels, classes, title, args.perplexity, methods)
    raise AssertionError(args.kind)


def _reconstruction(args, files, names):
    from engine.data import load_images
    from engine.features import load_features

    r = load_features(args.checkpoint, "reconstruction", args.device)
    images = load_images(files, args.size or r.image_size)
    return r.figure(images, names, mask_ratio=args.mask_ratio, seed=args.seed)
