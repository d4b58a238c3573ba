"""Object-centric learning on ViT patch features: slot attention in the DINOSAUR form (Seitzer et
al. 2023; slot attention: Locatello et al. 2020) and SPOT (Kakogeorgiou et al., CVPR 2024).

Both reconstruct the patch features of a frozen ViT encoder from K slots; the decoder's
per-slot masks are the object masks (the "slots" feature kind, FG-ARI / mBO in
engine/evaluation/objects.py). Read from SPOT's official code (gkakogeorgiou/spot: slot_attn.py,
spot.py, mlp.py, transformer.py, train_spot.py, train_spot_2.py), which also holds DINOSAUR's MLP
decoder; written here anew.

Encoder: the run's ViT backbone (`--backbone vit_tiny` by default, or `--init-from` any model
source: a DINO run on the same data, an export, `dino:vits16:FILE`), frozen, its patch tokens
after the last block *without* the final norm (DINOSAUR's supplement; SPOT's
encoder_final_norm=False). With nothing given the tiny ViT is randomly initialised and stays
frozen: features of random patch embeddings still separate colours and textures (the objects
sample), but a trained encoder (--init-from) is what the papers use.

Slot attention (slot_attn.py): inputs LayerNorm + 2-layer MLP; 3 iterations of
softmax-over-slots attention (k scaled by slot_dim^-1/2), weighted mean over inputs (+1e-8),
GRU cell and a residual MLP; slots initialised from a learned Gaussian (mu, log sigma, shared by
the slots; noise from the step generator so resume and DDP are exact).

`slot_attention` (DINOSAUR): each slot (projected to the feature width + LayerNorm) is broadcast
to every patch with a learned position embedding and decoded by a 4-layer ReLU MLP to a feature
vector and an alpha logit; alphas are a softmax over slots; the reconstruction is the
alpha-weighted sum; loss = MSE to the encoder's features.

`spot`, stage 1 (the teacher): the same encoder and slot attention, an autoregressive transformer
decoder (4 blocks: causal self-attention over the projected target patch tokens shifted right
behind a [BOS] token, cross-attention to the slots, FFN) predicting each patch token from the
previous ones and the slots; its last block's cross-attention (summed over heads, L1-normalised
over slots) is the mask. Patch-order permutations: the sequence is one of 9 orders of the grid
(raster, column-major, the 6 other corner-start row / column orders, and a spiral), drawn per
sample, with a learned [BOS] token per order; the output is put back in raster order for the
loss. Evaluation masks average all 9 orders (SPOT's eval_spot.py --eval_permutations all) or use
the raster order (`eval_permutations standard`).

`spot --teacher RUN`, stage 2 (the student, train_spot_2.py): a new model of the same shape,
slots initialised from K learned embeddings and bi-level truncation of the slot-attention
iterations (the last iteration's gradient only, plus the init's straight-through); the encoder
starts from the teacher's and its last `finetune_blocks` blocks are trained, while the
reconstruction targets stay the teacher's frozen encoder features. Loss = MSE + w * CE, where CE
is the cross-entropy between the student's slot-attention logits (last iteration) and the
teacher decoder's masks (argmax over slots, the teacher decoding in one random order), after
Hungarian matching of the student's slots to the teacher's by IoU of their argmax masks
(att_matching); w = 5e-3 (ce_weight), cosine to distill_weight_final. The teacher is a frozen
submodule and part of the checkpoint (as BEiT's tokenizer); the official student is not
initialised from the teacher (only the encoder is shared), and neither is ours.

Optimiser (train_spot.py): Adam lr 4e-4 at batch 64 (1.6e-3 per 256), cosine to 4e-7
(min_lr_ratio 1e-3), linear warm-up over 10% of the run (10k steps of ~90k on COCO), gradients
clipped at 0.3 in the infinity norm (clip_grad_norm_(..., 0.3, 'inf')). Augmentation: resize +
square crop + horizontal flip (datasets.py).

Scaled to small images: slot_dim 64 (paper 256), slot MLP 128 (1024), MLP decoder hidden 256
(2048), transformer decoder width = the encoder's (paper too), 4 heads on vit_tiny's 192; 5 slots
(paper 7 on COCO, 11 on MOVi-C; the objects sample has at most 4 objects + background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.backbones import is_vit
from engine.config import opt
from engine.errors import UserError
from engine.losses import fp32
from engine.methods.base import VIT_ADAMW, Method
from engine.optim import cosine_schedule, schedule_groups

# ----------------------------------------------------------------------------- configs


@dataclass
class SlotAttentionConfig:
    num_slots: int = opt(5, "slots per image (paper 7 on COCO; the objects sample: <= 4 + bg)")
    slot_iters: int = opt(3, "slot-attention iterations (3 in the papers)")
    slot_dim: int = opt(64, "slot width (paper 256)")
    slot_mlp_dim: int = opt(128, "hidden width of the slot update MLP (paper 1024)")
    decoder_hidden: int = opt(256, "MLP decoder hidden width, 3 hidden layers (paper 2048)")
    warmup_frac: float = opt(0.1, "learning-rate warm-up as a fraction of the run (10k steps)")


@dataclass
class SPOTConfig:
    num_slots: int = opt(5, "slots per image (paper 7 on COCO; the objects sample: <= 4 + bg)")
    slot_iters: int = opt(3, "slot-attention iterations (3 in the papers)")
    slot_dim: int = opt(64, "slot width (paper 256)")
    slot_mlp_dim: int = opt(128, "hidden width of the slot update MLP (paper 1024)")
    decoder_blocks: int = opt(4, "autoregressive transformer decoder blocks (paper 4)")
    decoder_heads: int = opt(4, "decoder attention heads (paper 6 on ViT-B's 768)")
    permutations: str = opt(
        "random",
        "training patch orders: random (one of 9 per sample, SPOT) | standard (raster only)",
        choices=["random", "standard"],
    )
    eval_permutations: str = opt(
        "all",
        "masks for evaluation / features: all (average of the 9 orders, eval_spot.py) | standard",
        choices=["all", "standard"],
    )
    teacher: str = opt(
        "",
        "stage 2: a spot run (stage 1) whose decoder masks the student distils; empty: stage 1",
    )
    distill_weight: float = opt(5e-3, "weight of the attention-distillation CE (ce_weight 5e-3)")
    distill_weight_final: float = opt(-1.0, "its value at the end, cosine; < 0: constant")
    finetune_blocks: int = opt(
        4, "stage 2: train the encoder's last N blocks (paper: 4 of ViT-B's 12); stage 1 frozen"
    )
    warmup_frac: float = opt(0.1, "learning-rate warm-up as a fraction of the run (10k steps)")


# ----------------------------------------------------------------------------- building blocks


def linear(i: int, o: int, bias: bool = True, init: str = "xavier", gain: float = 1.0) -> nn.Linear:
    """SLATE / SPOT's linear(): xavier-uniform (or kaiming for layers before a ReLU), zero bias."""
    m = nn.Linear(i, o, bias)
    if init == "kaiming":
        nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(m.weight, gain)
    if bias:
        nn.init.zeros_(m.bias)
    return m


