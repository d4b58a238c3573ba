"""MOCA (Gidaris et al. 2024, "MOCA: Self-supervised Representation Learning by Predicting Masked
Online Codebook Assignments", TMLR), after the official code (valeoai/MOCA: models_moca.py,
main_pretrain.py, util/misc.py, util/transforms.py).

What the paper does. Two views of each image (BYOL's augmentations, crops (0.2, 1)). A teacher,
the EMA of the student's ViT encoder (momentum 0.99 in the paper, 0.994 in the released code, on
a cosine to 1), gives the L2-normalised last-layer patch tokens of both unmasked views. Each token
is softly assigned to an online codebook of K = 4096 L2-normalised words, softmax_k(inv_delta /
s * cos(token, word_k)) with inv_delta = 10 and s a running mean (rate 0.99, two updates a step,
one per view, used from the previous step) of max_k cos - mean_k cos. The codebook is a queue: 32
teacher tokens a step (random images of one random view, one random token each away from the
border) replace the oldest words. The image-level target is the bag of codes: the codes averaged
over the tokens 2 patches away from the border, L1-normalised.

The student encodes each view twice with complementary random masks (MAE-style: the encoder sees
45% of the tokens, then 25% others) and has two losses, each the KL divergence to the teacher's
soft targets, weighted 0.5 / 0.5 and each summed over the two masking rounds:
- image level, cross-view: the average of the student's visible last-layer tokens predicts the
  *other* view's bag of codes;
- token level, same view: a 2-block decoder takes that average token and the visible tokens of
  an earlier layer (4 blocks before the last, after a LayerNorm and a linear map) plus mask tokens
  for 20% of the tokens (the same masked tokens in both rounds), with fixed sin-cos positions, and
  predicts the teacher's codes of every token it holds, visible and masked.
Predictions are kappa * <f, w_k> with kappa = 3 and class weights w generated from the current
codebook by a residual MLP (L2-normalise, Linear to 2D without bias, BN, ReLU, Linear, plus the
input (a linear map when widths differ), L2-normalise), one for the image level and one for the
decoder. AdamW, base lr 1.5e-4 (batch 256), warm-up 30 of 200 epochs, cosine over 1.25x the
run, weight decay 0.05 -> 0.20, gradient norm clipped at 0.1; fixed sin-cos positions and
xavier Linear initialisation (as MAE).

Where ours differs.
- Sizes scale with the image: the border skipped by the bag of codes and by the codebook update is
  2 of 14 patches in the paper, grid * 2 // 14 here (none on a 4x4 grid); the decoder is 2/3 of
  the encoder's width (512 of ViT-B's 768) with 32-d heads (the paper's 16 of 512); the teacher's
  early layer is clamped to the encoder's depth.
- K = 2048 words and 16 new words a step by default (the paper's 4096 and 32 a step of 2048
  images on ImageNet: the codebook turns over in 128 steps in both).
- The weight generators train at the official constant lr 1e-4 (`lr_wgen`) and weight decay
  0.05 (`constant_lr_groups`); the lr is absolute, not scaled with the batch, as in
  main_pretrain.py.
- The loss is the cross-entropy (the same gradients as the official KL, which we log as `kl`).
- Blur is off at <= 64 px (the project's small-image rule).
- The global feature is the teacher's average patch token ([AVG], the ViT's `global_pool:
  avg`), which is what the losses train and what the paper evaluates; the teacher is exported
  (`eval_backbone_prefix`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from engine import augment
from engine.backbones import is_vit
from engine.backbones.vit import Block, sincos_pos_embed
from engine.config import opt
from engine.distributed import all_reduce_mean, gather_no_grad, world_size
from engine.errors import UserError
from engine.heads import xavier_init
from engine.losses import fp32
from engine.methods.base import (
    VIT_ADAMW,
    Method,
    cosine_momentum,
    ema_update,
    frozen_copy,
)
from engine.optim import schedule_groups


@dataclass
class MOCAConfig:
    num_words: int = opt(2048, "codebook size, a queue of teacher tokens (paper 4096)")
    num_new_words: int = opt(
        16, "teacher tokens enqueued per step (paper 32 per 2048 images: K/new = 128 steps)"
    )
    inv_delta: float = opt(10.0, "base inverse temperature of the code assignment (paper 10)")
    kappa: float = opt(3.0, "scale of the prediction logits (paper 3)")
    img_weight: float = opt(0.5, "weight of the image-level cross-view loss (paper 0.5)")
    loc_weight: float = opt(0.5, "weight of the token-level masked loss (paper 0.5)")
    mask_ratio: float = opt(0.55, "tokens hidden from the encoder, first round (paper 0.55)")
    mask_ratio_second: float = opt(
        0.75, "tokens hidden from the encoder in the complementary second round (paper 0.75)"
    )
    dec_mask_ratio: float = opt(
        0.35,
        "tokens the decoder does not see, first round (paper 0.35); the tokens between it and "
        "mask_ratio are predicted in both rounds",
    )
    skip_offset: int = opt(
        -1, "border (in patches) left out of the bag of codes (-1 = grid * 2 // 14; paper 2 of 14)"
    )
    early_layer: int = opt(4, "the decoder reads the tokens this many blocks before the last (4)")
    decoder_dim: int = opt(0, "decoder width (0 = 2/3 of the encoder's; paper 512 for ViT-B)")
    decoder_depth: int = opt(2, "decoder blocks (paper 2)")
    pred_mlp_ratio: float = opt(2.0, "hidden width of the weight generators / encoder width (2)")
    ema_momentum: float = opt(
        0.99, "teacher momentum at the start, cosine to 1 (paper 0.99; released code 0.994)"
    )
    distance_momentum: float = opt(0.99, "EMA rate of the assignment's distance scale (0.99)")
    crop_scale_min: float = opt(0.2, "crop scale lower bound (paper 0.2)")
    warmup_frac: float = opt(0.15, "learning-rate warm-up as a fraction of the run (30 of 200)")
    lr_horizon: float = opt(
        1.25, "the cosine decays over this multiple of the run (paper 1.25: lr stays above 0)"
    )
    weight_decay_end: float = opt(0.2, "weight decay at the end of its cosine (paper 0.05 -> 0.2)")
    lr_wgen: float = opt(1e-4, "constant absolute lr of the weight generators (paper 1e-4)")


# ---- targets and losses (pure functions, fp32) ---------------------------------------------


@fp32
def code_assignments(tokens: torch.Tensor, words: torch.Tensor, inv_delta) -> torch.Tensor:
    """Soft codes [B, L, K] of tokens [B, L, D] over unit words [K, D]:
    softmax_k(inv_delta * cos(token, word_k)) (the official -inv_delta * dist, dist = -cos)."""
    cos = F.normalize(tokens, dim=-1, eps=1e-5) @ words.t()
    return F.softmax(inv_delta * cos, dim=-1)


@fp32
def distance_scale(tokens: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """The batch's |mean over tokens of (mean_k dist - min_k dist)|, dist = -cos: what the
    running scale s of the assignment temperature averages."""
    cos = F.normalize(tokens, dim=-1, eps=1e-5) @ words.t()
    return (cos.amax(-1) - cos.mean(-1)).mean().abs()


def bag_of_codes(codes: torch.Tensor, grid: tuple[int, int], offset: int) -> torch.Tensor:
    """The image-level target [B, K]: codes [B, L, K] of an h x w grid averaged over the tokens
    at least `offset` patches from the border, L1-normalised."""
    h, w = grid
    c = codes.view(codes.shape[0], h, w, -1)[:, offset : h - offset, offset : w - offset]
    return F.normalize(c.flatten(1, 2).mean(1), p=1, dim=-1, eps=1e-5)


@fp32
def code_prediction_loss(
    features: torch.Tensor, weights: torch.Tensor, kappa: float, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (and KL) of softmax(kappa * f W^T) against soft targets, averaged over the
    rows: features [N, D], weights [K, D], target [N, K]."""
    logp = F.log_softmax(kappa * features @ weights.t(), dim=-1)
    ce = -(target * logp).sum(-1).mean()
    entropy = -(target * target.clamp_min(1e-12).log()).sum(-1).mean()
    return ce, ce.detach() - entropy


