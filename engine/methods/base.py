"""The Method contract: an nn.Module that owns backbone, heads and state, and returns losses."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from engine import augment
from engine.backbones import build_backbone
from engine.distributed import all_reduce_mean
from engine.registry import BACKBONE_KINDS, MethodSpec, register_method

# The two families of recipes the methods' `defaults` start from (their lr, weight decay and
# warm-up follow): convnets with SGD (SimCLR, BYOL, MoCo v2, the pretext tasks), ViTs with AdamW.
RESNET_SGD = {"backbone": "resnet18", "optimizer": "sgd"}
RESNET_ADAMW = {"backbone": "resnet18", "optimizer": "adamw"}
VIT_ADAMW = {"backbone": "vit_tiny", "optimizer": "adamw"}
# The two-view ResNet methods train a half-width ResNet-18 on images of 32 px or less unless the
# user names a backbone (MethodSpec.default_backbone): a quarter of the FLOPs buys 3.7x the
# epochs of a CPU budget, and 15 minutes of SimCLR reach kNN 0.393 instead of 0.351
# (docs/benchmarks.md). The pretext ResNet methods (rotation, relative patch position, jigsaw,
# inpainting) and DeepCluster make the same trade: rotation's 4 images per image gave it 34
# steps of full-width ResNet-18 in 15 EPYC minutes.
HALF_WIDTH_AT_32 = {"small_image": {"backbone": "resnet18_w32"}}
TWO_VIEW_RESNET = RESNET_SGD | HALF_WIDTH_AT_32
# solo-learn's CIFAR ResNet-18 recipes (scripts/pretrain/cifar/*.yaml): LARS with trust 0.02,
# biases and norms excluded, each tensor's rate capped at the scheduled lr (clip_lr).
CIFAR_LARS = {"optimizer": "lars", "lars_trust": 0.02, "lars_clip": True}


class Method(nn.Module):
    """Subclasses set `self.backbone` and implement `forward(batch) -> {"loss": ..., ...}`.

    A concrete method declares its registry entry (engine.registry.MethodSpec) on the class:
    setting `method_name` registers it when its module is imported, with the first paragraph
    of its docstring as the description `selfsup methods` and the app show."""

    method_name: str = ""
    family: str = ""  # the group `selfsup methods` and the app's picker list it under
    config_cls: type | None = None  # its options (a dataclass of engine.config.opt fields)
    defaults: dict[str, Any] = {}  # TrainConfig values the method needs (backbone, lr, ...)
    data_kind: str = "images"  # the dataset builder it trains on (engine.registry)
    produces: tuple[str, ...] = BACKBONE_KINDS  # feature kinds (engine.registry.FEATURE_KINDS)
    backbone_option: str = ""  # the option naming its model when not `backbone` (CLIP)
    backbone: nn.Module
    backbone_kwargs: dict[str, Any] = {}  # build_backbone options, e.g. {"mask_token": True}
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (MAE: 0.95)
    # Parameters a recipe trains outside the lr / weight-decay schedules, by name prefix:
    # {prefix: {"lr": absolute lr, "weight_decay": wd}} (MOCA's weight generators)
    constant_lr_groups: dict[str, dict[str, float]] = {}
    # State entries fitted to the data rather than learned (iGPT's colour palette): the
    # untrained baseline (engine.features.random_init_features) takes them from the trained run,
    # as without them it would not even tokenise its input.
    fitted_state: tuple[str, ...] = ()

    @classmethod
    def build(cls, cfg: Any, method_cfg: Any) -> Method:
        """The MethodSpec.build of an image method: backbone from cfg.backbone / cfg.image_size,
        or, with cfg.init_from, the source's architecture and weights (engine.init_from)."""
        if cfg.init_from or cfg.init_report:
            from engine.init_from import initial_backbone

            backbone, state = initial_backbone(cfg, cls.backbone_kwargs)
            method = cls(backbone, cfg.image_size, method_cfg)  # teachers copy the loaded weights
            cfg.init_report["heads"] = method.load_heads(state) if state else "new"
            return method
        backbone = build_backbone(cfg.backbone, cfg.image_size, **cls.backbone_kwargs)
        return cls(backbone, cfg.image_size, method_cfg)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "method_name" not in cls.__dict__:
            return  # a shared base (ColorTargetMethod, SlotModel), or a test's helper
        if not cls.__doc__ or cls.config_cls is None:
            raise TypeError(f"{cls.__name__}: a registered method needs a docstring and config_cls")
        register_method(
            MethodSpec(
                name=cls.method_name,
                description=" ".join(cls.__doc__.strip().split("\n\n")[0].split()),
                config_cls=cls.config_cls,
                build=cls.build,
                data=cls.data_kind,
                family=cls.family,
                defaults=dict(cls.defaults),
                produces=cls.produces,
                features=None if cls.extractor is Method.extractor else cls.extractor,
                backbone_option=cls.backbone_option,
            )
        )

    def extractor(self, kind: str, source: Any = None) -> Any:
        """The extractor of a feature kind the backbone alone cannot give (a colorization run's
        embedding, CLIP's towers); None for the kinds the backbone gives."""
        return None

    def load_heads(self, state: dict[str, Any]) -> str:
        """Heads from an --init-from file that holds them (DINO's full checkpoints); a method
        whose heads fit loads them and says so. Default: new heads."""
        return "new"

    def __init__(self, backbone: nn.Module | None = None, cfg: Any = None) -> None:
        """backbone: the network being trained; cfg: the method's options (its config_cls)."""
        super().__init__()
        if backbone is not None:
            self.backbone = backbone
        if cfg is not None:
            self.cfg = cfg
        # Set by the trainer before every step, so augmentation randomness depends only on
        # (seed, step) and the global batch: exact resume, and DDP equal to one process.
        self._seed, self._step, self._offset, self._global_batch = 0, 0, 0, None

    def set_step_context(
        self, seed: int, step: int, offset: int = 0, global_batch: int | None = None
    ) -> None:
        self._seed, self._step, self._offset, self._global_batch = seed, step, offset, global_batch

    def step_generator(self, device: torch.device, salt: int = 0) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed((self._seed * 1_000_003 + self._step * 7919 + salt) % (2**63))
        return g

    def global_rows(self, local: int) -> tuple[int, int]:
        """(size of the global batch, index of this process's first row in it) for a step whose
        process holds `local` images: what per-sample randomness is drawn over."""
        return self._global_batch or local, self._offset

    def draw_global(
        self,
        fn: Callable[[int, torch.Generator], Any],
        local: int,
        salt: int,
        device: torch.device | str = "cpu",
    ) -> Any:
        """fn(global batch, step generator) draws per-sample randomness (a tensor, or a dataclass
        of them, batch first) for the whole global batch; this process gets its `local` rows.
        So N processes draw exactly what one process draws for the same global batch."""
        total, first = self.global_rows(local)
        out = fn(total, self.step_generator(torch.device(device), salt=salt))
        return slice_params(out, first, first + local) if total != local else out

    def make_views(
        self, batch: dict[str, torch.Tensor] | torch.Tensor, specs: list[augment.ViewSpec]
    ) -> list[torch.Tensor]:
        """Augmented views of this process's images (a batch dict's "image", or a tensor),
        sampled for the whole global batch. A batch's "hw" [B, 2] (each image's size before it
        was stretched to the square the loader delivers) makes crops follow the true aspect."""
        images = batch["image"] if isinstance(batch, dict) else batch
        hw = batch.get("hw") if isinstance(batch, dict) else None
        dev = images.device

        def draw(spec: augment.ViewSpec, salt: int) -> augment.ViewParams:
            def fn(n: int, g: torch.Generator) -> augment.ViewParams:
                return augment.sample_view_params(n, spec, dev, generator=g, image_hw=(1, 1))

            if hw is None:
                return self.draw_global(fn, images.shape[0], salt, dev)

            # the aspect ratio of each image matters: draw with this process's sizes in the
            # rows of the global batch (other rows draw as squares; only ours are kept)
            def fn_hw(n: int, g: torch.Generator) -> augment.ViewParams:
                first = self.global_rows(images.shape[0])[1]
                full = torch.ones(n, 2, device=dev)
                full[first : first + images.shape[0]] = hw.to(dev).float()
                return augment.sample_view_params(n, spec, dev, generator=g, image_hw=full)

            return self.draw_global(fn_hw, images.shape[0], salt, dev)

        return [augment.apply_view(images, spec, draw(spec, i + 1)) for i, spec in enumerate(specs)]

    def on_step_start(self, step: int, total_steps: int, optimizer: Any) -> None:
        """Before each step, after the trainer set the learning rate: per-group schedules
        (DINO's weight-decay cosine, a warm-up given as a fraction of the run)."""

    def clip_gradients(self, max_norm: float) -> None:
        """Gradient clipping; the trainer calls it when clip_grad > 0 (after unscaling).
        Default: the global norm over all parameters."""
        torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)

    def on_step_end(self, step: int, total_steps: int) -> None:
        """EMA teachers, momentum schedules, queue bookkeeping: after each optimiser step."""

    def on_epoch_start(self, epoch: int, trainer: Any) -> None:
        """Work that needs the whole dataset (e.g. DeepCluster's k-means)."""


