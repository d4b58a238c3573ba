"""Name -> method and dataset-kind registries, filled by importing the method packages."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError

# What a trained model can give its consumers; each consumer asks for one kind by name.
FEATURE_KINDS = {
    "global": "one embedding per image [B, D] (kNN, linear probe, neighbours, search)",
    "dense": "a feature map per image [B, C, h, w] (label propagation, PCA of patches)",
    "clip": "one embedding per video clip [B, D] (clip retrieval, kNN)",
    "image_text": "image and text embeddings in one space (photo search, zero-shot)",
    "reconstruction": "the pretext task's own output (MAE reconstructions, colorizations)",
    "tokens": "a discrete visual token per patch (a BEiT tokenizer: the dvae method)",
    "slots": "soft object masks per image [B, K, h, w], summing to 1 over K slots (slot models)",
}
BACKBONE_KINDS = ("global", "dense")  # what any backbone gives (exports, named models)


NARROW_MAX_SIZE = 32  # images at or below this size train a method's small-image backbone


@dataclass
class MethodSpec:
    name: str
    description: str
    config_cls: type
    build: Callable[..., Any]  # (TrainConfig, method config instance) -> Method
    data: str = "images"
    family: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    # What the trained model gives (FEATURE_KINDS). "global"/"dense" come from the backbone
    # unless `features` says otherwise; `features(method, kind, source)` builds the extractor
    # for the kinds the backbone alone cannot give (a colorization run's embedding, CLIP's
    # towers) and returns None for those the backbone gives.
    produces: tuple[str, ...] = BACKBONE_KINDS
    features: Callable[[Any, str, Any], Any] | None = None
    # The method option that names the model when it is not `backbone` (CLIP's `model`).
    backbone_option: str = ""

    @property
    def small_image_backbone(self) -> str:
        """The backbone trained on images of NARROW_MAX_SIZE px or less ("" = the paper's)."""
        return str(self.defaults.get("small_image", {}).get("backbone", ""))

    def default_backbone(self, image_size: int) -> str:
        """The backbone trained when the user names none: the paper's, or the small-image one
        at <= 32 px (resnet18_w32 for the ResNet methods: two-view, pretext, DeepCluster, DINO,
        MoCo v3), where a CPU budget buys more from epochs than from width (docs/benchmarks.md)."""
        if self.small_image_backbone and image_size <= NARROW_MAX_SIZE:
            return self.small_image_backbone
        return str(self.defaults.get("backbone", "resnet18"))

    def recipe(self, backbone: str) -> dict[str, Any]:
        """The method's defaults for a run of this backbone: the paper's, with the small-image
        recipe (`defaults["small_image"]`: optimiser values and `method_args`) over them when
        the backbone is the small-image one, e.g. DINO's ResNet recipe on resnet18_w32."""
        base = {k: v for k, v in self.defaults.items() if k != "small_image"}
        small = self.defaults.get("small_image", {})
        if not small or backbone != small.get("backbone"):
            return base
        over = {k: v for k, v in small.items() if k != "backbone"}
        args = {**base.get("method_args", {}), **over.pop("method_args", {})}
        return base | over | ({"method_args": args} if args else {})


_METHODS: dict[str, MethodSpec] = {}
_DATASETS: dict[str, Callable[..., Any]] = {}
# name -> module that registers it, declared by each package's __init__ without importing the
# module: listing names, `selfsup --help` and a training child import only what they need.
_METHOD_MODULES: dict[str, str] = {}
_DATASET_MODULES: dict[str, str] = {}


def declare_methods(modules: dict[str, str]) -> None:
    """{method name: module path}; the module registers the full spec when imported."""
    _METHOD_MODULES.update(modules)


def declare_datasets(modules: dict[str, str]) -> None:
    """{data kind: module path}; the module registers the dataset builder when imported."""
    _DATASET_MODULES.update(modules)


def register_method(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.name] = spec
    return spec


def method_modules() -> dict[str, str]:
    """{declared method name: module path}."""
    return dict(_METHOD_MODULES)


def method_names() -> list[str]:
    """Every declared or registered method name, without importing any method."""
    return sorted(set(_METHODS) | set(_METHOD_MODULES))


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS and name in _METHOD_MODULES:
        importlib.import_module(_METHOD_MODULES[name])
    if name not in _METHODS:
        choices = ", ".join(method_names()) or "(none registered)"
        raise UserError(f"unknown method '{name}'; choose one of: {choices}")
    return _METHODS[name]


def list_methods() -> list[MethodSpec]:
    """Full specs of every method (imports every declared method module)."""
    return [get_method(k) for k in method_names()]


def register_dataset(kind: str, builder: Callable[..., Any]) -> None:
    _DATASETS[kind] = builder


def build_dataset(kind: str, cfg: Any) -> Any:
    if kind not in _DATASETS and kind in _DATASET_MODULES:
        importlib.import_module(_DATASET_MODULES[kind])
    if kind not in _DATASETS:
        known = sorted(set(_DATASETS) | set(_DATASET_MODULES))
        raise UserError(f"no dataset builder for data kind '{kind}'; known: {', '.join(known)}")
    return _DATASETS[kind](cfg)
