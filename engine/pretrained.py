"""The community's self-supervised models, by name: `dino:vits16`, `dinov2:vitb14_reg`,
`mae:vitb16`, `mocov3:resnet50`, `ibot:vits16`, `timm:<name>`, `torchvision:<name>`,
`solo|lightly|vissl:resnet50:FILE`, `open_clip:<model>/<tag>` (registered by multimodal).

`name:FILE` loads a local file; the name alone downloads once into torch hub's cache (online)
and later runs read the cache with no network. Every file goes through engine.checkpoint's
weights-only loader; DINO's full checkpoints also hold an argparse.Namespace of their arguments,
the one class allowed besides tensors. The catalog records what the state dict alone cannot
tell (MoCo v3's ViT-S has 12 heads where DeiT's has 6; DINOv2's LayerScale, registers and its
position interpolation), so each model computes what its authors' code computes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UserError

FB = "https://dl.fbaipublicfiles.com"
IBOT = "https://lf3-nlp-opensource.bytetos.com/obj/nlp-opensource/archive/2022/ibot"


@dataclass(frozen=True)
class Pretrained:
    name: str  # "dino:vits16"
    arch: dict[str, Any]  # build_backbone(**arch)
    url: str
    about: str
    licence: str
    layout: str  # how the file wraps the backbone's weights (see unwrap)
    image_size: int = 224  # the input size features are taken at by default
    extra: dict[str, Any] = field(default_factory=dict)


def _vit(size: str, patch: int, image_size: int = 224, **kw) -> dict[str, Any]:
    return {"name": f"vit_{size}_p{patch}", "image_size": image_size, **kw}


_DINO = {"interpolation": "dino"}  # DINO / iBOT / DINOv2: bicubic with the +0.1 offset
_V2 = {"layerscale": 1.0, "mask_token": True, **_DINO}  # DINOv2: LayerScale, 37 x 37 grid
_V2_REG = {**_V2, "registers": 4, "interpolation": "antialias"}
_RESNET50 = {"name": "resnet50", "image_size": 224, "small_stem": False}

CATALOG: dict[str, Pretrained] = {
    m.name: m
    for m in [
        Pretrained(
            "dino:vits16",
            _vit("small", 16, **_DINO),
            f"{FB}/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
            "DINO ViT-S/16: attention maps that segment objects; kNN 74.5% on ImageNet",
            "Apache-2.0",
            "dino",
        ),
        Pretrained(
            "dino:vits8",
            _vit("small", 8, **_DINO),
            f"{FB}/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
            "DINO ViT-S/8: finest attention and video propagation (DAVIS-2017 J&F 69.9 in the paper)",
            "Apache-2.0",
            "dino",
        ),
        Pretrained(
            "dino:vitb16",
            _vit("base", 16, **_DINO),
            f"{FB}/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
            "DINO ViT-B/16; kNN 76.1% on ImageNet",
            "Apache-2.0",
            "dino",
        ),
        Pretrained(
            "dino:vitb8",
            _vit("base", 8, **_DINO),
            f"{FB}/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
            "DINO ViT-B/8; kNN 77.4% on ImageNet (slow on a CPU)",
            "Apache-2.0",
            "dino",
        ),
        Pretrained(
            "dino:resnet50",
            _RESNET50,
            f"{FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
            "DINO ResNet-50; linear 75.3% on ImageNet",
            "Apache-2.0",
            "resnet",
        ),
        Pretrained(
            "dinov2:vits14",
            _vit("small", 14, 518, **_V2),
            f"{FB}/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
            "DINOv2 ViT-S/14 (LVD-142M): strong general features, PCA of patches",
            "Apache-2.0",
            "plain",
        ),
        Pretrained(
            "dinov2:vitb14",
            _vit("base", 14, 518, **_V2),
            f"{FB}/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
            "DINOv2 ViT-B/14 (LVD-142M)",
            "Apache-2.0",
            "plain",
        ),
        Pretrained(
            "dinov2:vits14_reg",
            _vit("small", 14, 518, **_V2_REG),
            f"{FB}/dinov2/dinov2_vits14/dinov2_vits14_reg4_pretrain.pth",
            "DINOv2 ViT-S/14 with 4 registers: clean attention maps without artefact tokens",
            "Apache-2.0",
            "plain",
        ),
        Pretrained(
            "dinov2:vitb14_reg",
            _vit("base", 14, 518, **_V2_REG),
            f"{FB}/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth",
            "DINOv2 ViT-B/14 with 4 registers",
            "Apache-2.0",
            "plain",
        ),
        Pretrained(
            "mae:vitb16",
            _vit("base", 16, interpolation="antialias"),
            f"{FB}/mae/pretrain/mae_pretrain_vit_base.pth",
            "MAE ViT-B/16 encoder: made for fine-tuning; weaker for kNN / linear probes",
            "CC-BY-NC-4.0",
            "mae",
        ),
        Pretrained(
            "mocov3:vits16",
            _vit("small", 16, heads=12, interpolation="antialias"),
            f"{FB}/moco-v3/vit-s-300ep/vit-s-300ep.pth.tar",
            "MoCo v3 ViT-S/16 (12 heads); linear 73.2% on ImageNet",
            "CC-BY-NC-4.0",
            "mocov3",
        ),
        Pretrained(
            "mocov3:vitb16",
            _vit("base", 16, interpolation="antialias"),
            f"{FB}/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar",
            "MoCo v3 ViT-B/16; linear 76.7% on ImageNet",
            "CC-BY-NC-4.0",
            "mocov3",
        ),
        Pretrained(
            "mocov3:resnet50",
            _RESNET50,
            f"{FB}/moco-v3/r-50-1000ep/r-50-1000ep.pth.tar",
            "MoCo v3 ResNet-50 (1000 epochs); linear 74.6% on ImageNet",
            "CC-BY-NC-4.0",
            "resnet",
        ),
        Pretrained(
            "ibot:vits16",
            _vit("small", 16, **_DINO),
            f"{IBOT}/vits_16/checkpoint_teacher.pth",
            "iBOT ViT-S/16 teacher; kNN 75.2% on ImageNet, strong patch features",
            "Apache-2.0",
            "dino",
        ),
    ]
}

# Families whose names are free-form; their loaders live here or register from a package above
# (open_clip: multimodal). A loader takes (name, file or None, device) -> FeatureExtractor.
_FAMILY_LOADERS: dict[str, Callable[..., Any]] = {}
_FAMILY_MODULES: dict[str, str] = {}
RESNET_FILE_FAMILIES = ("solo", "lightly", "vissl")  # their ResNet checkpoints, from a file


def register_family(scheme: str, loader: Callable[..., Any]) -> None:
    _FAMILY_LOADERS[scheme] = loader


def declare_family(scheme: str, module: str) -> None:
    """The module registers the family's loader when imported (layering: engine cannot import
    multimodal, so multimodal declares open_clip here)."""
    _FAMILY_MODULES[scheme] = module


def schemes() -> list[str]:
    fixed = {n.split(":")[0] for n in CATALOG} | {"torchvision", "timm", *RESNET_FILE_FAMILIES}
    return sorted(fixed | set(_FAMILY_LOADERS) | set(_FAMILY_MODULES) | {"open_clip"})


# ---- files -----------------------------------------------------------------------------------
def cache_path(url: str) -> Path:
    """Where torch hub keeps a download (the usual cache, shared with torch.hub.load)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch(url: str, name: str) -> Path:
    """The cached file, downloading it once when it is missing."""
    import torch

    path = cache_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as e:  # no network, HTTP error: one line, and the offline alternative
        first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(
            f"{name}: could not download {url} ({first}); download it elsewhere and pass {name}:FILE"
        ) from None
    return path