def slice_params(params: Any, start: int, stop: int) -> Any:
    """Rows [start:stop] of every per-sample tensor in a params dataclass/dict."""
    if isinstance(params, torch.Tensor):
        return params[start:stop] if params.dim() > 0 else params
    if isinstance(params, dict):
        return {k: slice_params(v, start, stop) for k, v in params.items()}
    if dataclasses.is_dataclass(params):
        return dataclasses.replace(
            params,
            **{
                f.name: slice_params(getattr(params, f.name), start, stop)
                for f in dataclasses.fields(params)
            },
        )
    if isinstance(params, (list, tuple)):
        return type(params)(slice_params(p, start, stop) for p in params)
    return params


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- m * target + (1 - m) * online, parameters only. Buffers (BatchNorm running
    statistics) are the target's own, from its own forward passes, as in the official DINO,
    MoCo and BYOL code (which average `parameters()` only)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


@torch.no_grad()
def ema_center(center: torch.Tensor, batch_mean: torch.Tensor, momentum: float) -> None:
    """DINO / iBOT centering: center <- m * center + (1 - m) * mean over the global batch."""
    center.mul_(momentum).add_(all_reduce_mean(batch_mean), alpha=1 - momentum)


@torch.no_grad()
def clip_per_parameter(params: Any, max_norm: float) -> None:
    """DINO's utils.clip_gradients: scale each gradient whose norm exceeds max_norm down to it,
    parameter by parameter (clip coefficient max_norm / (norm + 1e-6))."""
    for p in params:
        if p.grad is not None:
            coef = max_norm / (p.grad.norm(2) + 1e-6)
            p.grad.mul_(coef.clamp(max=1.0))


