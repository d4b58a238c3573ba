"""One feature-extractor interface over any backbone: our runs, exports, torchvision weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.augment import MEAN, STD
from engine.backbones import ViT, build_backbone
from engine.checkpoint import load_checkpoint
from engine.errors import UserError
from engine.precision import Precision, choose_precision
from engine.run import resolve

EXPORT_FORMAT = "selfsup-export-v1"


class FeatureExtractor:
    """Global embeddings, dense maps and (ViT) last-layer attention from uint8 or [0,1] images."""

    def __init__(
        self,
        backbone: nn.Module,
        mean=MEAN,
        std=STD,
        image_size: int | None = None,
        source: str = "",
    ):
        self.backbone = backbone.eval()
        self.arch: dict[str, Any] = dict(getattr(backbone, "arch", {}))
        self.mean, self.std = tuple(mean), tuple(std)
        self.image_size = image_size or self.arch.get("image_size", 224)
        self.source = source
        self.embed_dim: int = backbone.embed_dim
        self.stride: int = getattr(backbone, "stride", 1)
        self.requested_precision = "auto"
        self._precision: Precision | None = None

    @property
    def precision(self) -> Precision:
        """The autocast precision of the forward passes: measured on first use (engine.precision;
        fp32 on CPUs where bf16 is not clearly faster); outputs are always float32."""
        if self._precision is None:
            self._precision = choose_precision(
                self.requested_precision, self.device, int(self.image_size)
            )
        return self._precision

    def set_precision(self, requested: str) -> FeatureExtractor:
        """auto | fp32 | bf16 | fp16 (the --precision flag of eval, visualize, propagate, index)."""
        self.requested_precision, self._precision = requested, None
        return self

    def _forward(self, fn, x: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast(self.device):
            return fn(x).float()

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def to(self, device: str | torch.device) -> FeatureExtractor:
        self.backbone.to(device)
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(self.backbone, self.prepare(images))

    @torch.no_grad()
    def dense(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(self.backbone.forward_dense, self.prepare(images))

    @property
    def has_attention(self) -> bool:
        return isinstance(self.backbone, ViT)

    @torch.no_grad()
    def attention(self, images: torch.Tensor) -> torch.Tensor:
        """[CLS]-to-patch attention of the last layer, [B, heads, h, w]."""
        if not self.has_attention:
            raise UserError(
                f"{self.source or 'this model'}: attention maps need a ViT backbone, not {self.arch.get('name')}"
            )
        x = self.prepare(images)
        attn = self._forward(self.backbone.get_last_selfattention, x)
        attn = attn[:, :, 0, self.backbone.num_prefix_tokens :]  # [CLS] to patches, no registers
        p = self.backbone.patch_size
        return attn.reshape(x.shape[0], attn.shape[1], x.shape[-2] // p, x.shape[-1] // p)

    @torch.no_grad()
    def embed_loader(self, loader, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed every batch of an image DataLoader: (features [N, D] on CPU, labels [N])."""
        feats, labels = [], []
        for batch in loader:
            f = self.embed(batch["image"])
            feats.append((F.normalize(f, dim=1) if normalize else f).cpu())
            labels.append(batch.get("label", torch.full((f.shape[0],), -1)).cpu())
        return torch.cat(feats), torch.cat(labels)


