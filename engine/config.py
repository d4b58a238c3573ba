"""Config dataclasses: the single source of truth for CLI flags, GUI forms and config.json."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UserError


def opt(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its help text: the CLI flag's help and the GUI form's tooltip.
    metadata may add `choices`."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class OptimConfig:
    optimizer: str = opt("sgd", "sgd | adamw | lars", choices=["sgd", "adamw", "lars"])
    lr: float = opt(0.06, "base learning rate for batch 256 (scaled linearly)")
    weight_decay: float = opt(5e-4, "weight decay (not on biases and norms)")
    momentum: float = opt(0.9, "SGD / LARS momentum")
    lars_trust: float = opt(
        1e-3, "LARS trust coefficient: step = lr x trust x |w| / |g| (paper 1e-3; CIFAR 0.02)"
    )
    lars_clip: bool = opt(
        False,
        "LARS: cap each tensor's rate at the scheduled lr, step = min(lr, trust x |w| / |g|) "
        "(solo-learn's clip_lr, used by its CIFAR recipes)",
    )
    warmup_epochs: float = opt(1.0, "linear warm-up length in epochs")
    min_lr_ratio: float = opt(0.0, "final lr as a fraction of peak (cosine)")
    clip_grad: float = opt(0.0, "max gradient norm, 0 = off")


@dataclass
class TrainConfig:
    data: str = opt("", "image folder, video folder or caption file")
    method: str = opt("simclr", "method name (see `selfsup methods`)")
    backbone: str = opt(
        "resnet18",
        "resnet18 | resnet18_w32 (half width, a quarter of the FLOPs) | resnet50 | vit_tiny | "
        "vit_small | vit_base [_p8|_p16]",
    )
    image_size: int = opt(32, "training crop size in pixels")
    init_from: str = opt(
        "",
        "start from these weights (student and teacher alike): a run, a file or a published "
        "model such as dino:vits16 (see `selfsup models`); the backbone's architecture comes "
        "from it",
    )
    epochs: int = opt(10, "passes over the data")
    max_steps: int = opt(0, "stop after this many steps (0 = epochs)")
    time_budget: float = opt(
        0.0,
        "minutes of wall time: the schedule (steps, warm-up, cosine, EMA) is planned from the "
        "measured time per step to end on time (0 = off; --max-steps caps it)",
    )
    batch_size: int = opt(256, "global batch size (split over processes)")
    num_workers: int = opt(2, "DataLoader decoding workers")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    precision: str = opt(
        "auto",
        "auto (CUDA: bf16; CPU: bf16 only where a cached probe measures it clearly faster) | fp32 | bf16 | fp16",
        choices=["auto", "fp32", "bf16", "fp16"],
    )
    run_dir: str = opt("", "output folder (default runs/<method>-<time>)")
    checkpoint_every: int = opt(200, "save a checkpoint every N steps")
    log_every: int = opt(10, "write an event every N steps")
    deterministic: bool = opt(False, "deterministic algorithms (bit-exact resume)")
    channels_last: str = opt("auto", "auto | on | off", choices=["auto", "on", "off"])
    compile: str = opt(
        "auto",
        "torch.compile the backbone: auto (under bf16 / fp16 autocast, where it measured 1.13x) | on | off",
        choices=["auto", "on", "off"],
    )
    optim: OptimConfig = field(default_factory=OptimConfig)
    method_args: dict[str, Any] = field(default_factory=dict)
    # written by the build when init_from is set: the backbone architecture taken from the
    # source (so a resume rebuilds it without the source) and where the heads came from
    init_report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        optim = OptimConfig(**_known(OptimConfig, d.pop("optim", {}) or {}))
        return cls(**_known(cls, d), optim=optim)

    def save(self, path: str | Path) -> None:
        from engine.checkpoint import atomic_write

        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(self.to_dict(), indent=2)))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: cannot read config ({e})") from None


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names and k != "optim"}


def make_config(cls: type, values: dict[str, Any]) -> Any:
    """Build a method dataclass from a dict, rejecting unknown keys with the valid ones listed."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    return cls(**values)


def _arg_type(tp: Any):
    if tp in (bool, "bool"):
        return _parse_bool
    if typing.get_origin(tp) in (tuple, list):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else float
        return lambda s: tuple(inner(x) for x in s.split(","))
    return {"int": int, "float": float, "str": str}.get(tp, tp) if isinstance(tp, str) else tp


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got '{s}'")


def field_type(cls: type, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, f.type)


def scalar_fields(cls: type, skip: tuple[str, ...] = ()):
    """(field, type) of the fields a user sets one by one: CLI flags and GUI form rows (nested
    dataclasses and dicts such as method_args are filled elsewhere)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = field_type(cls, f)
        if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict or tp is dict:
            continue
        yield f, tp


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    dest_prefix: str = "",
) -> None:
    """Add one --flag per scalar field; defaults are None so unset flags can be told apart."""
    for f, tp in scalar_fields(cls, skip):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + (prefix + f.name).replace("_", "-")
        kwargs: dict[str, Any] = {
            "dest": dest_prefix + prefix + f.name,
            "default": None,
            "type": _arg_type(tp),
        }
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        kwargs["help"] = f"{f.metadata.get('help', '')} (default: {default})".strip()
        parser.add_argument(flag, **kwargs)


def collect_dataclass_args(
    ns: argparse.Namespace, cls: type, prefix: str = "", dest_prefix: str = ""
) -> dict[str, Any]:
    """The fields the user actually set on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, dest_prefix + prefix + f.name, None)
        if v is not None:
            out[f.name] = v
    return out


def dataclass_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            v = f.default_factory()  # type: ignore[misc]
            out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    return out