def complementary_masks(
    n: int, length: int, counts: tuple[int, int, int], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official make_two_complementary_masks: a random order of the tokens of each of n
    images gives the first round's visible tokens (keep1), then the masked tokens the decoder
    predicts in both rounds (dec), and the second round's visible tokens among the rest (keep2),
    so the rounds' visible tokens do not overlap. counts = (keep1, dec, keep2)."""
    keep1, dec, keep2 = counts
    order = torch.argsort(torch.rand(n, length, generator=g, device=g.device), dim=1)
    return order[:, :keep1], order[:, keep1 : keep1 + dec], order[:, keep1 + dec :][:, :keep2]


def mask_counts(length: int, c: MOCAConfig) -> tuple[int, int, int]:
    keep1 = int(length * (1 - c.mask_ratio))
    dec = int(length * (1 - c.dec_mask_ratio)) - keep1
    keep2 = int(length * (1 - c.mask_ratio_second))
    if min(keep1, keep2) < 1 or dec < 1 or keep1 + dec + keep2 > length:
        raise UserError(
            f"MOCA: with {length} patches the masks leave {keep1} / {keep2} visible and {dec} "
            "predicted tokens; need at least 1 each and mask_ratio_second >= mask_ratio + "
            "(mask_ratio - dec_mask_ratio)"
        )
    return keep1, dec, keep2


# ---- modules --------------------------------------------------------------------------------


class WordGenerator(nn.Module):
    """The official ResWGEN: class weights from the codebook, l2n(MLP(l2n(w)) + skip(l2n(w)))."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )
        self.skip = nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        x = F.normalize(words, dim=1, eps=1e-5)
        return F.normalize(self.mlp(x) + self.skip(x), dim=1, eps=1e-5)


class Codebook(nn.Module):
    """The online codebook (official BoWExtractor's state): unit words, the queue pointer and the
    running distance scale s, all buffers (checkpointed)."""

    def __init__(self, num_words: int, dim: int):
        super().__init__()
        words = F.normalize(torch.randn(num_words, dim).clamp(min=0), dim=1, eps=1e-5)
        self.register_buffer("words", words)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.tensor(0.5))

    @torch.no_grad()
    def enqueue(self, new: torch.Tensor) -> None:
        k = self.words.shape[0]
        new = F.normalize(new[-k:].float(), dim=1, eps=1e-5).to(self.words.dtype)
        idx = (int(self.ptr) + torch.arange(new.shape[0], device=new.device)) % k
        self.words[idx] = new
        self.ptr.fill_((int(self.ptr) + new.shape[0]) % k)


class MOCA(Method):
    # as the official ViTEncoder; the global feature is the mean patch token, which the paper
    # evaluates (its losses never train [CLS])
    """MOCA: predict an EMA teacher's online-codebook assignments of masked and visible tokens and
    the other view's bag of codes (ViT)"""

    method_name, family, config_cls = "moca", "masked", MOCAConfig
    # main_pretrain.py: AdamW (0.9, 0.999), blr 1.5e-4 at batch 256, wd 0.05, clip 0.1
    defaults = VIT_ADAMW | {"lr": 1.5e-4, "weight_decay": 0.05, "clip_grad": 0.1}

    backbone_kwargs = {"pos_embed": "sincos", "init": "mae", "global_pool": "avg"}
    eval_backbone_prefix = "teacher_backbone."  # the paper evaluates the teacher

    def __init__(self, backbone: nn.Module, image_size: int, cfg: MOCAConfig):
        if not is_vit(backbone):
            raise UserError(
                f"MOCA needs a ViT backbone (vit_tiny, vit_small, ...), not {backbone.arch.get('name')}"
            )
        super().__init__(backbone, cfg)
        # main_pretrain.py: the weight generators train at a constant absolute lr (--lr_wgen)
        # and the base weight decay 0.05, outside both cosines (biases and norms without decay)
        fixed = {"lr": cfg.lr_wgen, "weight_decay": 0.05}
        self.constant_lr_groups = {"image_generator.": fixed, "decoder_generator.": fixed}
        d, p = backbone.embed_dim, backbone.patch_size
        self.grid = (image_size // p, image_size // p)
        length = self.grid[0] * self.grid[1]
        self.counts = mask_counts(length, cfg)
        self.offset = cfg.skip_offset if cfg.skip_offset >= 0 else min(self.grid) * 2 // 14
        if min(self.grid) - 2 * self.offset < 1:
            raise UserError(
                f"MOCA: skip_offset {self.offset} leaves no token of a {self.grid} grid"
            )
        depth = len(backbone.blocks)
        self.early_index = depth - 1 - min(cfg.early_layer, depth - 1)  # block whose output
        dd = cfg.decoder_dim or max(32, round(d * 2 / 3 / 32) * 32)
        heads = max(1, dd // 32)
        if dd % heads:
            raise UserError(f"MOCA: decoder_dim {dd} is not a multiple of {heads} heads")
        hidden = int(d * cfg.pred_mlp_ratio)
        self.teacher_backbone = frozen_copy(backbone)
        self.codebook = Codebook(cfg.num_words, d)
        self.image_generator = WordGenerator(d, hidden, d)
        self.decoder_generator = WordGenerator(d, hidden, dd)
        # the decoder ("cls_pt" in the official code)
        self.decoder_norm_in = nn.LayerNorm(d, eps=1e-6)
        self.decoder_embed = nn.Linear(d, dd)
        self.decoder_mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_blocks = nn.ModuleList(Block(dd, heads) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.register_buffer("decoder_pos", sincos_pos_embed(dd, *self.grid), persistent=False)
        self._init_heads()
        # BYOL's pair with crops (0.2, 1): view 1 blurred, view 2 blurred 0.1 and solarized 0.2
        self.specs = [
            replace(s, scale=(cfg.crop_scale_min, 1.0)) for s in augment.byol_views(image_size)
        ]

    def _init_heads(self) -> None:
        """The official _init_weights: xavier-uniform Linear, zero biases, unit LayerNorm; the
        mask token N(0, 0.02)."""
        heads = [self.image_generator, self.decoder_generator, self.decoder_embed]
        for module in [*heads, self.decoder_blocks, self.decoder_norm, self.decoder_norm_in]:
            module.apply(xavier_init)
        nn.init.normal_(self.decoder_mask_token, std=0.02)

    # ---- student -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's pass on the kept tokens: the average of its last-layer (normalised)
        patch tokens [B, D] and the early layer's patch tokens [B, k, D]."""
        bb = self.backbone
        t, early = bb.embed(x, keep=keep), None
        for i, blk in enumerate(bb.blocks):
            t = blk(t)
            if i == self.early_index:
                early = t
        pre = bb.num_prefix_tokens
        return bb.norm(t)[:, pre:].mean(1), early[:, pre:]

    def decode(self, avg: torch.Tensor, early: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Decoder features [B, k + m, Dd] of the tokens ids [B, k + m] (the k visible ones, in
        the encoder's order, then m masked ones)."""
        x = self.decoder_embed(torch.cat([avg[:, None], self.decoder_norm_in(early)], dim=1))
        b, k = x.shape[0], early.shape[1]
        masked = self.decoder_mask_token.to(x.dtype).expand(b, ids.shape[1] - k, -1)
        pos = self.decoder_pos[0, 1:][ids].to(x.dtype)  # [B, k + m, Dd]
        x = torch.cat(
            [
                x[:, :1] + self.decoder_pos[:, :1].to(x.dtype),
                torch.cat([x[:, 1:], masked], 1) + pos,
            ],
            1,
        )
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_norm(x)[:, 1:]

    def masks(self, b: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per round, (visible ids [2B, k], decoder ids [2B, k + m]) for the two views stacked
        view-major, drawn for the global batch (DDP = one process)."""
        length = self.grid[0] * self.grid[1]

        def draw(total: int, g: torch.Generator):
            k1, dec, k2 = complementary_masks(2 * total, length, self.counts, g)
            return tuple(t.view(2, total, -1).transpose(0, 1) for t in (k1, dec, k2))

        k1, dec, k2 = (
            t.transpose(0, 1).flatten(0, 1).to(device) for t in self.draw_global(draw, b, salt=404)
        )
        return [(k1, torch.cat([k1, dec], 1)), (k2, torch.cat([k2, dec], 1))]

    # ---- teacher ---------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, views: list[torch.Tensor]):
        """Per view: teacher patch tokens [B, L, D], codes [B, L, K] and bag of codes [B, K],
        with the distance scale of the previous step; and the scale after this step's two
        updates (one per view, as the official code)."""
        words, s = self.codebook.words, self.codebook.scale
        pre = self.teacher_backbone.num_prefix_tokens
        m, new_scale, out = self.cfg.distance_momentum, s.clone(), []
        for v in views:
            tokens = self.teacher_backbone.forward_tokens(v)[:, pre:].float()
            codes = code_assignments(tokens, words, self.cfg.inv_delta / s)
            out.append((tokens, codes, bag_of_codes(codes, self.grid, self.offset)))
            new_scale = new_scale * m + all_reduce_mean(distance_scale(tokens, words)) * (1 - m)
        return out, new_scale

    @torch.no_grad()
    def new_words(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """num_new_words teacher tokens: one random view, random images of the global batch, one
        random token each away from the border (official BoWExtractor.update, "random_token").
        Every process returns the same words (each fills in the images it holds)."""
        b, dev = tokens[0].shape[0], tokens[0].device
        total, first = self.global_rows(b)
        n = min(self.cfg.num_new_words, total)
        h, w = self.grid
        o = self.offset
        inner = torch.arange(h * w, device=dev).view(h, w)[o : h - o, o : w - o].flatten()
        g = self.step_generator(dev, salt=505)
        view = int(torch.randint(0, 2, (1,), generator=g, device=dev))
        images = torch.randperm(total, generator=g, device=dev)[:n]
        token = inner[torch.randint(0, inner.numel(), (n,), generator=g, device=dev)]
        local = images - first
        mine = (local >= 0) & (local < b)
        out = torch.zeros(n, tokens[0].shape[-1], device=dev)
        out[mine] = tokens[view][local[mine], token[mine]]
        if world_size() > 1:
            out = gather_no_grad(out).view(-1, n, out.shape[-1]).sum(0)
        return out

    # ---- step ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.cfg
        x1, x2 = self.make_views(batch, self.specs)
        b = x1.shape[0]
        ((t1, codes1, bow1), (t2, codes2, bow2)), scale = self.targets([x1, x2])
        self._pending = (scale, self.new_words([t1, t2]))
        cross_view = torch.cat([bow2, bow1])  # view 1 predicts view 2's bag of codes, and back
        same_view = torch.cat([codes1, codes2])  # [2B, L, K]
        words = self.codebook.words
        w_img, w_dec = self.image_generator(words), self.decoder_generator(words)
        x = torch.cat([x1, x2])
        img, loc, kl = [], [], 0.0
        for keep, ids in self.masks(b, x.device):
            avg, early = self.encode(x, keep)
            ce, k = code_prediction_loss(avg, w_img, c.kappa, cross_view)
            img.append(ce)
            kl = kl + c.img_weight * k
            dec = self.decode(avg, early, ids)
            target = torch.gather(same_view, 1, ids[..., None].expand(-1, -1, same_view.shape[-1]))
            ce, k = code_prediction_loss(dec.flatten(0, 1), w_dec, c.kappa, target.flatten(0, 1))
            loc.append(ce)
            kl = kl + c.loc_weight * k
        loss_img, loss_loc = 2 * torch.stack(img).mean(), 2 * torch.stack(loc).mean()
        loss = c.img_weight * loss_img + c.loc_weight * loss_loc
        with torch.no_grad():
            p = bow1.float().mean(0)
            batch_perplexity = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
            token_entropy = -(codes1 * codes1.clamp_min(1e-12).log()).sum(-1).mean()
        return {
            "loss": loss,
            "loss_img": loss_img.detach(),
            "loss_loc": loss_loc.detach(),
            "kl": kl,  # the official loss: sum over the two rounds of the weighted KLs
            "perplexity_batch": batch_perplexity,  # of the average bag of codes
            "perplexity_token": torch.exp(token_entropy),  # of one token's codes (sharpness)
        }

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(self.cfg.ema_momentum, step, total_steps)
        ema_update(self.teacher_backbone, self.backbone, m)
        scale, new = self._pending
        self.codebook.scale.copy_(scale)
        self.codebook.enqueue(new)

    def on_step_start(self, step: int, total_steps: int, optimizer) -> None:
        """main_pretrain.py's schedules: linear warm-up over warmup_frac of the run, then a
        cosine over lr_horizon x the run; weight decay on a cosine from its base to
        weight_decay_end."""
        c = self.cfg
        warm = int(c.warmup_frac * total_steps)
        horizon = max(warm + 1, math.ceil(c.lr_horizon * total_steps))
        schedule_groups(optimizer, step, total_steps, warm, horizon, c.weight_decay_end)
