"""Instance discrimination with a memory bank (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"): every training image is its own class. A
non-parametric softmax compares the L2-normalised 128-d embedding f_i with a memory bank of every
image's embedding, P(i | f) = exp(v_i . f / T) / Z with T = 0.07; the bank entry is updated with
momentum 0.5 and renormalised after each step. With many images the softmax is approximated by
NCE against m = 4096 noise entries drawn uniformly, Z estimated once (Monte Carlo, first step)
and then fixed; with few the exact softmax over the bank is used. The paper's evaluation is the
weighted kNN (k = 200, T = 0.07) that `selfsup eval knn` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine import augment
from engine.config import opt
from engine.distributed import all_reduce_mean, gather_no_grad
from engine.errors import UserError
from engine.losses import fp32
from engine.methods.base import RESNET_SGD, Method


@dataclass
class InstDiscConfig:
    feat_dim: int = opt(128, "embedding size (paper 128)")
    temperature: float = opt(0.07, "softmax temperature (paper 0.07)")
    negatives: int = opt(4096, "NCE noise samples per image (paper 4096)")
    exact_below: int = opt(
        8192, "use the exact softmax over the whole bank when it holds at most this many images"
    )
    bank_momentum: float = opt(0.5, "bank update v <- m v + (1 - m) f, renormalised (paper 0.5)")


@fp32
def nce_loss(pos: torch.Tensor, neg: torch.Tensor, z: torch.Tensor, n: int) -> torch.Tensor:
    """NCE of the paper's eq. 7 from exp-scores: pos [B] = exp(v_i . f_i / T), neg [B, m]
    = exp(v_j . f_i / T) of noise entries drawn with P_n = 1/n. P = score / Z and
    h = P / (P + m P_n); the loss is -log h(data) - sum log(1 - h(noise)), batch mean."""
    m = neg.shape[1]
    noise = m / n  # m * P_n
    p_pos, p_neg = pos / z, neg / z
    data = torch.log(p_pos / (p_pos + noise))
    noise_term = torch.log(noise / (p_neg + noise)).sum(1)
    return -(data + noise_term).mean()


@fp32
def exp_scores(
    f: torch.Tensor, own: torch.Tensor, noise: torch.Tensor, t: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(v . f / T) of each image's own bank entry [B] and of its noise entries [B, m], in
    float32 under any autocast (the einsum would run as a bf16 bmm: a cosine of 0.9 off by up
    to 0.002, its exp-score at T = 0.07 by up to 3%)."""
    pos = torch.exp((own * f).sum(1) / t)
    return pos, torch.exp(torch.einsum("bd,bmd->bm", f, noise) / t)


@fp32
def exact_loss(f: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, t: float) -> torch.Tensor:
    """The non-parametric softmax itself (eq. 2): cross-entropy of f . bank^T / T on its index."""
    return F.cross_entropy(f @ bank.t() / t, index)


class InstDisc(Method):
    """Instance discrimination: every image is a class; non-parametric softmax over a memory bank
    (NCE)"""

    method_name, family, config_cls = "instdisc", "contrastive", InstDiscConfig
    # paper: SGD lr 0.03 at batch 256, momentum 0.9, weight decay 5e-4. At <= 32 px the authors'
    # CIFAR script (lemniscate.pytorch cifar.py): batch 128 at lr 0.03 (0.06 per 256 here), T 0.1
    defaults = RESNET_SGD | {
        "lr": 0.03, "weight_decay": 5e-4,
        "small_image": {
            "backbone": "resnet18_w32", "batch_size": 128, "lr": 0.06,
            "method_args": {"temperature": 0.1},
        },
    }  # fmt: skip

    def __init__(self, backbone: nn.Module, image_size: int, cfg: InstDiscConfig):
        super().__init__(backbone, cfg)
        self.projector = nn.Linear(backbone.embed_dim, cfg.feat_dim)
        # the paper's views: crop (0.2, 1), grayscale 0.2, colour jitter 0.4 each, flip; no blur
        self.spec = augment.ViewSpec(
            size=image_size, scale=(0.2, 1.0), jitter_p=1.0, hue=0.4, gray_p=0.2, blur_p=0.0
        )
        self.register_buffer("bank", torch.empty(0, cfg.feat_dim))
        self.register_buffer("z", torch.zeros(()))  # NCE's normalising constant, once estimated

    def on_epoch_start(self, epoch: int, trainer) -> None:
        n = len(trainer.dataset)
        if self.bank.shape[0] != n:  # first epoch (a resumed run loads its bank instead)
            g = torch.Generator().manual_seed(trainer.cfg.seed)
            bank = F.normalize(torch.randn(n, self.cfg.feat_dim, generator=g), dim=1)
            self.bank = bank.to(self.projector.weight.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "bank"  # its length is the dataset size, unknown when built
        if key in state_dict:
            self.bank = torch.empty_like(state_dict[key], device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.bank.shape[0]
        if n == 0:
            raise UserError("InstDisc: no memory bank yet; on_epoch_start must run first")
        (x,) = self.make_views(batch, [self.spec])
        f = F.normalize(self.projector(self.backbone(x)).float(), dim=1)
        index = batch["index"].to(f.device).long()
        t = self.cfg.temperature
        if n <= self.cfg.exact_below:
            loss = exact_loss(f, self.bank, index, t)
        else:
            m = self.cfg.negatives
            noise = self.draw_global(
                lambda b, g: torch.randint(0, n, (b, m), generator=g, device=g.device),
                f.shape[0],
                salt=7,
                device=f.device,
            )
            pos, neg = exp_scores(f, self.bank[index], self.bank[noise], t)
            if self.z == 0:  # Z ~ n E_j[exp(v_j . f / T)], from the first batch, then fixed
                self.z.fill_(float(all_reduce_mean(neg.mean().detach()) * n))
            loss = nce_loss(pos, neg, self.z, n)
        self._pending = (index, f.detach())
        return {"loss": loss}

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        index, f = self._pending
        index, f = gather_no_grad(index), gather_no_grad(f)  # every process keeps the same bank
        m = self.cfg.bank_momentum
        self.bank[index] = F.normalize(self.bank[index] * m + f * (1 - m), dim=1)