def gru_cell(size: int) -> nn.GRUCell:
    m = nn.GRUCell(size, size)
    nn.init.xavier_uniform_(m.weight_ih)
    nn.init.orthogonal_(m.weight_hh)
    nn.init.zeros_(m.bias_ih)
    nn.init.zeros_(m.bias_hh)
    return m


class SlotAttention(nn.Module):
    """Inputs [B, N, D] -> slots [B, K, S], attention [B, N, K] (softmax over slots, before the
    renormalisation over inputs) and the last iteration's logits [B, N, K]. One head."""

    def __init__(self, input_dim: int, slot_dim: int, mlp_dim: int, iters: int, eps: float = 1e-8):
        super().__init__()
        self.iters, self.slot_dim, self.eps = iters, slot_dim, eps
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_mlp = nn.Sequential(  # SlotAttentionEncoder's MLP on the features
            linear(input_dim, input_dim, init="kaiming"), nn.ReLU(), linear(input_dim, input_dim)
        )
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_mlp = nn.LayerNorm(slot_dim)
        self.project_q = linear(slot_dim, slot_dim, bias=False)
        self.project_k = linear(input_dim, slot_dim, bias=False)
        self.project_v = linear(input_dim, slot_dim, bias=False)
        self.gru = gru_cell(slot_dim)
        self.mlp = nn.Sequential(
            linear(slot_dim, mlp_dim, init="kaiming"), nn.ReLU(), linear(mlp_dim, slot_dim)
        )

    def forward(
        self, inputs: Tensor, slots_init: Tensor, truncate: str = "none"
    ) -> tuple[Tensor, Tensor, Tensor]:
        x = self.norm_inputs(self.input_mlp(self.input_norm(inputs)))
        k = self.project_k(x) * self.slot_dim**-0.5
        v = self.project_v(x)
        slots = slots_init
        attn = logits = slots_init.new_zeros(0)
        for i in range(self.iters):
            if i == self.iters - 1 and truncate == "bi-level":
                slots = slots.detach() + slots_init - slots_init.detach()
            prev = slots
            q = self.project_q(self.norm_slots(slots))
            logits = k @ q.transpose(1, 2)  # [B, N, K]
            attn = logits.softmax(-1)  # competition between slots for each input
            w = attn + self.eps
            w = w / w.sum(1, keepdim=True)  # weighted mean over the inputs
            updates = w.transpose(1, 2) @ v  # [B, K, S]
            slots = self.gru(updates.reshape(-1, self.slot_dim), prev.reshape(-1, self.slot_dim))
            slots = slots.view(prev.shape)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn, logits


