"""DINO (Caron et al. 2021): a student matches the centred, sharpened output of an EMA teacher
across multi-crop views. The teacher sees only the two global crops; the student sees all."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine import augment
from engine.backbones.vit import set_drop_path
from engine.config import opt
from engine.losses import dino_loss
from engine.methods.base import (
    CIFAR_LARS,
    VIT_ADAMW,
    Method,
    clip_per_parameter,
    cosine_momentum,
    ema_center,
    ema_update,
    frozen_copy,
)
from engine.optim import schedule_groups


@dataclass
class DINOConfig:
    out_dim: int = opt(2048, "prototypes K of the head (paper 65536; 2048 for small data)")
    hidden_dim: int = opt(1024, "head MLP hidden width (paper 2048)")
    bottleneck_dim: int = opt(256, "L2-normalised bottleneck (paper 256)")
    n_local: int = opt(6, "local crops per image (paper 8-10)")
    local_size: int = opt(0, "local crop size in pixels (0 = 96/224 of the image size)")
    student_temp: float = opt(0.1, "student softmax temperature")
    teacher_temp: float = opt(0.07, "teacher temperature after warm-up")
    warmup_teacher_temp: float = opt(0.04, "teacher temperature at the start")
    teacher_temp_warmup_frac: float = opt(
        0.3,
        "fraction of the steps for the linear teacher-temperature warm-up (paper 30 of 100-300 epochs)",
    )
    ema_momentum: float = opt(0.996, "base teacher momentum, cosine schedule to 1")
    center_momentum: float = opt(0.9, "EMA rate of the teacher center")
    freeze_last_layer_frac: float = opt(
        0.01, "fraction of the steps with the head's last layer frozen (paper 1 epoch)"
    )
    norm_last_layer: bool = opt(True, "fix the weight-norm gain of the last layer to 1 (stabler)")
    use_bn_in_head: bool = opt(False, "BatchNorm after the head's hidden layers (DINO option)")
    global_scale_min: float = opt(0.4, "global crop scale lower bound (DINO repository: 0.4)")
    local_scale_max: float = opt(0.4, "local crop scale upper bound (DINO repository: 0.4)")
    warmup_frac: float = opt(0.1, "learning-rate warm-up as a fraction of the run (10/100)")
    weight_decay_end: float = opt(0.4, "weight decay at the end of its cosine schedule (0.4)")


class DINOHead(nn.Module):
    """3-layer GELU MLP (BatchNorm in it with use_bn) -> L2-normalised bottleneck ->
    weight-normalised linear layer (no bias)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ):
        super().__init__()
        bn = (lambda: [nn.BatchNorm1d(hidden_dim)]) if use_bn else list
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), *bn(), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), *bn(), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )  # fmt: skip
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # weight = g * v / ||v|| per output unit; g is fixed to 1 when norm_last_layer.
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_v, std=0.02)
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def forward(self, x: torch.Tensor, freeze_last: bool = False) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        v, g = (
            (self.last_v.detach(), self.last_g.detach())
            if freeze_last
            else (self.last_v, self.last_g)
        )
        # the prototype logits go through a 0.04-0.1 temperature: computed in fp32 under autocast
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), g * F.normalize(v, dim=1))


def default_local_size(image_size: int, patch: int = 8) -> int:
    """DINO's 96 px local crops for 224 px images, rounded to a multiple of the patch (>= 8)."""
    unit = max(8, patch)
    return max(unit, round(image_size * 96 / 224 / unit) * unit)