def load_state_into(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load whose failure names the architecture mismatch in one line."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    # a masking method's ViT holds a [MASK] embedding that a feature extractor does not need
    # (ViT._load_from_state_dict drops it): not a mismatch
    unexpected = [k for k in state if k not in own and k != "mask_token"]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        arch = getattr(backbone, "arch", {}).get("name", type(backbone).__name__)
        detail = (
            f"shape mismatch {shapes[0]}"
            if shapes
            else f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
        )
        raise UserError(
            f"{source}: weights do not fit a {arch} backbone ({detail}; {len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped)"
        )
    backbone.load_state_dict(state)


def backbone_from_checkpoint(ck: dict[str, Any], source: str) -> nn.Module:
    arch = ck.get("backbone_arch")
    if not arch:
        raise UserError(f"{source}: checkpoint has no backbone architecture recorded")
    prefix = ck.get("backbone_prefix", "backbone.")
    state = {k[len(prefix) :]: v for k, v in ck["model"].items() if k.startswith(prefix)}
    backbone = build_backbone(**arch)
    load_state_into(backbone, state, source)
    return backbone


def method_spec_of(source: Any):
    """The MethodSpec a run or training checkpoint was trained with; None for exports, named
    models, plain state dicts, and methods whose package is not loaded."""
    from engine.registry import get_method

    src = resolve(source)
    if src.kind != "checkpoint":
        return None
    name = src.run.method() if src.run is not None else None
    if not name:
        ck = load_checkpoint(src.path)
        name = ck.get("method") if isinstance(ck, dict) else None
    try:
        return get_method(name) if name else None
    except UserError:
        return None


def produces(source: Any) -> tuple[str, ...]:
    """The feature kinds (engine.registry.FEATURE_KINDS) a model source can give."""
    from engine.registry import BACKBONE_KINDS

    spec = method_spec_of(source)
    return spec.produces if spec is not None else BACKBONE_KINDS


def load_features(
    source: Any, kind: str = "global", device: str | torch.device = "cpu", precision: str = "auto"
):
    """The extractor of one kind for any model source: what its method declares it produces
    (a FeatureExtractor over the backbone unless the method builds its own). Consumers ask by
    kind, never by method name."""
    from engine.registry import BACKBONE_KINDS, FEATURE_KINDS

    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}")
    src = resolve(source)
    spec = method_spec_of(src)
    kinds = spec.produces if spec is not None else BACKBONE_KINDS
    if kind not in kinds:
        what = f"a {spec.name} model" if spec is not None else "this model"
        raise UserError(
            f"{src}: {what} gives {' / '.join(kinds)} features, not {kind} ({FEATURE_KINDS[kind]})"
        )
    if spec is not None and spec.features is not None:
        from engine.build import load_method

        out = spec.features(load_method(src, device)[0], kind, src)
        if out is not None:
            return _with_precision(out, precision)
    return load_feature_extractor(src, device).set_precision(precision)


def random_init_features(
    source: Any,
    kind: str = "global",
    device: str | torch.device = "cpu",
    seed: int = 0,
    precision: str = "auto",
):
    """The untrained baseline that learned features must beat: the same model with freshly
    initialised (seeded) weights, as the same kind of extractor. A run is rebuilt through its
    method (so custom backbones and method-built extractors work: PixelCNN, CPC v2, iGPT, dVAE,
    colorization, Dense Object Nets); another source by its backbone architecture."""
    import dataclasses

    from engine.backbones import build_backbone

    src = resolve(source)
    spec = method_spec_of(src)
    name = f"random-init:{spec.name if spec else '?'}:seed{seed}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec is None:
            trained = load_features(src, kind, "cpu", precision)
            arch = dict(getattr(trained, "arch", {}) or {})
            if not arch:
                raise UserError(f"{src}: no backbone architecture recorded to rebuild it untrained")
            ex = FeatureExtractor(
                build_backbone(**arch),
                trained.mean,
                trained.std,
                trained.image_size,
                f"random-init:{arch.get('name', '?')}:seed{seed}",
            )
            return ex.to(device).set_precision(precision)
        from engine.build import build_method, config_of

        cfg = dataclasses.replace(config_of(src), init_from="")
        method = build_method(cfg).to(device).eval()
        if getattr(method, "fitted_state", ()):
            keep_fitted_state(method, src)
    if spec.features is not None:
        out = spec.features(method, kind, name)
        if out is not None:
            return _with_precision(out, precision)
    ex = FeatureExtractor(method.backbone, image_size=cfg.image_size, source=name)
    return ex.to(device).set_precision(precision)


def keep_fitted_state(method: Any, src: Any) -> None:
    """Copy the run's data-fitted state (Method.fitted_state, e.g. iGPT's palette) into the
    untrained `method`: the baseline differs from the trained model by learning alone."""
    from engine.checkpoint import load_checkpoint

    state = load_checkpoint(src.path)["model"]
    method.load_state_dict({k: state[k] for k in method.fitted_state}, strict=False)


