"""Colorization as tracking (Vondrick et al. 2018, "Tracking Emerges by Colorizing Videos").

The network sees grayscale frames only. Colours live in Lab; the ab plane is quantised by k-means
(16 clusters, fit on training frames at the first epoch). A ResNet at output stride 8 and a small
head embed every position of the reference frames (f_i) and of the target frame (f_j);
A_ij = softmax_i(f_i . f_j / T) points each target position at reference positions, and the
predicted colour distribution y_j = sum_i A_ij c_i copies the references' (one-hot) colours.
Loss: cross-entropy of y_j against the target's true colour cluster. Copying is the only way
to colour the target, so the pointer learns to follow regions through time, and the embedding
then propagates masks exactly like any other dense feature (`NetFeatures` over `net`).

Paper: 3 reference frames, predict the 4th; 256x256 input -> 32x32 embeddings of 64 dims;
ResNet-18 + 3D convolutions, Adam lr 1e-3, batch 32. Here: a 2D head (3x3 conv + 1x1 conv)
instead of the 3D convolutions, 64 px input -> 8x8 grid by default (scaled to small data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.augment import normalize
from engine.color import gray_rgb, rgb_to_lab
from engine.config import opt
from engine.errors import UserError
from engine.kmeans import assign, kmeans
from engine.losses import fp32
from video.methods.common import ClipSampling, NetFeatures, VideoMethod, dilated_resnet

NAME = "colorization_video"


@dataclass
class ColorizationVideoConfig(ClipSampling):
    n_ref: int = opt(3, "reference frames per target (paper: 3, predict the 4th)")
    clusters: int = opt(16, "k-means colour clusters in ab (paper: 16)")
    embed_dim: int = opt(64, "embedding dimension (paper: 64)")
    temperature: float = opt(1.0, "softmax temperature of the pointer during training")
    kmeans_frames: int = opt(256, "training frames sampled to fit the colour clusters")
    crop_scale_min: float = opt(0.6, "random-resized-crop lower scale, shared by a clip's frames")

    @property
    def clip_len(self) -> int:
        return self.n_ref + 1


class ColorizationNet(nn.Module):
    """Gray frame -> [B, D, H/8, W/8] embedding: ResNet trunk at stride 8 + conv head."""

    def __init__(self, backbone: nn.Module, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        c = backbone.embed_dim
        self.head = nn.Sequential(
            nn.Conv2d(c, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, embed_dim, 1),
        )
        self.stride = backbone.stride

    def forward(self, rgb01: Tensor) -> Tensor:
        """rgb01: float [B, 3, H, W] in [0, 1]; the colour is removed here."""
        return self.head(self.backbone.forward_dense(normalize(gray_rgb(rgb01))))


@fp32
def pointer_colorization_loss(
    ref: Tensor, tgt: Tensor, ref_ids: Tensor, tgt_ids: Tensor, k: int, temperature: float
) -> tuple[Tensor, Tensor]:
    """ref [B, R, D] reference embeddings (all reference frames' positions), tgt [B, N, D],
    ref_ids [B, R] / tgt_ids [B, N] colour clusters. Returns (mean cross-entropy, accuracy)."""
    attn = torch.softmax(torch.einsum("bnd,brd->bnr", tgt, ref) / temperature, dim=-1)
    colours = F.one_hot(ref_ids, k).to(attn.dtype)  # [B, R, K]
    pred = torch.bmm(attn, colours).clamp(min=1e-8)  # [B, N, K], rows sum to 1
    loss = F.nll_loss(pred.log().flatten(0, 1), tgt_ids.flatten())
    acc = (pred.argmax(-1) == tgt_ids).float().mean()
    return loss, acc


class ColorizationVideo(VideoMethod):
    """Colorization as tracking: colour a gray frame by pointing into colour reference frames
    (Vondrick 2018)"""

    method_name, config_cls = NAME, ColorizationVideoConfig
    produces = ("dense",)  # its embedding network is what tracks
    # Adam lr 1e-3 at batch 32 in the paper = 8e-3 per 256 with linear scaling
    defaults = VideoMethod.defaults | {
        "backbone": "resnet18",
        "image_size": 64,
        "lr": 8e-3,
        "weight_decay": 1e-4,
    }

    @classmethod
    def build(cls, cfg, m: ColorizationVideoConfig) -> ColorizationVideo:
        return cls(dilated_resnet(cfg, NAME), cfg.image_size, m)

    def extractor(self, kind: str, source=None):
        return NetFeatures(self, self.net, str(source))

    def __init__(self, backbone: nn.Module, image_size: int, cfg: ColorizationVideoConfig):
        super().__init__()
        self.cfg = cfg
        self.net = ColorizationNet(backbone, cfg.embed_dim)
        self.backbone = self.net.backbone
        self.spec = augment.crop_view(image_size, cfg.crop_scale_min, normalize=False)
        self.register_buffer("centroids", torch.zeros(cfg.clusters, 2))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # ---- colour clusters ------------------------------------------------------------------
    def fit_colors(self, frames01: Tensor, seed: int = 0, max_pixels: int = 200_000) -> None:
        """k-means of the ab values of frames [N, 3, H, W] in [0, 1]."""
        ab = rgb_to_lab(frames01.float())[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2)
        g = torch.Generator().manual_seed(seed)
        if ab.shape[0] > max_pixels:
            ab = ab[torch.randperm(ab.shape[0], generator=g)[:max_pixels].to(ab.device)]
        res = kmeans(ab, self.cfg.clusters, iters=30, seed=seed)
        self.centroids.copy_(res.centroids.to(self.centroids))
        self.fitted.fill_(True)

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if bool(self.fitted):
            return
        ds = trainer.dataset
        rng = np.random.default_rng(trainer.cfg.seed)
        n_clips = min(len(ds), max(1, self.cfg.kmeans_frames // self.cfg.clip_len))
        clips = [ds[int(i)]["clip"] for i in rng.choice(len(ds), n_clips, replace=False)]
        frames = torch.cat(clips).float() / 255
        self.fit_colors(frames.to(self.centroids.device), seed=trainer.cfg.seed)

    def color_ids(self, rgb01: Tensor, hw: tuple[int, int]) -> Tensor:
        """Nearest cluster of the ab colour averaged over each feature cell: long [B, h, w]."""
        ab = F.adaptive_avg_pool2d(rgb_to_lab(rgb01)[:, 1:], hw)
        ids, _ = assign(ab.permute(0, 2, 3, 1).reshape(-1, 2), self.centroids)
        return ids.view(rgb01.shape[0], *hw)

    # ---- training -------------------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        clips = batch["clip"]  # uint8 [B, T, 3, H, W]
        b, t = clips.shape[:2]
        if t < 2:
            raise UserError(f"colorization needs clips of at least 2 frames, got {t}")
        (x,) = self.make_views(clips, [self.spec])  # [B, T, 3, S, S] in [0, 1], one crop per clip
        frames = x.flatten(0, 1)
        if not bool(self.fitted):  # used outside the trainer: fit on this batch
            self.fit_colors(frames.detach())
        f = self.net(frames)  # [B*T, D, h, w]
        d, h, w = f.shape[1:]
        with torch.no_grad():
            ids = self.color_ids(frames.float(), (h, w)).view(b, t, h * w)
        f = f.view(b, t, d, h * w).transpose(2, 3)  # [B, T, hw, D]
        ref, tgt = f[:, :-1].flatten(1, 2), f[:, -1]
        loss, acc = pointer_colorization_loss(
            ref, tgt, ids[:, :-1].flatten(1), ids[:, -1], self.cfg.clusters, self.cfg.temperature
        )
        return {"loss": loss, "color_acc": acc}