class MlpDecoder(nn.Module):
    """DINOSAUR's decoder: slot + learned position -> MLP -> (feature, alpha); alpha softmax over
    slots; returns reconstruction [B, N, D] and masks [B, K, N]."""

    def __init__(self, slot_dim: int, out_dim: int, num_patches: int, hidden: int, layers: int = 3):
        super().__init__()
        self.out_dim = out_dim
        self.pos_embed = nn.Parameter(torch.randn(1, 1, num_patches, slot_dim) * 0.02)
        mods: list[nn.Module] = []
        d = slot_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        mods.append(nn.Linear(d, out_dim + 1))
        for m in mods:
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        self.mlp = nn.Sequential(*mods)

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mlp(slots.unsqueeze(2) + self.pos_embed)  # [B, K, N, D+1]
        feats, alpha = h.split([self.out_dim, 1], dim=-1)
        alpha = alpha.softmax(1)
        return (feats * alpha).sum(1), alpha.squeeze(-1)


class MultiHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, gain: float = 1.0):
        super().__init__()
        if dim % heads:
            raise UserError(f"decoder width {dim} is not a multiple of decoder_heads {heads}")
        self.heads = heads
        self.proj_q = linear(dim, dim, bias=False)
        self.proj_k = linear(dim, dim, bias=False)
        self.proj_v = linear(dim, dim, bias=False)
        self.proj_o = linear(dim, dim, bias=False, gain=gain)

    def forward(
        self, q: Tensor, kv: Tensor, causal: bool = False, weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        b, t, d = q.shape
        s, h = kv.shape[1], self.heads
        q = self.proj_q(q).view(b, t, h, -1).transpose(1, 2)
        k = self.proj_k(kv).view(b, s, h, -1).transpose(1, 2)
        v = self.proj_v(kv).view(b, s, h, -1).transpose(1, 2)
        if weights:  # the cross-attention maps are the masks: computed by hand
            attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.proj_o(out.transpose(1, 2).reshape(b, t, d)), attn


class DecoderBlock(nn.Module):
    """SLATE's TransformerDecoderBlock: (LN, causal self-attention), (LN, cross-attention to the
    slots), (LN, 4x ReLU FFN), each residual; the first block normalises its input in place."""

    def __init__(self, dim: int, heads: int, gain: float, first: bool):
        super().__init__()
        self.first = first
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, gain)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads, gain)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            linear(dim, 4 * dim, init="kaiming"), nn.ReLU(), linear(4 * dim, dim, gain=gain)
        )

    def forward(self, x: Tensor, slots: Tensor, weights: bool) -> tuple[Tensor, Tensor | None]:
        if self.first:
            x = self.self_norm(x)
            x = x + self.self_attn(x, x, causal=True)[0]
        else:
            y = self.self_norm(x)
            x = x + self.self_attn(y, y, causal=True)[0]
        y, attn = self.cross_attn(self.cross_norm(x), slots, weights=weights)
        x = x + y
        return x + self.ffn(self.ffn_norm(x)), attn


