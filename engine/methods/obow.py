"""OBoW (Gidaris et al. 2021, "OBoW: Online Bag-of-Visual-Words Generation for Self-Supervised
Learning"), after the official code (valeoai/obow, obow/builder_obow.py, obow/datasets.py and
config/ImageNet20/ResNet18_OBoW_full.yaml).

What the paper does. A teacher, the EMA of the student (momentum 0.99 on a cosine to 1), turns
the feature maps of the whole image (ResNet layer3 and layer4, "multi-scale") into bag-of-visual-
words targets: each level keeps a vocabulary of K = 8192 visual words as a *queue* of teacher
features, refreshed every step with one randomly chosen, 3x3-average-pooled local feature per
image. Every location (the map's border dropped) is softly assigned to the words,
softmax_k(-d_k / delta) with d_k the squared distance and delta adapted during training:
1/delta = inv_delta / mu, mu a running mean (rate 0.99, starts at 0.5) of the per-location
minimum distance. The codes are max-pooled over the map and L1-normalised: the BoW target. The
student sees 2 crops of 160 px (scale 0.08-0.6, jitter, grayscale, blur, flip) and 5 patches of
96 px (of a 3x3 grid with 24 px jitter cut from a 256 px resize of 0.6-1 of the image) and
predicts every level's BoW from its global (pooled layer4) feature with the *dynamic* BoW head:
the class weights are generated from the current vocabulary by a small MLP per level
(L2-normalise, Linear without bias to 2D, BN, ReLU, Linear to D, L2-normalise), and the logits
are kappa * <w_k, f> (kappa 5 for ResNet-18, 8 for ResNet-50, not learned in any of the paper's
runs). The loss is the cross-entropy between targets and predictions, averaged over the levels
and summed over the two kinds of crops (crops, patches). SGD, lr 0.05 at batch 128 and weight
decay 5e-4 (ResNet-18 recipe), cosine schedule.

Where ours differs.
- Sizes scale with the image: the teacher sees the whole image at `image_size` (the paper's
  224 px centre crop; a square along the long side of a non-square image), crops are 160/224 of
  it, patches 96/224 cut from a 256/224 resize with 24/224 jitter; no blur at <= 64 px (the
  project's small-image rule, see docs/architecture.md "Recipes").
- Small maps: the border is dropped only from maps of at least 5 x 5 (the paper's smallest map is
  ResNet-50's 7 x 7 layer4) and the local average pooling window shrinks to the map when the map
  is smaller than 3 x 3.
- K = 2048 words by default (the paper's 8192 on 1.28M images: the queue then holds 8 steps of
  a 256 batch instead of 32).
- The queue may take any batch size (the official code asserts K % batch == 0); the teacher's EMA,
  the queue and the running mean mu are written in `on_step_end` (the official code updates mu
  before computing this step's codes: so do we, the value is computed in forward and stored
  after the step; every use of the vocabulary in a step sees the vocabulary from before it, as
  there). The loss is the cross-entropy; the official code logs the KL divergence (the same
  gradient, minus the targets' entropy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine import augment
from engine.backbones import ResNetBackbone
from engine.config import opt
from engine.distributed import all_reduce_mean, gather_no_grad
from engine.errors import UserError
from engine.losses import fp32
from engine.methods.base import RESNET_SGD, Method, cosine_momentum, ema_update, frozen_copy

LEVELS = {"layer3": 3, "layer4": 4}  # index in ResNetBackbone.stages()


@dataclass
class OBoWConfig:
    num_words: int = opt(
        2048, "visual words per level, a queue of teacher features (paper 8192 on ImageNet)"
    )
    levels: str = opt(
        "layer3+layer4",
        "teacher feature maps that give BoW targets (paper 'full': layer3+layer4; 'vanilla': layer4)",
        choices=["layer3+layer4", "layer4"],
    )
    inv_delta: float = opt(
        10.0, "base inverse temperature of the soft assignment (paper: 10 ResNet-18, 15 ResNet-50)"
    )
    kappa: float = opt(5.0, "scale of the BoW prediction logits (paper: 5 ResNet-18, 8 ResNet-50)")
    learn_kappa: bool = opt(False, "learn kappa (the paper never does)")
    bow_pool: str = opt(
        "max", "pooling of the codes over the map (paper max)", choices=["max", "avg"]
    )
    ema_momentum: float = opt(0.99, "teacher momentum at the start, cosine to 1 (paper 0.99)")
    distance_momentum: float = opt(
        0.99, "EMA rate of the mean minimum distance that adapts delta (paper 0.99)"
    )
    n_crops: int = opt(2, "student crops per image (paper 2 of 160 px)")
    crop_size: int = opt(0, "crop size in pixels (0 = 160/224 of the image size)")
    crop_scale_min: float = opt(0.08, "crop scale lower bound (paper 0.08)")
    crop_scale_max: float = opt(0.6, "crop scale upper bound (paper 0.6)")
    n_patches: int = opt(5, "student patches per image, of a 3x3 grid (paper 5)")
    patch_size: int = opt(0, "patch size in pixels (0 = 96/224 of the image size)")


@fp32
def word_distances(features: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Squared distances [B, K, h, w] of every location of features [B, C, h, w] to every word
    [K, C]: ||f||^2 + ||w||^2 - 2 <f, w> (the official code's convolution), in fp32."""
    cross = torch.einsum("bchw,kc->bkhw", features, words)
    return features.pow(2).sum(1, keepdim=True) + words.pow(2).sum(1)[:, None, None] - 2 * cross


