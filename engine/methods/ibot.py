"""iBOT (Zhou et al. 2022): DINO's [CLS] self-distillation plus masked image modelling against
an online tokenizer, the EMA teacher. The teacher sees the unmasked global crops; the student
sees them block-masked (mask token) and must match the teacher's distribution over "visual
words" for every masked patch. Separate centers for [CLS] and patch outputs, each sharpened with
its own teacher temperature (both warmed up from 0.04).

Masking as in the paper's "random MIM": each global crop is masked with probability 0.5, at a
ratio drawn from U(0.1, 0.5), in BEiT blocks. AttMask (Kakogeorgiou et al. 2022) replaces the
blocks by the patches the teacher's [CLS] attends to most ("high"), least ("low"), or most minus
a few revealed hints ("hint"), from the same teacher pass that gives the targets.

Heads: `shared_head=true` (the paper's ViT-S setting) uses one DINO head for [CLS] and patches;
false gives the patch tokens a whole second DINO head of `patch_out_dim` outputs (the official
code shares the head MLP and separates only the last layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.backbones import is_vit
from engine.config import opt
from engine.errors import UserError
from engine.losses import dino_loss, fp32
from engine.masking import attention_masks, block_masks, cls_attention, tokens_and_attention
from engine.methods.base import ema_center, frozen_copy
from engine.methods.dino import DINO, DINOConfig, DINOHead


@dataclass
class IBOTConfig(DINOConfig):
    patch_out_dim: int = opt(2048, "outputs of the patch head when not shared (paper 8192)")
    shared_head: bool = opt(True, "one head for [CLS] and patch tokens (paper ViT-S default)")
    teacher_patch_temp: float = opt(0.07, "teacher temperature of patch tokens after warm-up")
    warmup_teacher_patch_temp: float = opt(0.04, "teacher patch temperature at the start")
    center_momentum_patch: float = opt(0.9, "EMA rate of the patch center")
    lambda_cls: float = opt(1.0, "weight of the [CLS] distillation loss")
    lambda_patch: float = opt(1.0, "weight of the masked patch loss")
    masking: str = opt(
        "block",
        "block | attmask_high | attmask_low | attmask_hint",
        choices=["block", "attmask_high", "attmask_low", "attmask_hint"],
    )
    mask_prob: float = opt(0.5, "probability that a global crop is masked at all")
    pred_ratio: float = opt(0.3, "mean masking ratio of a masked crop")
    pred_ratio_var: float = opt(0.2, "ratio drawn from U(pred_ratio - var, pred_ratio + var)")
    hint_max: float = opt(
        0.1, "AttMask-Hint: hints are drawn among this top fraction of attended patches"
    )
    # iBOT ViT-S/16 recipe: crops (0.25, 1) and (0.05, 0.25), 10 local crops, free last layer
    global_scale_min: float = opt(0.25, "global crop scale lower bound")
    local_scale_max: float = opt(0.25, "local crop scale upper bound")
    n_local: int = opt(10, "local crops per image (iBOT ViT-S: 10)")
    norm_last_layer: bool = opt(False, "fix the last layer's weight-norm gain (iBOT ViT-S: no)")


@fp32
def ibot_patch_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    masks: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Masked-token distillation: for each global crop, cross-entropy between the centred,
    sharpened teacher patch distribution and the student's, averaged over the masked patches of
    each image (an unmasked image contributes 0), then over images and crops.
    student/teacher: [B, N, K] per crop; masks: bool [B, N] per crop."""
    total = 0.0
    for s, t, m in zip(student, teacher, masks):
        tp = F.softmax((t.detach().float() - center) / teacher_temp, dim=-1)
        ce = torch.sum(-tp * F.log_softmax(s.float() / student_temp, dim=-1), dim=-1)  # [B, N]
        mf = m.float()
        total = total + ((ce * mf).sum(-1) / mf.sum(-1).clamp(min=1.0)).mean()
    return total / len(student)


