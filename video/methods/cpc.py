"""Contrastive predictive coding on frame sequences (van den Oord et al. 2018), in its dense video
form (dense predictive coding, DPC, Han et al. 2019).

Each frame is encoded to z_t, one crop shared by the clip. DPC (default, `dense=True`) keeps the
encoder's feature map (z_t: [D, h, w], ResNet at stride 8) and aggregates it with a ConvGRU of
1x1 kernels into c_t; plain CPC (`dense=False`) pools z_t to a vector and uses a GRU. One linear
map W_k per step (a 1x1 convolution in the dense form) predicts z_{t+k} = W_k c_t, k = 1..K.
InfoNCE scores each prediction against every z in the batch: the true future (same video, same
position) is the positive; other time steps, other positions and other videos are negatives.
A pooled per-frame vector is blind to where things are, so it cannot see motion on its own: the
dense form is the default for that reason.

Deviation: CPC/DPC score with the raw dot product. On small batches from scratch that diverged
(loss 5 -> 48 after one Adam step in our runs), so by default z and W_k c are L2-normalised and
the score is their cosine / temperature (0.1); `normalize=False` gives the paper's score.
DPC predicts the last 3 of 8 blocks from the first 5; we predict from every context step t that
has a k-step future inside the clip (CPC's form), 8 frames, K = 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.augment import ViewSpec
from engine.config import opt
from engine.losses import fp32
from video.methods.common import ClipEmbeddingMethod, ClipSampling, eval_on_clips

NAME = "cpc"


@dataclass
class CPCConfig(ClipSampling):
    clip_len: int = opt(8, "frames per sequence (DPC: 8 blocks)")
    pred_steps: int = opt(3, "future steps predicted, one W_k each (DPC: 3)")
    hidden_dim: int = opt(256, "GRU / ConvGRU context channels")
    dense: bool = opt(True, "DPC: predict feature maps with a ConvGRU (False: pooled CPC)")
    crop_scale_min: float = opt(0.3, "random-resized-crop lower scale, shared by a clip's frames")
    normalize: bool = opt(True, "cosine scores / temperature (False: the paper's raw dot product)")
    temperature: float = opt(0.1, "InfoNCE temperature when normalize is on")


@fp32
def cpc_loss(
    z: Tensor, preds: Tensor, normalize: bool = True, temperature: float = 0.1
) -> tuple[Tensor, Tensor]:
    """z [B, T, P, D] encodings at P positions, preds [K, B, T, P, D]: preds[k-1, b, t, p]
    predicts z[b, t + k, p]. Every valid (k, b, t, p) is one InfoNCE term over all B*T*P
    encodings. Returns (mean loss, accuracy of picking the true future)."""
    kmax, b, t, p, d = preds.shape
    if normalize:
        z, preds = F.normalize(z, dim=-1), F.normalize(preds, dim=-1) / temperature
    cand = z.reshape(b * t * p, d)
    grid = torch.arange(b * t * p, device=z.device).view(b, t, p)
    losses, correct, n = [], 0.0, 0
    for k in range(1, kmax + 1):
        q = preds[k - 1, :, : t - k].reshape(-1, d)  # predictions with a future inside the clip
        if q.shape[0] == 0:
            continue
        target = grid[:, k:].reshape(-1)
        logits = q @ cand.t()
        losses.append(F.cross_entropy(logits, target, reduction="sum"))
        correct += (logits.argmax(1) == target).sum()
        n += q.shape[0]
    return torch.stack(losses).sum() / n, correct / n


def _positions(m: Tensor) -> Tensor:
    """[..., C, h, w] -> [..., h*w, C]."""
    return m.flatten(-2).transpose(-1, -2)


class ConvGRUCell(nn.Module):
    """GRU whose gates are convolutions (DPC: 1x1 kernels), run over time on feature maps."""

    def __init__(self, in_dim: int, hidden: int, kernel: int = 1):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_dim + hidden, 2 * hidden, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(in_dim + hidden, hidden, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, h: Tensor | None) -> Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        cand = torch.tanh(self.candidate(torch.cat([x, reset * h], 1)))
        return (1 - update) * h + update * cand


class CPC(ClipEmbeddingMethod):
    """CPC / DPC on frame sequences: a (Conv)GRU context predicts future frame features (InfoNCE)"""

    method_name, config_cls = NAME, CPCConfig
    # DPC: Adam lr 1e-3, weight decay 1e-5, batch 64 per 4 GPUs -> 1e-3 * 256 / 64 per 256
    defaults = ClipEmbeddingMethod.defaults | {
        "backbone": "resnet18",
        "image_size": 32,
        "lr": 4e-3,
        "weight_decay": 1e-5,
    }

    def __init__(self, backbone: nn.Module, image_size: int, cfg: CPCConfig):
        super().__init__(backbone, cfg)
        d = backbone.embed_dim
        if cfg.dense:
            self.gru = ConvGRUCell(d, cfg.hidden_dim)
            self.predictors = nn.ModuleList(
                nn.Conv2d(cfg.hidden_dim, d, 1, bias=False) for _ in range(cfg.pred_steps)
            )
        else:
            self.gru = nn.GRU(d, cfg.hidden_dim, batch_first=True)
            self.predictors = nn.ModuleList(
                nn.Linear(cfg.hidden_dim, d, bias=False) for _ in range(cfg.pred_steps)
            )
        self.spec = ViewSpec(
            size=image_size, scale=(cfg.crop_scale_min, 1.0), jitter_p=0.8, gray_p=0.2, blur_p=0.0
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, 3, S, S] normalised -> (z [B, T, P, D], context [B, T, P, H], preds [K, B, T, P, D])."""
        b, t = x.shape[:2]
        if not self.cfg.dense:
            z = self.backbone(x.flatten(0, 1)).view(b, t, -1)
            c, _ = self.gru(z)
            preds = torch.stack([w(c) for w in self.predictors])
            return z[:, :, None], c[:, :, None], preds[:, :, :, None]
        zmap = self.backbone.forward_dense(x.flatten(0, 1))  # [B*T, D, h, w]
        d, h, w = zmap.shape[1:]
        zmap = zmap.view(b, t, d, h, w)
        state, ctx = None, []
        for i in range(t):
            state = self.gru(zmap[:, i], state)
            ctx.append(state)
        c = torch.stack(ctx, 1)  # [B, T, H, h, w]
        preds = torch.stack([wk(c.flatten(0, 1)).view(b, t, d, h, w) for wk in self.predictors])
        return _positions(zmap), _positions(c), _positions(preds)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch["clip"], [self.spec])
        z, _, preds = self.encode(x)
        loss, acc = cpc_loss(z, preds, self.cfg.normalize, self.cfg.temperature)
        return {"loss": loss, "pred_acc": acc}

    @torch.no_grad()
    def clip_embedding(self, clips: Tensor) -> Tensor:
        """uint8 [B, T, 3, H, W] -> the final context c_T averaged over positions [B, H]
        (centre view, eval mode)."""
        return eval_on_clips(
            self, clips, self.spec.size, lambda x: self.encode(x)[1][:, -1].mean(1)
        )
