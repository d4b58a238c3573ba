"""Dense Object Nets (Florence, Manuelli and Tedrake 2018, "Dense Object Nets: Learning Dense
Visual Object Descriptors By and For Robotic Manipulation").

A fully-convolutional network maps an image to a D-dimensional descriptor per pixel (a ResNet
at stride 8, a 1x1 head, bilinear upsampling to the image). It is trained with the pixel-wise
contrastive loss on pairs of images with known correspondences:

  L_match    = 1/N_m  sum_matches     ||d_a(u_a) - d_b(u_b)||^2
  L_nonmatch = 1/N_hn sum_nonmatches  max(0, M - ||d_a(u_a) - d_b(u_b')||)^2

with margin M = 0.5 and the non-match term divided by the number of hard negatives N_hn (those
inside the margin), the "scaling by hard negatives" of the paper's code. The paper gets its
correspondences from 3D reconstruction of a robot's RGB-D scans; a user's videos have none, so
pairs come from what the issue asks for: a random homography of a frame (rotation and perspective,
exact correspondences) and two frames `frame_stride` apart with Farneback optical flow kept where
forward and backward flows agree. Each image of a pair gets its own colour jitter, so matching
must not rely on exact colours. Evaluated by PCK of nearest-descriptor matches on held-out
warped pairs and by keypoint tracking on the sample video (`selfsup eval correspondence`).

Paper: ResNet-34 FCN, D = 3 (up to 16), 5000 matches and 150 non-matches per match at 640x480,
Adam lr 1e-4, weight decay 1e-4. Here: ResNet-18 at stride 8, D = 32, 256 matches and the
paper's 150 non-matches per match at 64 px. D = 32 with 150 non-matches tracked the sample's
keypoints far better than D = 16 with 64 (PCK@8 0.55 vs 0.33 after the same 400 steps on DAVIS,
docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.augment import normalize
from engine.config import opt
from engine.errors import UserError
from engine.losses import fp32
from video import correspondence as corr
from video.methods.common import ClipSampling, NetFeatures, VideoMethod, dilated_resnet

NAME = "dense_object_nets"


@dataclass
class DenseObjectNetsConfig(ClipSampling):
    descriptor_dim: int = opt(32, "descriptor size D (paper: 3 for display, up to 16)")
    margin: float = opt(0.5, "non-match margin M (paper 0.5)")
    matches: int = opt(256, "matches sampled per image pair (paper 5000 at 640x480)")
    nonmatches_per_match: int = opt(150, "non-matches per match (paper 150)")
    nonmatch_min_px: float = opt(2.0, "a non-match lies at least this far from the true match")
    homography_p: float = opt(0.5, "share of pairs made by a random homography (rest: flow)")
    homography_strength: float = opt(0.2, "corner displacement, a fraction of the half-width")
    max_rotation: float = opt(30.0, "rotation of the homography pairs, degrees")
    jitter: float = opt(0.3, "colour jitter (brightness/contrast/saturation) per image")

    @property
    def clip_len(self) -> int:
        return 2


class DescriptorNet(nn.Module):
    """RGB [B, 3, H, W] (normalised) -> descriptors [B, D, H/s, W/s]; read at pixels by bilinear
    interpolation (the paper upsamples the map to the image)."""

    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        self.backbone, self.stride = backbone, backbone.stride
        self.head = nn.Conv2d(backbone.embed_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone.forward_dense(x))


@fp32
def pixelwise_contrastive_loss(
    da: Tensor, db: Tensor, dneg: Tensor, weight: Tensor, neg_ok: Tensor, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """da, db [B, P, D] descriptors at matching pixels; dneg [B, P, K, D] at non-matches of each
    match; weight [B] (0 for a pair without correspondences), neg_ok [B, P, K] (False: too near
    the match). Returns (total, match term, non-match term)."""
    w = weight[:, None].expand(da.shape[:2])
    match = ((da - db).pow(2).sum(-1) * w).sum() / w.sum().clamp(min=1)
    dist = (da[:, :, None] - dneg).norm(dim=-1)
    hinge = (margin - dist).clamp(min=0).pow(2) * neg_ok * w[..., None]
    hard = ((hinge > 0).sum()).clamp(min=1)
    nonmatch = hinge.sum() / hard
    return match + nonmatch, match, nonmatch


class DenseObjectNets(VideoMethod):
    """Dense Object Nets: per-pixel descriptors from a pixel-wise contrastive loss on homography and
    optical-flow correspondences"""

    method_name, config_cls = NAME, DenseObjectNetsConfig
    produces = ("dense",)  # the descriptor map is the model's output
    # paper: Adam lr 1e-4, weight decay 1e-4 (batch 1 pair); scaled to batch 32 pairs
    defaults = VideoMethod.defaults | {
        "backbone": "resnet18",
        "image_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
    }

    @classmethod
    def build(cls, cfg, m: DenseObjectNetsConfig) -> DenseObjectNets:
        return cls(dilated_resnet(cfg, NAME), cfg.image_size, m)  # the FCN at stride 8

    def extractor(self, kind: str, source=None):
        return NetFeatures(self, self.net, str(source), True)

    def __init__(self, backbone: nn.Module, image_size: int, cfg: DenseObjectNetsConfig):
        super().__init__()
        self.cfg, self.size = cfg, image_size
        self.net = DescriptorNet(backbone, cfg.descriptor_dim)
        self.backbone = self.net.backbone
        j = cfg.jitter
        # colour only: geometry comes from the homography / the flow, so it stays known
        self.spec = augment.ViewSpec(
            size=image_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.8,
            brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4), gray_p=0.1, blur_p=0.0,
            normalize=False,
        )  # fmt: skip

    def _pairs(self, clips: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(image a, image b in [0, 1], matching pixels in a and b [B, P, 2], weight [B])."""
        b, s, dev = clips.shape[0], self.size, clips.device
        frames = clips.flatten(0, 1)
        if frames.shape[-1] != s:
            frames = F.interpolate(frames.float(), size=(s, s), mode="bilinear", antialias=True)
            frames = frames.round().clamp(0, 255).to(torch.uint8)
        frames = frames.view(b, 2, 3, s, s)
        use_h = self.draw_global(
            lambda n, g: torch.rand(n, generator=g, device=g.device) < self.cfg.homography_p,
            b, salt=11, device=dev,
        )  # fmt: skip
        hom = self.draw_global(
            lambda n, g: corr.random_homographies(
                n, self.cfg.homography_strength, self.cfg.max_rotation, g, device=g.device
            ),
            b, salt=12, device=dev,
        )  # fmt: skip
        u = self.draw_global(
            lambda n, g: torch.rand(n, self.cfg.matches, generator=g, device=g.device),
            b, salt=13, device=dev,
        )  # fmt: skip
        first = frames[:, 0]
        warped, valid_h, match_h = corr.homography_pairs(first.float(), hom)
        valid_f, match_f = corr.flow_pairs(first, frames[:, 1])
        a = torch.where(use_h[:, None, None, None], warped / 255, first.float() / 255)
        bimg = torch.where(use_h[:, None, None, None], first.float() / 255, frames[:, 1] / 255)
        valid = torch.where(use_h[:, None, None], valid_h, valid_f)
        pa = corr.sample_valid_pixels(valid, u)
        pb = torch.where(use_h[:, None, None], match_h(pa), match_f(pa))
        weight = (valid.flatten(1).sum(1) > 0).float()
        return a, bimg, pa, pb, weight

    def _jitter(self, x: Tensor, salt: int) -> Tensor:
        """Each image of a pair its own colour jitter (make_views would draw one per sample)."""

        def draw(n: int, g: torch.Generator) -> augment.ViewParams:
            return augment.sample_view_params(n, self.spec, x.device, generator=g, image_hw=(1, 1))

        return augment.apply_view(x, self.spec, self.draw_global(draw, x.shape[0], salt, x.device))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        clips = batch["clip"]  # uint8 [B, T, 3, H, W]
        if clips.shape[1] < 2:
            raise UserError(f"{NAME} needs clips of 2 frames, got {clips.shape[1]}")
        a, b, pa, pb, weight = self._pairs(clips[:, :2])
        n, p, k = a.shape[0], pa.shape[1], self.cfg.nonmatches_per_match
        xa, xb = self._jitter(a, salt=21), self._jitter(b, salt=22)
        da_map, db_map = self.net(normalize(torch.cat([xa, xb]))).split(n)
        s = self.size
        # non-matches: random pixels of image b, read from the descriptor image upsampled to
        # full resolution (the paper's); a gather there is far cheaper to differentiate than
        # 10^5 bilinear samples of the small map
        neg = self.draw_global(
            lambda m, g: torch.randint(0, s * s, (m, p * k), generator=g, device=g.device),
            n, salt=14, device=a.device,
        )  # fmt: skip
        neg_xy = torch.stack([neg % s, neg // s], -1).float() + 0.5
        neg_ok = (neg_xy.view(n, p, k, 2) - pb[:, :, None]).norm(dim=-1) >= self.cfg.nonmatch_min_px
        up = F.interpolate(db_map, size=(s, s), mode="bilinear", align_corners=False).flatten(2)
        dneg = torch.gather(up, 2, neg[:, None].expand(-1, up.shape[1], -1))
        dneg = dneg.transpose(1, 2).reshape(n, p, k, -1)
        da = corr.sample_descriptors(da_map, pa, (s, s))
        db = corr.sample_descriptors(db_map, pb, (s, s))
        loss, match, nonmatch = pixelwise_contrastive_loss(
            da, db, dneg, weight, neg_ok, self.cfg.margin
        )
        return {"loss": loss, "match": match, "nonmatch": nonmatch}
