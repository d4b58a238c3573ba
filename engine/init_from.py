"""--init-from: continue self-supervised training from imported weights (the common real use:
adapt DINO to one's own domain). The backbone, its architecture included, comes from the source
for student and teacher alike; heads come from the file when it holds heads that fit, else they
are new. What happened is written to the run's config.json (`init_report`), and a resume
rebuilds the recorded architecture without needing the source again."""

from __future__ import annotations

from typing import Any

from torch import nn

from engine.errors import UserError

# what a method asks of its backbone's structure (kept from the method); the rest of the
# architecture (size, patch, heads, LayerScale, registers, stem) comes from the source
METHOD_OWNED = ("mask_token", "drop_path", "output_stride")


def initial_backbone(cfg: Any, method_kwargs: dict[str, Any]) -> tuple[nn.Module, dict | None]:
    """(backbone, head tensors of the source or None) for Method.build."""
    from engine.backbones import build_backbone

    owned = {k: v for k, v in method_kwargs.items() if k in METHOD_OWNED}
    report = cfg.init_report
    if report.get("arch"):  # a resume or a reload: the checkpoint brings the weights
        return build_backbone(**{**report["arch"], **owned}), None
    from engine.features import load_features

    source = load_features(cfg.init_from, "global")
    arch = dict(source.backbone.arch)
    if not arch.get("name") or arch["name"] in ("timm", "open_clip"):
        raise UserError(
            f"{cfg.init_from}: --init-from needs one of our backbones (resnet, vit); "
            f"{arch.get('name')} models can be evaluated and visualised but not trained here"
        )
    backbone = build_backbone(**{**arch, **owned})
    missing, unexpected = backbone.load_state_dict(source.backbone.state_dict(), strict=False)
    extra = [k for k in missing if not k.endswith("mask_token")] + list(unexpected)
    if extra:
        raise UserError(f"{cfg.init_from}: weights do not fit its own architecture ({extra[:3]})")
    cfg.backbone = arch["name"]
    report.update(source=cfg.init_from, arch=arch, backbone="loaded")
    return backbone, head_state(cfg.init_from)


def head_state(source: str) -> dict[str, Any] | None:
    """The projection head of a DINO-layout full checkpoint (its `teacher` entry), or None."""
    from engine.pretrained import read_weights
    from engine.run import resolve

    src = resolve(source)
    if src.path is None or not src.path.is_file() or src.path.suffix == ".safetensors":
        return None
    ck = read_weights(src.path)
    teacher = ck.get("teacher") if isinstance(ck, dict) else None
    if not isinstance(teacher, dict):
        return None
    out = {}
    for k, v in teacher.items():
        k = k.removeprefix("module.")
        if k.startswith("head."):
            out[k[len("head.") :]] = v
    return out or None