class IBOT(DINO):
    """iBOT: DINO [CLS] distillation + masked patch-token distillation from an EMA teacher (ViT)

    DINO (the [CLS] part, schedules, optimiser hooks) plus the masked patch distillation."""

    method_name, family, config_cls = "ibot", "masked", IBOTConfig
    # DINO's ViT recipe; not its small-image ResNet one (iBOT masks patch tokens: a ViT only)
    defaults = {k: v for k, v in DINO.defaults.items() if k != "small_image"}

    backbone_kwargs = {"mask_token": True, "drop_path": 0.1}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: IBOTConfig):
        if not is_vit(backbone):
            raise UserError(
                f"iBOT needs a ViT backbone (vit_tiny, vit_small, ...), not {backbone.arch.get('name')}"
            )
        super().__init__(backbone, image_size, cfg)
        d = backbone.embed_dim
        self.patch_head = None
        if not cfg.shared_head:
            self.patch_head = DINOHead(
                d, cfg.patch_out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.norm_last_layer
            )
        self.teacher_patch_head = None if cfg.shared_head else frozen_copy(self.patch_head)
        patch_dim = cfg.out_dim if cfg.shared_head else cfg.patch_out_dim
        self.register_buffer("center_patch", torch.zeros(1, 1, patch_dim))
        self.register_buffer("teacher_patch_temp", torch.tensor(cfg.warmup_teacher_patch_temp))

    def heads(
        self, tokens: torch.Tensor, teacher: bool, freeze: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[CLS] logits [B, K] and patch logits [B, N, K'] from output tokens [B, 1+N, D]."""
        head = self.teacher_head if teacher else self.head
        patch_head = self.teacher_patch_head if teacher else self.patch_head
        if patch_head is None:
            out = head(tokens, freeze)
            return out[:, 0], out[:, 1:]
        return head(tokens[:, 0], freeze), patch_head(tokens[:, 1:], freeze)

    def masks(self, glob: torch.Tensor, attn: torch.Tensor | None) -> torch.Tensor:
        """bool [2B, N] for the two global crops, drawn for the global batch (DDP = 1 process)."""
        c, p = self.cfg, self.backbone.patch_size
        b, gh, gw = glob.shape[0] // 2, glob.shape[-2] // p, glob.shape[-1] // p

        def per_image(t: torch.Tensor, total: int) -> torch.Tensor:  # [2T, ...] -> [T, 2, ...]
            return t.view(2, total, *t.shape[1:]).transpose(0, 1)

        def draw(total: int, g: torch.Generator):
            if attn is None:
                m = block_masks(2 * total, gh, gw, c.pred_ratio, g, c.pred_ratio_var, c.mask_prob)
                return per_image(m, total)
            # AttMask: one ratio per batch, each crop masked with probability mask_prob.
            ratio = c.pred_ratio + c.pred_ratio_var * (2 * torch.rand((), generator=g) - 1)
            use = torch.rand(2 * total, generator=g) < c.mask_prob
            noise = torch.rand(2 * total, gh * gw, generator=g)
            return ratio, per_image(use, total), per_image(noise, total)

        def crops(t: torch.Tensor) -> torch.Tensor:  # [B, 2, ...] -> [2B, ...], crop-major
            return t.transpose(0, 1).flatten(0, 1).to(glob.device)

        if attn is None:
            return crops(self.draw_global(draw, b, salt=303))
        ratio, use, noise = self.draw_global(draw, b, salt=303)
        mode = c.masking.removeprefix("attmask_")
        m = attention_masks(attn, float(ratio), mode, c.hint_max, noise=crops(noise))
        return m & crops(use)[:, None]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.cfg
        views = self.make_views(batch, self.specs)
        glob = torch.cat(views[:2])
        freeze = bool(self.freeze_last)
        with torch.no_grad():
            if c.masking.startswith("attmask"):
                t_tokens, attn = tokens_and_attention(self.teacher_backbone, glob)
                attn = cls_attention(attn)
            else:
                t_tokens, attn = self.teacher_backbone.forward_tokens(glob), None
            t_cls, t_patch = self.heads(t_tokens, teacher=True)
        masks = self.masks(glob, attn)
        s_cls, s_patch = self.heads(
            self.backbone.forward_tokens(glob, mask=masks), teacher=False, freeze=freeze
        )
        student_cls = list(s_cls.chunk(2)) + self.local_outputs(views, freeze)
        loss_cls = dino_loss(
            student_cls, list(t_cls.chunk(2)), self.center, c.student_temp, float(self.teacher_temp)
        )
        loss_patch = ibot_patch_loss(
            list(s_patch.chunk(2)),
            list(t_patch.chunk(2)),
            list(masks.chunk(2)),
            self.center_patch,
            c.student_temp,
            float(self.teacher_patch_temp),
        )
        self.update_centers(t_cls, t_patch)
        loss = c.lambda_cls * loss_cls + c.lambda_patch * loss_patch
        return {
            "loss": loss,
            "loss_cls": loss_cls.detach(),
            "loss_patch": loss_patch.detach(),
            "mask_ratio": masks.float().mean(),
        }

    @torch.no_grad()
    def update_centers(self, t_cls: torch.Tensor, t_patch: torch.Tensor) -> None:
        self.update_center(t_cls)
        patch_mean = t_patch.float().mean(1).mean(0, keepdim=True).unsqueeze(1)
        ema_center(self.center_patch, patch_mean, self.cfg.center_momentum_patch)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = super().ema_pairs()
        if self.patch_head is not None:
            pairs.append((self.teacher_patch_head, self.patch_head))
        return pairs

    def on_step_end(self, step: int, total_steps: int) -> None:
        super().on_step_end(step, total_steps)
        c = self.cfg
        self.teacher_patch_temp.fill_(
            self.warmup(step, total_steps, c.warmup_teacher_patch_temp, c.teacher_patch_temp)
        )