class ARDecoder(nn.Module):
    """Autoregressive transformer decoder; returns output [B, N, D] and the last block's
    cross-attention [B, heads, N, K]."""

    def __init__(self, dim: int, blocks: int, heads: int):
        super().__init__()
        gain = (3 * blocks) ** -0.5
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, gain, i == 0) for i in range(blocks))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
        attn = None
        for i, blk in enumerate(self.blocks):
            x, attn = blk(x, slots, weights=i == len(self.blocks) - 1)
        assert attn is not None
        return self.norm(x), attn


def spiral_order(grid: np.ndarray) -> np.ndarray:
    """SPOT's spiral_pattern(A, 'top_right') reversed: peel rows off the grid rotated by 90
    degrees, rotating the rest counter-clockwise each time; then read it backwards."""
    a, out = np.rot90(grid, k=1), []
    while a.size:
        out.append(a[0])
        a = a[1:].T[::-1]
    return np.concatenate(out)[::-1].copy()


def patch_orders(size: int) -> Tensor:
    """The 9 patch orders of SPOT (spot.py) on a size x size grid, as raster indices [9, N]:
    raster, column-major from top-left, from top-right (columns), right-top (rows right to left),
    bottom-right (columns), right-bottom (rows), bottom-left (columns), left-bottom (rows), and
    the spiral."""
    g = np.arange(size * size).reshape(size, size)
    up, down = range(size), range(size - 1, -1, -1)
    orders = [
        g.reshape(-1),
        [g[r, c] for c in up for r in up],
        [g[r, c] for c in down for r in up],
        [g[r, c] for r in up for c in down],
        [g[r, c] for c in down for r in down],
        [g[r, c] for r in down for c in down],
        [g[r, c] for c in up for r in down],
        [g[r, c] for r in down for c in up],
        spiral_order(g),
    ]
    return torch.tensor(np.array([np.asarray(o) for o in orders]), dtype=torch.long)


# ----------------------------------------------------------------------------- losses


@fp32
def feature_mse(recon: Tensor, target: Tensor) -> Tensor:
    """SPOT / DINOSAUR: sum of squared errors / (B * N * D), i.e. the mean."""
    return ((target - recon) ** 2).mean()


def match_slots(student: Tensor, teacher: Tensor) -> Tensor:
    """SPOT's att_matching: for each image, the Hungarian assignment (scipy) of the teacher's
    slots (rows) to the student's (columns) maximising the IoU of their argmax masks; student
    [B, K, N] and teacher [B, K, N] scores. Returns [B, K]: the student slot for teacher slot r.
    Empty teacher slots cost 1e3 whatever they are matched to, as in the official code."""
    from scipy.optimize import linear_sum_assignment

    b, k, _ = student.shape
    s = F.one_hot(student.argmax(1), k).float()  # [B, N, K]
    t = F.one_hot(teacher.argmax(1), k).float()
    inter = torch.einsum("bnk,bnj->bkj", t, s)  # teacher k x student j
    union = t.sum(1).unsqueeze(2) + s.sum(1).unsqueeze(1) - inter
    cost = 1 - inter / union.clamp(min=1e-6)
    cost[t.sum(1) == 0] = 1e3
    cost = cost.detach().cpu().double().numpy()
    idx = [linear_sum_assignment(c)[1] for c in cost]
    return torch.as_tensor(np.array(idx), dtype=torch.long, device=student.device)