class DINO(Method):
    """DINO: self-distillation with an EMA teacher, centering, sharpening and multi-crop"""

    method_name, family, config_cls = "dino", "distillation", DINOConfig
    # At <= 32 px a half-width ResNet-18 with solo-learn's CIFAR DINO recipe (LARS lr 0.3, wd
    # 1e-6 constant, 4096 prototypes, no clipping) and the short-run teacher momentum of BYOL /
    # MoCo v3 (0.99; solo-learn's 1000 epochs use 0.9995): a ViT-tiny got 21 steps of 15 CPU
    # minutes and +0.2 kNN points. BatchNorm in the head (DINO's --use_bn_in_head): without it
    # the ResNet's pooled features (all positive, alike across images) leave the centred teacher
    # uniform, KL 0.04 after 40 steps and loss ln K after 15 minutes; with it KL stays at 0.3.
    # Two 32 px crops of scale (0.08, 1) and no local crops, as solo-learn's CIFAR DINO
    # (--num_crops_per_aug 1 1): 16 px local crops of a 32 px image carry little, and the six
    # of them cost more than the two global crops (136 steps, 6 epochs, -2.4 kNN points in 15
    # EPYC minutes with them). --n-local puts multi-crop back. Teacher temperature 0.04 without
    # warm-up, main_dino.py's defaults: warmed to 0.07 (the ViT-S recipe) the centred teacher
    # went uniform (entropy ln K, KL 0.02) within 250 steps; at 0.04 KL stayed at 0.3-0.4 and
    # 15 minutes gave kNN k=20 0.385 instead of 0.340 (docs/benchmarks.md).
    defaults = VIT_ADAMW | {
        "lr": 5e-4, "weight_decay": 0.04, "clip_grad": 3.0,
        "small_image": {
            "backbone": "resnet18_w32", **CIFAR_LARS, "lr": 0.3, "weight_decay": 1e-6,
            "clip_grad": 0.0,
            "method_args": {
                "out_dim": 4096, "ema_momentum": 0.99, "weight_decay_end": 1e-6,
                "use_bn_in_head": True, "n_local": 0, "global_scale_min": 0.08,
                "teacher_temp": 0.04, "warmup_teacher_temp": 0.04,
            },
        },
    }  # fmt: skip

    eval_backbone_prefix = "teacher_backbone."  # the teacher is the better network (paper sec. 5)
    ddp_find_unused = True  # the frozen last layer gets no gradient early on
    backbone_kwargs = {"drop_path": 0.1}  # stochastic depth in the student only (DINO ViT-S)

    def __init__(self, backbone: nn.Module, image_size: int, cfg: DINOConfig):
        super().__init__(backbone, cfg)
        d = backbone.embed_dim
        self.head = DINOHead(
            d, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.norm_last_layer,
            cfg.use_bn_in_head,
        )  # fmt: skip
        self.teacher_backbone, self.teacher_head = frozen_copy(backbone), frozen_copy(self.head)
        set_drop_path(self.teacher_backbone, 0.0)  # the teacher is built without drop-path
        local = cfg.local_size or default_local_size(image_size, getattr(backbone, "patch_size", 8))
        self.specs = augment.dino_views(
            image_size, local, cfg.n_local, (cfg.global_scale_min, 1.0), (0.05, cfg.local_scale_max)
        )
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        # Schedules for the next step, set in on_step_end; buffers so that resume is exact.
        self.register_buffer("teacher_temp", torch.tensor(cfg.warmup_teacher_temp))
        self.register_buffer("freeze_last", torch.tensor(cfg.freeze_last_layer_frac > 0))

    def load_heads(self, state: dict[str, torch.Tensor]) -> str:
        """DINO's full checkpoints hold the teacher's head (mlp.0/2/4, last_layer.weight_g/_v):
        used for student and teacher alike when its sizes fit this run's head."""
        names = {"last_layer.weight_v": "last_v", "last_layer.weight_g": "last_g"}
        mapped = {names.get(k, k): v for k, v in state.items()}
        own = self.head.state_dict()
        if set(mapped) != set(own) or any(mapped[k].shape != v.shape for k, v in own.items()):
            out = state.get("last_layer.weight_v")
            size = f"{out.shape[0]}-d" if out is not None else "another"
            return f"new (the file's head is {size}; this run's --out-dim is {self.cfg.out_dim})"
        self.head.load_state_dict(mapped)
        self.teacher_head.load_state_dict(mapped)
        return "from the file (teacher head)"

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        views = self.make_views(batch, self.specs)
        freeze = bool(self.freeze_last)
        glob = torch.cat(views[:2])
        student = list(self.head(self.backbone(glob), freeze).chunk(2))
        student += self.local_outputs(views, freeze)
        with torch.no_grad():
            teacher_out = self.teacher_head(self.teacher_backbone(glob))
        teacher = list(teacher_out.chunk(2))
        t = float(self.teacher_temp)
        loss = dino_loss(student, teacher, self.center, self.cfg.student_temp, t)
        with torch.no_grad():  # collapse monitors (paper fig. 7): loss = H(teacher) + KL
            p = F.softmax((teacher_out - self.center) / t, dim=-1)
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        self.update_center(teacher_out)
        return {"loss": loss, "teacher_entropy": entropy, "kl": loss.detach() - entropy}

    def local_outputs(self, views: list[torch.Tensor], freeze: bool) -> list[torch.Tensor]:
        """The student head's outputs for the local crops (views 2...), one tensor per crop."""
        if len(views) <= 2:
            return []
        return list(self.head(self.backbone(torch.cat(views[2:])), freeze).chunk(len(views) - 2))

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean teacher output over the global batch."""
        ema_center(self.center, teacher_out.float().mean(0, keepdim=True), self.cfg.center_momentum)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]

    def on_step_end(self, step: int, total_steps: int) -> None:
        c = self.cfg
        m = cosine_momentum(c.ema_momentum, step, total_steps)
        for teacher, student in self.ema_pairs():
            ema_update(teacher, student, m)
        self.teacher_temp.fill_(
            self.warmup(step, total_steps, c.warmup_teacher_temp, c.teacher_temp)
        )
        self.freeze_last.fill_(step < c.freeze_last_layer_frac * total_steps)

    def warmup(self, step: int, total_steps: int, start: float, end: float) -> float:
        """Linear from `start` to `end` over the first teacher_temp_warmup_frac of the run."""
        warm = self.cfg.teacher_temp_warmup_frac * total_steps
        return start + (min(1.0, step / warm) if warm > 0 else 1.0) * (end - start)

    # ---- the optimiser side of the DINO recipe (main_dino.py), called by the trainer --------
    def on_step_start(self, step: int, total_steps: int, optimizer) -> None:
        """Learning rate: linear warm-up over warmup_frac of the run (10 of 100 epochs), then
        cosine; weight decay of the decayed group: cosine from its base (0.04) to
        weight_decay_end (0.4). Both as DINO's cosine_scheduler, per step."""
        warm = int(self.cfg.warmup_frac * total_steps)
        schedule_groups(optimizer, step, total_steps, warm, 0, self.cfg.weight_decay_end)

    def clip_gradients(self, max_norm: float) -> None:
        """DINO's utils.clip_gradients: each parameter's gradient clipped to norm max_norm on
        its own (not the global norm)."""
        clip_per_parameter(self.parameters(), max_norm)


# The DINO repository's ViT recipe (iBOT shares it): AdamW, wd 0.04 -> 0.4, clip 3.0