@fp32
def soft_bow(
    dist: torch.Tensor, inv_delta: float | torch.Tensor, pool: str = "max"
) -> torch.Tensor:
    """BoW targets [B, K] from distances [B, K, h, w]: soft codes softmax_k(-inv_delta * d),
    pooled over the locations (max or average) and L1-normalised."""
    codes = F.softmax(-inv_delta * dist, dim=1)
    bow = codes.amax(dim=(2, 3)) if pool == "max" else codes.mean(dim=(2, 3))
    return F.normalize(bow, p=1, dim=1)


@fp32
def bow_loss(
    features: torch.Tensor, weights: torch.Tensor, kappa: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the dynamic BoW head's prediction softmax(kappa * f W^T) against BoW
    targets. features [n*B, D] for n crops (crop-major: all images of crop 0, then crop 1...),
    weights [K, D] (unit rows), target [B, K]: each crop predicts its image's target."""
    logits = kappa * features @ weights.t()
    target = target.repeat(features.shape[0] // target.shape[0], 1)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def local_samples(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """One 3x3-average-pooled local feature per image (the official "local_average" update):
    features [B, C, h, w] -> [B, C] at flat position index [B] of the pooled map. The window
    shrinks to the map when the map is smaller than 3 x 3."""
    k = min(3, features.shape[-2], features.shape[-1])
    pooled = F.avg_pool2d(features, kernel_size=k, stride=1).flatten(2)  # [B, C, L]
    return pooled[torch.arange(features.shape[0], device=features.device), :, index]


def pooled_locations(h: int, w: int) -> int:
    k = min(3, h, w)
    return (h - k + 1) * (w - k + 1)


def drop_border(features: torch.Tensor) -> torch.Tensor:
    """The official code drops the map's 1-pixel border; ours only from maps of 5 x 5 and up."""
    if min(features.shape[-2:]) >= 5:
        return features[:, :, 1:-1, 1:-1]
    return features


class Vocabulary(nn.Module):
    """One level's queue of K visual words (the official BoWExtractor's state): the words, the
    write pointer and the running mean of the minimum distance, all buffers (checkpointed)."""

    def __init__(self, num_words: int, channels: int):
        super().__init__()
        self.register_buffer("words", torch.randn(num_words, channels).clamp(min=0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("min_distance_mean", torch.tensor(0.5))

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor) -> None:
        """Replace the oldest words by feats [n, C] (the newest K when n > K)."""
        k = self.words.shape[0]
        feats = feats[-k:].to(self.words.dtype)
        idx = (int(self.ptr) + torch.arange(feats.shape[0], device=feats.device)) % k
        self.words[idx] = feats
        self.ptr.fill_((int(self.ptr) + feats.shape[0]) % k)


def word_generator(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The dynamic head's weight generator of one level (official BoWPredictor.layers_w)."""
    return nn.Sequential(
        L2Normalize(),
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
        L2Normalize(),
    )


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


def scaled_size(image_size: int, paper_px: int, minimum: int = 4) -> int:
    """A size given in pixels of the paper's 224 px images, for our image size."""
    return max(minimum, round(image_size * paper_px / 224))


class OBoW(Method):
    """OBoW: predict an EMA teacher's bag of visual words (online queue vocabulary, layer3+layer4)
    from crops"""

    method_name, family, config_cls = "obow", "distillation", OBoWConfig
    # ResNet18_OBoW_full.yaml: SGD, lr 0.05 at batch 128 (0.1 at 256), momentum 0.9, wd 5e-4
    # the half-width ResNet-18 at <= 32 px as the two-view methods: 15 CPU minutes gave the
    # full width 3 epochs and -9.5 kNN points against its untrained net
    defaults = RESNET_SGD | {
        "lr": 0.1, "weight_decay": 5e-4, "small_image": {"backbone": "resnet18_w32"}
    }  # fmt: skip

    def __init__(self, backbone: nn.Module, image_size: int, cfg: OBoWConfig):
        if not isinstance(backbone, ResNetBackbone):
            raise UserError(
                f"OBoW needs a ResNet backbone (resnet18, resnet50; it takes BoW targets from "
                f"layer3 and layer4), not {backbone.arch.get('name')}"
            )
        if cfg.num_words < 1 or not 1 <= cfg.n_patches <= 9 or cfg.n_crops < 0:
            raise UserError("OBoW: num_words must be >= 1, n_patches 1..9 and n_crops >= 0")
        super().__init__(backbone, cfg)
        self.level_names = cfg.levels.split("+")
        d = backbone.embed_dim
        # channels of layer3 / layer4: half / all of the pooled feature (as parse_model_opts)
        channels = [d // 2 if name == "layer3" else d for name in self.level_names]
        self.teacher_backbone = frozen_copy(backbone)
        self.vocab = nn.ModuleList(Vocabulary(cfg.num_words, c) for c in channels)
        self.generators = nn.ModuleList(word_generator(c, 2 * d, d) for c in channels)
        self.kappa = nn.Parameter(
            torch.full((len(channels),), float(cfg.kappa)), requires_grad=cfg.learn_kappa
        )
        blur = 0.5 if image_size > 64 else 0.0
        # teacher: the whole image, flipped with p 0.5 (official: resize 256, centre crop 224, flip)
        self.teacher_spec = augment.whole_view(image_size)
        crop = cfg.crop_size or scaled_size(image_size, 160)
        self.crop_spec = augment.ViewSpec(
            size=crop, scale=(cfg.crop_scale_min, cfg.crop_scale_max), blur_p=blur
        )  # jitter 0.4/0.4/0.4/0.1 p 0.8, gray 0.2: the ViewSpec defaults, as the paper's
        self.patch_size = cfg.patch_size or scaled_size(image_size, 96)
        self.patch_jitter = max(0, round(self.patch_size * 24 / 96))
        # the patches' source: a resize of 256/96 of a patch, scale (0.6, 1), no blur
        pre = max(round(self.patch_size * 256 / 96), self.patch_size + self.patch_jitter + 2)
        self.patch_source_spec = augment.ViewSpec(size=pre, scale=(0.6, 1.0), blur_p=0.0)

    # ---- views ------------------------------------------------------------------------------
    def patches(self, source: torch.Tensor) -> torch.Tensor:
        """n_patches of the 3x3 grid of jittered patches of each source image (official
        CropImagePatches), crop-major [n*B, 3, p, p]."""
        b, size, p, jit = source.shape[0], source.shape[-1], self.patch_size, self.patch_jitter
        n = self.cfg.n_patches
        offset = (size - p - jit) // 2

        def draw(total: int, g: torch.Generator):
            shifts = torch.randint(0, jit + 1, (total, 9, 2), generator=g, device=g.device)
            order = torch.argsort(torch.rand(total, 9, generator=g, device=g.device), dim=1)
            return shifts, order[:, :n]

        shifts, chosen = self.draw_global(draw, b, salt=101, device=source.device)
        grid = torch.arange(3, device=source.device) * offset
        base = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(9, 2)
        top_left = base[chosen] + shifts.gather(1, chosen[..., None].expand(-1, -1, 2))  # [B,n,2]
        r = torch.arange(p, device=source.device)
        rows = top_left[..., 0, None] + r  # [B, n, p]
        cols = top_left[..., 1, None] + r
        bi = torch.arange(b, device=source.device)[:, None, None, None]
        out = source.permute(0, 2, 3, 1)[bi, rows[..., :, None], cols[..., None, :]]  # B,n,p,p,C
        return out.permute(1, 0, 4, 2, 3).flatten(0, 1)

    # ---- targets ----------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The teacher's BoW target [B, K] of each level, and what this step would write: per
        level the new running mean of the minimum distance and the local features to enqueue."""
        stages = self.teacher_backbone.stages(image)
        bows, pending = [], []
        for name, vocab in zip(self.level_names, self.vocab):
            feats = drop_border(stages[LEVELS[name]].float())
            dist = word_distances(feats, vocab.words)
            mu = all_reduce_mean(dist.amin(dim=1).mean())
            m = self.cfg.distance_momentum
            mean = vocab.min_distance_mean * m + mu * (1 - m)
            bows.append(soft_bow(dist, self.cfg.inv_delta / mean, self.cfg.bow_pool))
            locs = pooled_locations(*feats.shape[-2:])
            index = self.draw_global(
                lambda n, g, locs=locs: torch.randint(0, locs, (n,), generator=g, device=g.device),
                feats.shape[0],
                salt=202 + LEVELS[name],
                device=feats.device,
            )
            pending.append((mean, gather_no_grad(local_samples(feats, index))))
        return bows, pending

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.cfg
        specs = [self.teacher_spec] + [self.crop_spec] * c.n_crops + [self.patch_source_spec]
        views = self.make_views(batch, specs)
        weights = [gen(v.words) for gen, v in zip(self.generators, self.vocab)]
        groups = {}
        if c.n_crops:
            groups["crops"] = self.backbone(torch.cat(views[1:-1]))
        groups["patches"] = self.backbone(self.patches(views[-1]))
        bows, self._pending = self.targets(views[0])
        out, total = {}, 0.0
        for name, feats in groups.items():
            per_level = [bow_loss(feats, w, k, t) for w, k, t in zip(weights, self.kappa, bows)]
            loss = torch.stack(per_level).mean()
            out[f"loss_{name}"] = loss.detach()
            total = total + loss
        with torch.no_grad():
            # the official code's loss: KL = cross-entropy - entropy of the targets
            entropy = torch.stack([-(t * t.clamp_min(1e-12).log()).sum(1).mean() for t in bows])
            out["kl"] = total.detach() - len(groups) * entropy.mean()
            # its monitors: perplexity of the last level's BoW per image and over the batch
            last = bows[-1]
            out["perplexity_image"] = torch.exp(-(last * last.clamp_min(1e-12).log()).sum(1)).mean()
            batch_bow = F.normalize(last.sum(0), p=1, dim=0)
            out["perplexity_batch"] = torch.exp(
                -(batch_bow * batch_bow.clamp_min(1e-12).log()).sum()
            )
        return {"loss": total, **out}

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(
            self.teacher_backbone,
            self.backbone,
            cosine_momentum(self.cfg.ema_momentum, step, total_steps),
        )
        for vocab, (mean, feats) in zip(self.vocab, self._pending):
            vocab.min_distance_mean.copy_(mean)
            vocab.enqueue(feats)
