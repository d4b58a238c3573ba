"""Any timm model as an engine backbone (`timm:<name>[:FILE]`): pooled features and a dense map
(a ViT's patch tokens, a CNN's last feature map), with timm's own preprocessing statistics."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.errors import UserError


class TimmBackbone(nn.Module):
    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model = model
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.image_size = int((cfg.get("input_size") or (3, 224, 224))[-1])
        self.embed_dim = int(model.num_features)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        self.patch_size = int(patch[0]) if patch is not None else None
        info = getattr(model, "feature_info", None) or [{}]
        last = info[-1] if isinstance(info, list) else {}
        self.stride = self.patch_size or int(last.get("reduction", 32))
        self.arch = {"name": "timm", "model": name, "image_size": self.image_size}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)
        if f.dim() == 4:  # a CNN's map
            return f
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return f[:, self.num_prefix_tokens :].transpose(1, 2).reshape(x.shape[0], -1, h, w)


def timm_backbone(name: str, file: Path | None = None) -> TimmBackbone:
    """timm.create_model(name) without its classifier; weights from FILE (weights-only load) or,
    without a file, timm's own download (Hugging Face hub, safetensors) when online."""
    import timm

    if not timm.is_model(name):
        raise UserError(f"timm:{name}: timm has no such model (see timm.list_models())")
    kwargs = {"num_classes": 0, "pretrained": file is None}
    try:
        model = timm.create_model(name, dynamic_img_size=True, **kwargs)  # ViTs: any input size
    except TypeError:
        model = timm.create_model(name, **kwargs)
    except Exception as e:  # no network, no such pretrained tag
        raise UserError(f"timm:{name}: could not load ({str(e).splitlines()[0][:140]})") from None
    if file is not None:
        from engine.features import load_state_into
        from engine.pretrained import read_weights, unwrap

        state = unwrap(read_weights(file), "timm", str(file))
        state = {
            k: v for k, v in state.items() if not k.startswith(("head.", "fc.", "classifier."))
        }
        load_state_into(model, state, f"{file} (timm:{name})")
    return TimmBackbone(model.eval(), name)
