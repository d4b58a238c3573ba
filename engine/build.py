"""From a TrainConfig to a running job: apply method defaults, build method and data, train."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import OptimConfig, TrainConfig, make_config
from engine.errors import UserError
from engine.registry import build_dataset, get_method
from engine.run import ModelSource, RunDir, resolve


def apply_method_defaults(
    train_values: dict[str, Any], optim_values: dict[str, Any], method: str
) -> TrainConfig:
    """User-set values win; then the method's paper defaults; then the dataclass defaults."""
    spec = get_method(method)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    optim_fields = {f.name for f in dataclasses.fields(OptimConfig)}
    t, o = dict(train_values), dict(optim_values)
    named = train_values.get("backbone") or train_values.get("init_from")
    size = t.get("image_size", spec.defaults.get("image_size", TrainConfig.image_size))
    backbone = t.get("backbone") or ("" if named else spec.default_backbone(size))
    for k, v in spec.recipe(backbone).items():
        if k == "method_args":
            t["method_args"] = {**v, **t.get("method_args", {})}
        elif k in train_fields and k not in t:
            t[k] = v
        elif k in optim_fields and k not in o:
            o[k] = v
    if not named:
        t["backbone"] = backbone
    t["method"] = method
    cfg = TrainConfig(**{k: v for k, v in t.items() if k != "optim"}, optim=OptimConfig(**o))
    m = make_config(spec.config_cls, cfg.method_args)  # validate early, valid names listed
    if spec.backbone_option:  # e.g. CLIP's `model`: the run's backbone is what it names
        cfg.backbone = str(getattr(m, spec.backbone_option))
    return cfg


def build_method(cfg: TrainConfig):
    spec = get_method(cfg.method)
    method = spec.build(cfg, make_config(spec.config_cls, cfg.method_args))
    if cfg.init_from and not cfg.init_report:
        raise UserError(f"--init-from is not supported by the '{cfg.method}' method")
    return method


def train(
    cfg: TrainConfig, resume: bool = False, callbacks: tuple[Callable[[dict], None], ...] = ()
) -> dict[str, Any]:
    from engine.trainer import Trainer

    if not cfg.data:
        raise UserError("no training data given; pass --data FOLDER")
    spec = get_method(cfg.method)
    dataset = build_dataset(spec.data, cfg)
    import torch

    torch.manual_seed(cfg.seed)  # the same initial weights on every process and every run
    method = build_method(cfg)
    return Trainer(cfg, method, dataset, cfg.run_dir or None, callbacks).fit(resume=resume)


def resume(
    run_dir: str | Path | RunDir, overrides: dict[str, Any] | None = None, callbacks: tuple = ()
) -> dict[str, Any]:
    run = RunDir(run_dir)
    cfg = run.config()
    cfg.run_dir = str(run.path)
    for k, v in (overrides or {}).items():
        setattr(cfg, k, v)
    return train(cfg, resume=True, callbacks=callbacks)


def config_of(source: str | Path | RunDir | ModelSource) -> TrainConfig:
    """The TrainConfig a run or training checkpoint was trained with."""
    src = resolve(source)
    if src.run is not None:
        return src.run.config()
    from engine.checkpoint import load_checkpoint

    ck = load_checkpoint(src.path) if src.kind == "checkpoint" else None
    if not isinstance(ck, dict) or "config" not in ck:
        raise UserError(f"{src}: not a selfsup training checkpoint (no method config)")
    return TrainConfig.from_dict(ck["config"])


def load_method(source: str | Path | RunDir | ModelSource, device: Any = "cpu"):
    """The whole trained Method (eval mode), heads and decoders included, from a run directory
    or training checkpoint: for what needs more than the backbone (MAE reconstructions,
    colorization, clip-level video embeddings, CLIP). Returns (method, TrainConfig)."""
    src = resolve(source)
    if src.kind != "checkpoint" or src.path is None:
        raise UserError(f"{src}: needs a training run or checkpoint, not an exported backbone")
    from engine.checkpoint import load_checkpoint

    ck = load_checkpoint(src.path)
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise UserError(f"{src.path}: not a selfsup training checkpoint (no method config)")
    cfg = TrainConfig.from_dict(ck["config"])
    method = build_method(cfg)
    arch = ck.get("backbone_arch") or {}
    own = getattr(method.backbone, "arch", {})
    if any(own.get(k) != v for k, v in arch.items()):  # e.g. a depth override
        from engine.backbones import build_backbone

        method.backbone = build_backbone(**arch)
    try:
        method.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise UserError(
            f"{src.path}: weights do not fit the '{cfg.method}' method it names ({str(e).splitlines()[0][:160]})"
        ) from None
    return method.to(device).eval(), cfg