def read_weights(path: str | Path) -> dict[str, Any]:
    """Weights-only load that also admits the argparse.Namespace DINO stores its arguments in."""
    from engine.checkpoint import load_checkpoint

    ck = load_checkpoint(path, allow=(argparse.Namespace,))
    if not isinstance(ck, dict):
        raise UserError(f"{path}: expected a dict of weights, found {type(ck).__name__}")
    return ck


# ---- state-dict layouts ------------------------------------------------------------------------
_WRAPPERS = ("teacher", "state_dict", "model", "module")  # DINO full, MoCo v3 / iBOT, MAE
_PREFIXES = ("module.base_encoder.", "module.", "backbone.", "base_encoder.", "encoder.")
_DROP = re.compile(r"^(head|fc|decoder|mask_token$|masked_embed$|momentum_encoder|predictor)")


def unwrap(ck: dict[str, Any], layout: str, source: str) -> dict[str, Any]:
    """The backbone's tensors from a published file: the wrapping keys (teacher, state_dict,
    model), the prefixes (module., backbone., module.base_encoder.), the heads dropped."""
    import torch

    state = ck
    for key in _WRAPPERS:
        inner = state.get(key) if isinstance(state, dict) else None
        if isinstance(inner, dict) and any(torch.is_tensor(v) for v in inner.values()):
            state = inner
            break
    if layout == "resnet":
        return resnet_state(state, source)
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    for p in _PREFIXES:
        if any(k.startswith(p) for k in state):
            state = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
            break
    keep_mask = layout == "plain"  # DINOv2's mask_token is part of its backbone
    out = {
        k: v for k, v in state.items() if not _DROP.match(k) or (keep_mask and k == "mask_token")
    }
    if "mask_token" in out and out["mask_token"].dim() == 2:  # DINOv2: [1, D]; ours [1, 1, D]
        out["mask_token"] = out["mask_token"][None]
    return out