def online_and_target(
    method: Method, views: list[torch.Tensor], target: nn.Module
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """BYOL / MoCo v3: the online branch predictor(projector(backbone(v))) with gradient and
    the momentum target's output without, for each view."""
    online = [method.predictor(method.projector(method.backbone(v))) for v in views]
    with torch.no_grad():
        targets = [target(v) for v in views]
    return online, targets


def reconstruction_features(figure: str):
    """MethodSpec.features of a generative method: the "reconstruction" kind draws
    engine.visualize.reconstructions.<figure>(method, images, names, **opts); every other kind
    comes from the backbone (None)."""

    def features(method: Method, kind: str, source: Any = None) -> Any:
        if kind != "reconstruction":
            return None
        from engine.visualize import reconstructions

        return reconstructions.Reconstruction(
            method, method.image_size, getattr(reconstructions, figure)
        )

    return features


@torch.no_grad()
def ema_follow(target: nn.Module, online: nn.Module, base: float, step: int, total: int) -> None:
    """The EMA target step of BYOL / MoCo / DINO: momentum on a cosine from `base` to 1."""
    ema_update(target, online, cosine_momentum(base, step, total))


def cosine_momentum(base: float, step: int, total_steps: int, final: float = 1.0) -> float:
    """BYOL/DINO schedule: momentum rises from `base` to `final` along a cosine."""
    if total_steps <= 1:
        return base
    return (
        final - (final - base) * (math.cos(math.pi * min(step, total_steps) / total_steps) + 1) / 2
    )


def frozen_copy(module: nn.Module) -> nn.Module:
    import copy

    m = copy.deepcopy(module)
    for p in m.parameters():
        p.requires_grad_(False)
    return m
