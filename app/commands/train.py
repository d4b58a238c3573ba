"""`selfsup train`: flags come from the config dataclasses, method flags from the chosen method."""

from __future__ import annotations

import argparse

from engine.config import OptimConfig, TrainConfig, add_dataclass_args, collect_dataclass_args
from engine.registry import get_method, method_names


def chosen_method(argv: list[str], default: str = "simclr") -> str:
    for i, a in enumerate(argv):
        if a == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    return default


def register(sub: argparse._SubParsersAction, argv: list[str]) -> None:
    p = sub.add_parser(
        "train",
        help="train a self-supervised model on your data",
        description="Train a method on a folder of images (or videos / captions, by method). Method options appear with --method NAME --help.",
    )
    add_dataclass_args(p, TrainConfig, skip=("method",))
    p.add_argument("--method", default=None, help="method name: " + ", ".join(method_names()))
    g = p.add_argument_group("optimiser")
    add_dataclass_args(g, OptimConfig)
    spec = None  # only `selfsup train ...` imports its method (and torch) to add its flags
    if argv[:1] == ["train"] or (argv and argv[0].startswith("-") and "train" in argv):
        try:
            spec = get_method(chosen_method(argv))
        except Exception:
            spec = None  # reported with the valid names when the command runs
    if spec is not None:
        mg = p.add_argument_group(f"{spec.name} options")
        add_dataclass_args(mg, spec.config_cls, dest_prefix="m_")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped"
    )
    p.set_defaults(func=run, _method_spec=spec)


def run(args: argparse.Namespace) -> int:
    from engine.build import apply_method_defaults, resume, train

    if args.resume:
        overrides = {
            k: v
            for k, v in collect_dataclass_args(args, TrainConfig).items()
            if k in ("num_workers", "device", "max_steps", "epochs")
        }
        summary = resume(args.resume, overrides)
    else:
        method = args.method or "simclr"
        spec = get_method(method)
        train_values = collect_dataclass_args(args, TrainConfig)
        train_values["method_args"] = collect_dataclass_args(
            args, spec.config_cls, dest_prefix="m_"
        )
        cfg = apply_method_defaults(train_values, collect_dataclass_args(args, OptimConfig), method)
        paper = spec.defaults.get("backbone")
        small = spec.small_image_backbone
        if "backbone" not in train_values and not cfg.init_from and cfg.backbone == small:
            print(
                f"backbone {cfg.backbone}: {method}'s default at <= 32 px, with its small-image "
                f"recipe (more epochs in a CPU budget); --backbone {paper} for the paper's"
            )
        summary = train(cfg)
    if summary.get("stopped"):
        print(summary["message"])
        return 0
    losses = ", ".join(f"{k}={v:.4f}" for k, v in summary["losses"].items())
    if summary.get("plan"):
        plan = summary["plan"]
        spent = "; the budget ran out first" if summary.get("budget_spent") else ""
        print(
            f"time budget {plan['budget_s'] / 60:g} min: planned {plan['planned_steps']} steps "
            f"at {plan['s_per_step']:.3g} s/step{spent}"
        )
    print(f"finished at step {summary['step']} ({losses}); run directory: {summary['run_dir']}")
    return 0