_LIGHTLY = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def resnet_state(state: dict[str, Any], source: str) -> dict[str, Any]:
    """A torchvision-layout ResNet trunk from the layouts of torchvision, DINO, MoCo v3
    (module.base_encoder.), solo-learn (backbone.), VISSL (_feature_blocks.) and lightly
    (an nn.Sequential of the ResNet's children: backbone.0 = conv1, ..., backbone.7 = layer4)."""
    import torch

    while len(state) == 1 and isinstance(next(iter(state.values())), dict):
        state = next(iter(state.values()))  # VISSL: classy_state_dict/base_model/model/trunk
    for key in ("classy_state_dict", "base_model", "model", "trunk"):
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}
    for k in state:
        m = re.match(r"^(.*?)(conv1\.weight)$", k)
        if m and f"{m.group(1)}layer1.0.conv1.weight" in state:
            p = m.group(1)
            return {
                k[len(p) :]: v
                for k, v in state.items()
                if k.startswith(p) and not k[len(p) :].startswith("fc.")
            }
    for k in state:  # lightly: <prefix>0.weight is conv1, <prefix>4.0.conv1.weight layer1
        m = re.match(r"^(.*?)0\.weight$", k)
        if m and f"{m.group(1)}4.0.conv1.weight" in state:
            p, out = m.group(1), {}
            for k2, v in state.items():
                head, _, rest = k2[len(p) :].partition(".")
                if k2.startswith(p) and head in _LIGHTLY:
                    out[f"{_LIGHTLY[head]}.{rest}"] = v
            return out
    raise UserError(f"{source}: no ResNet weights found (expected conv1 and layer1..layer4 keys)")


# ---- building ------------------------------------------------------------------------------------
def build(arch: dict[str, Any]):
    from engine.backbones import build_backbone

    return build_backbone(**arch)


def load_named(scheme: str, name: str, file: Path | None, source: str, device: Any = "cpu"):
    """A FeatureExtractor for `scheme:name[:FILE]`."""
    from engine.features import FeatureExtractor, load_state_into

    full = f"{scheme}:{name}"
    if full in CATALOG:
        m = CATALOG[full]
        path = file or fetch(m.url, full)
        state = unwrap(read_weights(path), m.layout, str(path))
        backbone = build(m.arch)
        if m.layout == "resnet":
            backbone.load_torchvision_state_dict(state)
        else:
            load_state_into(backbone, state, f"{path} ({full})")
        return FeatureExtractor(backbone, image_size=m.image_size, source=source).to(device)
    if scheme in RESNET_FILE_FAMILIES:
        if name not in ("resnet18", "resnet50") or file is None:
            raise UserError(f"{source}: give {scheme}:resnet18:FILE or {scheme}:resnet50:FILE")
        backbone = build({"name": name, "image_size": 224, "small_stem": False})
        state = resnet_state(read_weights(file), str(file))
        _load_resnet(backbone, state, f"{file} ({scheme}:{name})")
        return FeatureExtractor(backbone, image_size=224, source=source).to(device)
    if scheme == "timm":
        from engine.backbones.timm_adapter import timm_backbone

        backbone = timm_backbone(name, file)
        return FeatureExtractor(
            backbone, backbone.mean, backbone.std, backbone.image_size, source=source
        ).to(device)
    if scheme not in _FAMILY_LOADERS and scheme in _FAMILY_MODULES:
        importlib.import_module(_FAMILY_MODULES[scheme])
    if scheme in _FAMILY_LOADERS:
        return _FAMILY_LOADERS[scheme](name, file, device, source)
    known = ", ".join(n for n in CATALOG if n.startswith(scheme + ":")) or ", ".join(schemes())
    raise UserError(f"{source}: unknown model; known: {known}")


def _load_resnet(backbone, state: dict[str, Any], source: str) -> None:
    from engine.features import load_state_into

    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:  # name the layout problem before the generic mismatch message
        raise UserError(
            f"{source}: not a {backbone.arch['name']} ({len(missing)} keys missing, e.g. {missing[:3]})"
        )
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    load_state_into(backbone, state, source)


def is_cached(name: str) -> bool:
    m = CATALOG.get(name)
    return bool(m) and cache_path(m.url).is_file()


def describe() -> list[dict[str, Any]]:
    """One row per known name: architecture, parameters, patch size, source, cached or not."""
    import torch

    rows = []
    for m in CATALOG.values():
        with torch.device("meta"):
            params = sum(p.numel() for p in build(m.arch).parameters())
        rows.append(
            {
                "name": m.name,
                "arch": m.arch["name"],
                "params_m": round(params / 1e6, 1),
                "patch": patch_of(m.arch),
                "licence": m.licence,
                "cached": is_cached(m.name),
                "url": m.url,
                "about": m.about,
            }
        )
    return rows


def patch_of(arch: dict[str, Any]) -> int | None:
    m = re.search(r"_p(\d+)$", arch["name"])
    return int(m.group(1)) if m else None