def _with_precision(extractor: Any, precision: str) -> Any:
    """Extractors built by a method's spec take the precision where they can (CLIP's image tower
    is a FeatureExtractor inside its ClipEmbedder)."""
    for target in (extractor, getattr(extractor, "features", None)):
        if hasattr(target, "set_precision"):
            target.set_precision(precision)
    return extractor


def _torchvision_arch(state: dict[str, torch.Tensor]) -> str:
    """Bottleneck blocks (conv3) mean ResNet-50; basic blocks ResNet-18."""
    return "resnet50" if "layer1.0.conv3.weight" in state else "resnet18"


def load_feature_extractor(
    source: str | Path, device: str | torch.device = "cpu", arch: str | None = None
) -> FeatureExtractor:
    """source: run dir | our checkpoint .pt | exported .safetensors | torchvision ResNet .pth |
    'torchvision:resnet18' (ImageNet weights, downloaded when online) | 'torchvision:resnet18:FILE'."""
    src = resolve(source)
    if src.kind == "named" and src.scheme == "torchvision":
        file = str(src.path) if src.path else None
        return _torchvision_extractor(src.name, file, src.text).to(device)
    if src.kind == "named":
        from engine.pretrained import load_named

        if src.path is not None and not src.path.is_file():
            raise UserError(f"{src.path}: no such weights file (for {src.scheme}:{src.name})")
        return load_named(src.scheme, src.name, src.path, src.text, device)
    path = src.path
    if src.kind == "export":
        return load_export(path).to(device)
    ck = load_checkpoint(path)
    if isinstance(ck, dict) and "model" in ck and "backbone_arch" in ck:
        cfg = ck.get("config", {})
        return FeatureExtractor(
            backbone_from_checkpoint(ck, str(path)),
            image_size=cfg.get("image_size"),
            source=str(path),
        ).to(device)
    if (
        isinstance(ck, dict)
        and all(torch.is_tensor(v) for v in ck.values())
        and "conv1.weight" in ck
    ):
        name = arch or _torchvision_arch(ck)
        return _torchvision_extractor(name, None, str(path), state=ck).to(device)
    raise UserError(f"{path}: not a selfsup checkpoint, export, or torchvision ResNet state dict")


def _torchvision_extractor(
    name: str, file: str | None, source: str, state: dict | None = None
) -> FeatureExtractor:
    if name not in ("resnet18", "resnet50"):
        raise UserError(
            f"{source}: torchvision backbone must be resnet18 or resnet50, not '{name}'"
        )
    backbone = build_backbone(name, image_size=224)
    if state is None and file:
        state = load_checkpoint(file)
    if state is None:  # the real pretrained weights: needs the network once, then torch's cache
        import torchvision

        state = getattr(torchvision.models, name)(weights="DEFAULT").state_dict()
    backbone.load_torchvision_state_dict(state)
    return FeatureExtractor(backbone, image_size=224, source=source)


def export_backbone(
    extractor: FeatureExtractor, out: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Backbone weights as safetensors with JSON metadata that `load_export` rebuilds from."""
    from safetensors.torch import save_file

    from engine.checkpoint import atomic_write

    meta = {
        "format": EXPORT_FORMAT,
        "arch": json.dumps(extractor.arch),
        "mean": json.dumps(extractor.mean),
        "std": json.dumps(extractor.std),
        "image_size": str(extractor.image_size),
        "source": str(extractor.source),
    }
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = {k: v.detach().cpu().contiguous() for k, v in extractor.backbone.state_dict().items()}
    out = Path(out)
    atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata=meta))
    return out


def load_export(path: str | Path) -> FeatureExtractor:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise UserError(
            f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})"
        ) from None
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(
            f"{path}: safetensors file has no selfsup export metadata (format={meta.get('format')})"
        )
    arch = json.loads(meta["arch"])
    backbone = build_backbone(**arch)
    load_state_into(backbone, state, str(path))
    return FeatureExtractor(
        backbone,
        json.loads(meta["mean"]),
        json.loads(meta["std"]),
        int(meta["image_size"]),
        source=str(path),
    )
