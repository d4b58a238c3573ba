"""BEiT (Bao et al. 2022): masked image modelling with visual tokens. About 40% of the patches
are masked block-wise (random rectangles of at least 16 patches on BEiT's 14x14 grid, scaled
down to (min(h, w) // 3)^2 on small grids, aspect in [0.3, 1/0.3], until the budget is reached:
engine.masking.block_masks), their embeddings are replaced by the ViT's [MASK] token, and a
linear head on the output tokens predicts each masked patch's visual token: cross-entropy over
the codebook, on masked positions only.

The visual tokens come from a discrete VAE trained first on the same data
(`selfsup train --method dvae`, engine/methods/dvae.py), named by --tokenizer and loaded through
engine.build.load_method; it tokenises the same normalised view the ViT sees. The tokenizer is a
frozen submodule (requires_grad False, so the optimiser never sees it; always in eval mode) and
is PART of the method's state dict: a BEiT checkpoint carries the exact tokenizer it was trained
with, so a resume (and load_method) restores those weights even if the dVAE run directory is
later trained further; the directory must still exist to build the module.

Features for kNN / linear probes: the ViT backbone's default, the [CLS] token after the final
norm (BEiT's paper probes the mean of the patch tokens; we keep the project-wide [CLS] so BEiT
compares with the other ViT methods as is).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.backbones import is_vit
from engine.config import opt
from engine.errors import UserError
from engine.losses import fp32
from engine.masking import block_masks
from engine.methods.base import VIT_ADAMW, Method


@dataclass
class BEiTConfig:
    tokenizer: str = opt(
        "",
        "required: a dvae run directory or training checkpoint (selfsup train --method dvae on "
        "the same data, same image size); DALL-E's released encoder.pkl is a pickled module, "
        "which this project refuses to load",
    )
    mask_ratio: float = opt(0.4, "fraction of patches masked in blocks (0.4 in the paper)")
    min_block: int = opt(0, "smallest block in patches; 0: (min(h, w) // 3)^2, 16 on 14x14")
    crop_scale_min: float = opt(
        0.08, "RandomResizedCrop lower scale; flip only, no colour jitter (paper: + jitter)"
    )


@fp32
def masked_token_loss(logits: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of logits [B, N, K] against tokens [B, N] at masked positions (mask [B, N]
    bool), averaged over the masked positions (0 when nothing is masked)."""
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], tokens[mask])


def load_tokenizer(source: str) -> nn.Module:
    """The frozen encoder/decoder network of a dvae run or checkpoint (eval mode, no grads)."""
    from engine.build import load_method
    from engine.features import produces

    if "tokens" not in produces(source):  # the registry says which models tokenise
        raise UserError(
            f"--tokenizer {source}: gives no visual tokens; train one with --method dvae"
        )
    method, _cfg = load_method(source)
    net = method.backbone.eval()
    net.requires_grad_(False)
    return net


class BEiT(Method):
    """BEiT: predict dVAE visual tokens of block-masked patches (ViT, needs --tokenizer)"""

    method_name, family, config_cls = "beit", "masked", BEiTConfig
    # paper: AdamW lr 1.5e-3 at batch 2048, wd 0.05, 10 warm-up epochs
    defaults = VIT_ADAMW | {"lr": 1.875e-4, "weight_decay": 0.05, "warmup_epochs": 10}

    backbone_kwargs = {"mask_token": True}

    def extractor(self, kind: str, source=None):
        return beit_features(self, kind, source)

    def __init__(self, backbone: nn.Module, image_size: int, cfg: BEiTConfig):
        if not cfg.tokenizer:
            raise UserError(
                "BEiT needs --tokenizer: a dvae run directory (selfsup train --method dvae)"
            )
        if not is_vit(backbone):
            raise UserError(
                f"BEiT needs a ViT backbone (vit_tiny, vit_small, ...), not {backbone.arch.get('name')}"
            )
        super().__init__(backbone, cfg)
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        tok_size = self.tokenizer.arch.get("image_size")
        if self.tokenizer.patch_size != backbone.patch_size or tok_size != image_size:
            raise UserError(
                f"--tokenizer {cfg.tokenizer}: tokens every {self.tokenizer.patch_size} px at "
                f"{tok_size} px, but the ViT has {backbone.patch_size} px patches at {image_size} px"
            )
        self.head = nn.Linear(backbone.embed_dim, self.tokenizer.codebook)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.spec = augment.crop_view(image_size, cfg.crop_scale_min)

    def train(self, mode: bool = True) -> BEiT:
        super().train(mode)
        self.tokenizer.eval()  # frozen: always eval
        return self

    def masks(self, x: Tensor) -> Tensor:
        p = self.backbone.patch_size
        gh, gw = x.shape[-2] // p, x.shape[-1] // p
        low = self.cfg.min_block or None

        def draw(total: int, g: torch.Generator) -> Tensor:
            return block_masks(total, gh, gw, self.cfg.mask_ratio, g, min_patches=low)

        return self.draw_global(draw, x.shape[0], 211).to(x.device)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        mask = self.masks(x)
        with torch.no_grad():
            target = self.tokenizer.tokens(x)
        logits = self.head(self.backbone.forward_tokens(x, mask=mask)[:, 1:])
        loss = masked_token_loss(logits, target, mask)
        with torch.no_grad():
            acc = (logits[mask].argmax(-1) == target[mask]).float().mean()
        return {"loss": loss, "token_accuracy": acc}


def beit_features(method: BEiT, kind: str, source=None):
    """The ViT backbone ([CLS] after the norm; dense: patch tokens), built through load_method:
    the generic backbone loader rejects the [MASK] token a masking ViT's checkpoint holds."""
    from engine.features import FeatureExtractor

    size = method.backbone.arch.get("image_size")
    return FeatureExtractor(method.backbone, image_size=size, source=str(source))