@fp32
def distillation_ce(logits: Tensor, teacher_masks: Tensor, assignment: Tensor) -> Tensor:
    """Cross-entropy of the student's slot logits [B, N, K] (permuted by the assignment) against
    the argmax of the teacher decoder's masks [B, K, N]."""
    permuted = torch.gather(logits, 2, assignment.unsqueeze(1).expand(-1, logits.shape[1], -1))
    return F.cross_entropy(permuted.transpose(1, 2), teacher_masks.argmax(1))


# ----------------------------------------------------------------------------- methods


def encoder_tokens(
    backbone: nn.Module, x: Tensor, blocks_without_grad: int | None = None
) -> Tensor:
    """Patch tokens after the last block, without the final norm: [B, N, D]. With
    blocks_without_grad = n, the first n blocks run without gradient (SPOT's partly frozen
    encoder)."""
    t = backbone.embed(x)
    n = len(backbone.blocks) if blocks_without_grad is None else blocks_without_grad
    with torch.no_grad():
        for blk in backbone.blocks[:n]:
            t = blk(t)
    for blk in backbone.blocks[n:]:
        t = blk(t)
    return t[:, backbone.num_prefix_tokens :]


class SlotModel(Method):
    """Common part: frozen ViT encoder, slot attention with Gaussian / embedding init, masks."""

    family = "object-centric"
    produces = ("global", "dense", "slots")
    # SPOT: Adam lr 4e-4 at batch 64 -> 4e-7 cosine, clip 0.3 (inf norm)
    defaults = VIT_ADAMW | {
        "lr": 1.6e-3,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,  # warmup_frac (on_step_start) instead
        "min_lr_ratio": 1e-3,
        "clip_grad": 0.3,
    }
    truncate = "none"

    def extractor(self, kind: str, source=None):
        return slot_features(self, kind, source)

    def __init__(self, backbone: nn.Module, image_size: int, cfg: Any):
        super().__init__()
        if not is_vit(backbone):
            raise UserError(
                f"{type(self).__name__} needs a ViT encoder (vit_tiny, vit_small, ... or "
                f"--init-from a ViT model), not {backbone.arch.get('name')}"
            )
        if cfg.num_slots < 1 or cfg.slot_iters < 1:
            raise UserError("num_slots and slot_iters must be at least 1")
        self.backbone, self.cfg, self.image_size = backbone, cfg, image_size
        self.freeze_encoder(0)
        self.grid = image_size // backbone.patch_size
        self.num_patches = self.grid**2
        d = backbone.embed_dim
        self.embed_dim = d
        self.slot_attn = SlotAttention(d, cfg.slot_dim, cfg.slot_mlp_dim, cfg.slot_iters)
        self.slot_proj = nn.Sequential(linear(cfg.slot_dim, d, bias=False), nn.LayerNorm(d))
        self.spec = augment.whole_view(image_size)

    def init_slots_params(self) -> None:
        s = self.cfg.slot_dim
        self.slot_mu = nn.Parameter(torch.zeros(1, 1, s))
        self.slot_log_sigma = nn.Parameter(torch.zeros(1, 1, s))
        nn.init.xavier_uniform_(self.slot_mu)
        nn.init.xavier_uniform_(self.slot_log_sigma)

    def freeze_encoder(self, trainable_blocks: int) -> None:
        """Everything frozen but the last `trainable_blocks` blocks (SPOT's finetune_blocks_after;
        the patch embedding, [CLS], positions and final norm always frozen)."""
        self.backbone.requires_grad_(False)
        n = len(self.backbone.blocks)
        self.trainable_blocks = max(0, min(int(trainable_blocks), n))
        for blk in self.backbone.blocks[n - self.trainable_blocks :]:
            blk.requires_grad_(True)

    def train(self, mode: bool = True) -> SlotModel:
        super().train(mode)
        self.backbone.eval()  # the encoder runs in eval mode, as SPOT's forward_encoder
        return self

    def features(self, x: Tensor) -> Tensor:
        n = len(self.backbone.blocks) - self.trainable_blocks
        if self.trainable_blocks == 0:
            with torch.no_grad():
                return encoder_tokens(self.backbone, x)
        return encoder_tokens(self.backbone, x, n)

    def initial_slots(self, batch: int, device: torch.device, generator=None) -> Tensor:
        """Gaussian init mu + sigma * noise; the noise from the step generator in training (drawn
        for the global batch), from `generator` (fixed seed) for features."""
        k, s = self.cfg.num_slots, self.cfg.slot_dim
        if generator is None:
            noise = self.draw_global(
                lambda n, g: torch.randn(n, k, s, generator=g, device=device), batch, 601, device
            )
        else:
            noise = torch.randn(batch, k, s, generator=generator, device=device)
        return self.slot_mu + self.slot_log_sigma.exp() * noise.to(self.slot_mu.dtype)

    def slots_of(self, feats: Tensor, generator=None) -> tuple[Tensor, Tensor, Tensor]:
        init = self.initial_slots(feats.shape[0], feats.device, generator)
        return self.slot_attn(feats, init, self.truncate)

    @torch.no_grad()
    def slot_masks(self, x: Tensor, which: str = "decoder", seed: int = 0) -> Tensor:
        """Soft masks [B, K, h, w] (sum 1 over K) of normalised images x: the decoder's
        (default, the papers' evaluation) or slot attention's."""
        g = torch.Generator(device=x.device).manual_seed(seed)
        feats = self.features(x)
        slots, attn, _ = self.slots_of(feats, g)
        m = self.decoder_masks(slots, feats) if which == "decoder" else attn.transpose(1, 2)
        h = x.shape[-2] // self.backbone.patch_size
        return m.reshape(x.shape[0], -1, h, x.shape[-1] // self.backbone.patch_size).float()

    def decoder_masks(self, slots: Tensor, feats: Tensor) -> Tensor:
        raise NotImplementedError

    def on_step_start(self, step: int, total_steps: int, optimizer: Any) -> None:
        """Linear warm-up over warmup_frac of the run, then cosine (SPOT's cosine_scheduler)."""
        schedule_groups(optimizer, step, total_steps, int(self.cfg.warmup_frac * total_steps))

    def clip_gradients(self, max_norm: float) -> None:
        """SPOT / DINOSAUR: clip_grad_norm_(parameters, 0.3, 'inf') (the largest entry)."""
        params = [p for p in self.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=math.inf)


class DINOSAUR(SlotModel):
    """Slot attention, DINOSAUR form: reconstruct frozen ViT patch features from slots with an MLP
    decoder"""

    method_name, config_cls = "slot_attention", SlotAttentionConfig

    def __init__(self, backbone: nn.Module, image_size: int, cfg: SlotAttentionConfig):
        super().__init__(backbone, image_size, cfg)
        self.init_slots_params()
        self.decoder = MlpDecoder(
            self.embed_dim, self.embed_dim, self.num_patches, cfg.decoder_hidden
        )

    def decode(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder(self.slot_proj(slots))

    def decoder_masks(self, slots: Tensor, feats: Tensor) -> Tensor:
        return self.decode(slots)[1]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        feats = self.features(x)
        slots, _attn, _ = self.slots_of(feats)
        recon, _masks = self.decode(slots)
        return {"loss": feature_mse(recon, feats.detach())}


class SPOT(SlotModel):
    """SPOT: slot attention with an autoregressive decoder over permuted patch orders; --teacher RUN
    distils its masks"""

    method_name, config_cls = "spot", SPOTConfig

    def __init__(self, backbone: nn.Module, image_size: int, cfg: SPOTConfig):
        super().__init__(backbone, image_size, cfg)
        self.teacher: SPOT | None = None
        if cfg.teacher:
            self.teacher = load_teacher(cfg.teacher, backbone, image_size, cfg)
            self.backbone.load_state_dict(self.teacher.backbone.state_dict())
            self.freeze_encoder(cfg.finetune_blocks)
            self.truncate = "bi-level"
            self.slots_init = nn.Embedding(cfg.num_slots, cfg.slot_dim)  # train_spot_2 student
            nn.init.xavier_uniform_(self.slots_init.weight)
        else:
            self.init_slots_params()
        d = self.embed_dim
        self.register_buffer("orders", patch_orders(self.grid), persistent=False)
        n_orders = self.orders.shape[0] if cfg.permutations == "random" else 1
        self.bos_tokens = nn.Parameter(torch.randn(n_orders, d) * 0.02)
        self.input_proj = nn.Sequential(linear(d, d, bias=False), nn.LayerNorm(d))
        self.decoder = ARDecoder(d, cfg.decoder_blocks, cfg.decoder_heads)

    def initial_slots(self, batch: int, device: torch.device, generator=None) -> Tensor:
        if self.teacher is None:
            return super().initial_slots(batch, device, generator)
        return self.slots_init.weight.unsqueeze(0).expand(batch, -1, -1)

    def train(self, mode: bool = True) -> SPOT:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def decode(self, slots: Tensor, target: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
        """Decode the target tokens [B, N, D] in the patch orders `order` [B] (indices into
        self.orders): returns the prediction [B, N, D] and masks [B, K, N], both in raster
        order."""
        idx = self.orders[order]  # [B, N]
        seq = torch.gather(target, 1, idx.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
        bos = self.bos_tokens[order.clamp(max=self.bos_tokens.shape[0] - 1)].unsqueeze(1)
        dec_in = self.input_proj(torch.cat([bos.to(seq.dtype), seq[:, :-1]], dim=1))
        out, attn = self.decoder(dec_in, self.slot_proj(slots))
        attn = attn.sum(1)  # [B, N, K] over heads, then L1 over slots (spot.py)
        attn = attn / attn.sum(-1, keepdim=True)
        inv = torch.argsort(idx, dim=1)
        out = torch.gather(out, 1, inv.unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        attn = torch.gather(attn, 1, inv.unsqueeze(-1).expand(-1, -1, attn.shape[-1]))
        return out, attn.transpose(1, 2)

    def draw_orders(
        self, batch: int, device: torch.device, salt: int, drawer: Method | None = None
    ) -> Tensor:
        """One patch order per sample (index into self.orders), from the step generator of
        `drawer` (default self; the student draws for its teacher)."""
        if self.cfg.permutations == "standard":
            return torch.zeros(batch, dtype=torch.long, device=device)
        n = self.orders.shape[0]
        return (drawer or self).draw_global(
            lambda total, g: torch.randint(n, (total,), generator=g, device=device),
            batch,
            salt,
            device,
        )

    def decoder_masks(self, slots: Tensor, feats: Tensor) -> Tensor:
        b = slots.shape[0]
        n = self.orders.shape[0] if self.cfg.eval_permutations == "all" else 1
        if self.cfg.permutations == "standard":
            n = 1
        masks = [
            self.decode(slots, feats, torch.full((b,), i, dtype=torch.long, device=slots.device))[1]
            for i in range(n)
        ]
        return torch.stack(masks).mean(0)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        b = x.shape[0]
        if self.teacher is None:
            feats = self.features(x)
            target = feats.detach()
        else:
            with torch.no_grad():
                target = encoder_tokens(self.teacher.backbone, x)  # frozen original encoder
            feats = self.features(x)
        slots, attn, logits = self.slots_of(feats)
        recon, _ = self.decode(slots, target, self.draw_orders(b, x.device, 607))
        mse = feature_mse(recon, target)
        if self.teacher is None:
            return {"loss": mse}
        with torch.no_grad():
            t = self.teacher
            k, sd = t.cfg.num_slots, t.cfg.slot_dim
            noise = self.draw_global(
                lambda n, g: torch.randn(n, k, sd, generator=g, device=x.device), b, 613, x.device
            )
            t_slots = t.slot_attn(target, t.slot_mu + t.slot_log_sigma.exp() * noise)[0]
            order = t.draw_orders(b, x.device, 617, self)  # teacher_eval_permutations random
            t_masks = t.decode(t_slots, target, order)[1]
            assignment = match_slots(attn.transpose(1, 2), t_masks)
        ce = distillation_ce(logits, t_masks, assignment)
        w = self.cfg.distill_weight
        if self.cfg.distill_weight_final >= 0:
            w = cosine_schedule(w, self.cfg.distill_weight_final, self._step, self._total_steps)
        return {"loss": mse + w * ce, "mse": mse.detach(), "distill_ce": ce.detach()}

    def on_step_start(self, step: int, total_steps: int, optimizer: Any) -> None:
        super().on_step_start(step, total_steps, optimizer)
        self._total_steps = total_steps

    _total_steps = 1


def load_teacher(source: str, backbone: nn.Module, image_size: int, cfg: SPOTConfig) -> SPOT:
    """A stage-1 spot run, frozen (eval mode, no gradients), checked to fit the student."""
    from engine.build import load_method

    method, tcfg = load_method(source)
    if not isinstance(method, SPOT) or method.teacher is not None:
        raise UserError(f"--teacher {source}: not a stage-1 spot run (selfsup train --method spot)")
    if method.image_size != image_size or method.cfg.num_slots != cfg.num_slots:
        raise UserError(
            f"--teacher {source}: {method.cfg.num_slots} slots at {method.image_size} px; the "
            f"student has {cfg.num_slots} at {image_size} px (they must match)"
        )
    if method.backbone.arch != backbone.arch:
        raise UserError(
            f"--teacher {source}: its encoder is {method.backbone.arch.get('name')}, the student's "
            f"{backbone.arch.get('name')}; pass --backbone {method.backbone.arch.get('name')}"
        )
    method.eval()
    method.requires_grad_(False)
    return method


# ----------------------------------------------------------------------------- features


class SlotMasks:
    """The "slots" feature kind: masks(images uint8 or [0,1] [B,3,H,W]) -> soft masks
    [B, K, h, w] (float32, sum 1 over K, h = w = image_size / patch size), deterministic (fixed
    slot noise). which: "decoder" (the papers' masks) or "slots" (slot attention's)."""

    def __init__(self, method: SlotModel, source: str = "", which: str = "decoder"):
        self.method = method.eval()
        self.source, self.which = source, which
        self.image_size = method.image_size
        self.num_slots = method.cfg.num_slots
        self.patch_size = method.backbone.patch_size
        self.mean, self.std = augment.MEAN, augment.STD
        self.requested_precision = "fp32"

    def set_precision(self, requested: str) -> SlotMasks:
        self.requested_precision = requested  # masks are computed in fp32 (small models)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    def to(self, device: str | torch.device) -> SlotMasks:
        self.method.to(device)
        return self

    def prepare(self, images: Tensor) -> Tensor:
        x = images.to(self.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def masks(self, images: Tensor) -> Tensor:
        return self.method.slot_masks(self.prepare(images), self.which)

    __call__ = masks


def slot_features(method: SlotModel, kind: str, source: Any = None) -> Any:
    if kind != "slots":
        return None  # global / dense: the encoder backbone
    return SlotMasks(method, str(source or ""))
