"""Vision Transformer that exposes what SSL needs: patch tokens, token masking, last attention.

Parameter names follow the community layout (DINO, iBOT, MAE, MoCo v3, DINOv2, timm):
patch_embed.proj, blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}, cls_token, register_tokens, pos_embed, norm. So published checkpoints load with
their prefixes stripped, and the options below reproduce what each authors' code computes:
`heads` (MoCo v3's ViT-S has 12, DeiT's 6), `layerscale` (DINOv2), `registers` (DINOv2 _reg),
`interpolation` of the position grid for other input sizes:
  "size"        bicubic to the new grid (our own models),
  "dino"        bicubic with scale factor (n + 0.1) / N (DINO, iBOT, DINOv2 without registers),
  "antialias"   bicubic to the new grid with antialiasing (DINOv2 _reg, timm: MAE, MoCo v3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError

VIT_SIZES = {  # name: (embed_dim, depth, heads), as in DeiT / DINO
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise UserError(f"ViT width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if return_attention:
            attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(dim=-1)
            out = attn @ v
        else:
            attn, out = None, F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attn


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a residual branch per sample with probability p and
    scale the kept ones by 1 / (1 - p) (timm / DINO's drop_path)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def set_drop_path(module: nn.Module, rate: float) -> None:
    """Set every DropPath below `module` to `rate` (0 turns stochastic depth off, e.g. in an
    EMA teacher copied from a student that uses it)."""
    for m in module.modules():
        if isinstance(m, DropPath):
            m.p = rate


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual gain (CaiT / DINOv2's ls1, ls2)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layerscale: float | None = None,
    ):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls1 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.ls2 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(self.ls1(y))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of ours written before the community names: mlp.0 / mlp.2
        for old, new in (("mlp.0.", "mlp.fc1."), ("mlp.2.", "mlp.fc2.")):
            for k in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + k[len(prefix + old) :]] = state_dict.pop(k)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int, rows_first: bool = False) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [1, 1 + h*w, dim], zeros for [CLS], patches in
    row-major order: [sin(a w), cos(a w), sin(b w), cos(b w)] with w_i = 10000^(-i / (dim/4)),
    i < dim/4. MAE (get_2d_sincos_pos_embed): a = the patch's column, b = its row. MoCo v3
    (build_2d_sincos_position_embedding, its meshgrid in "ij" order): a = row, b = column."""
    if dim % 4:
        raise UserError(f"a sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    parts = []
    for pos in (rows, cols) if rows_first else (cols, rows):
        out = pos.flatten()[:, None] * omega[None]
        parts += [torch.sin(out), torch.cos(out)]
    emb = torch.cat(parts, dim=1).float()
    return torch.cat([torch.zeros(1, dim), emb])[None]


class ViT(nn.Module):
    """ViT with a [CLS] token; `forward_tokens` supports MAE-style keep and BEiT-style mask."""

    def __init__(
        self,
        size: str = "small",
        patch_size: int = 16,
        image_size: int = 224,
        depth: int | None = None,
        mask_token: bool = False,
        drop_path: float = 0.0,
        pos_embed: str = "learned",
        init: str = "default",
        heads: int | None = None,
        layerscale: float | None = None,
        registers: int = 0,
        interpolation: str = "size",
        global_pool: str = "cls",
    ):
        super().__init__()
        dim, default_depth, default_heads = VIT_SIZES[size]
        if global_pool not in ("cls", "avg"):
            raise UserError(f"unknown ViT global pooling '{global_pool}' (cls | avg)")
        # the global embedding: the [CLS] token, or the mean patch token for methods whose
        # losses never reach [CLS] (MOCA, which the paper evaluates by average pooling)
        self.global_pool = global_pool
        depth, heads = depth or default_depth, heads or default_heads
        if interpolation not in ("size", "dino", "antialias"):
            raise UserError(f"unknown ViT position interpolation '{interpolation}'")
        self.interpolation, self.num_registers = interpolation, int(registers)
        self.patch_size, self.embed_dim, self.stride, self.num_heads = (
            patch_size,
            dim,
            patch_size,
            heads,
        )
        self.grid = image_size // patch_size
        self.patch_embed = PatchEmbed(dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim)) if registers else None
        # The [MASK] embedding exists only for methods that mask (MaskFeat, iBOT): a parameter
        # no loss reaches would get no gradient, and DDP fails on such parameters.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        rates = [drop_path * i / max(1, depth - 1) for i in range(depth)]  # DINO's linear rule
        self.blocks = nn.ModuleList(
            Block(dim, heads, drop_path=r, layerscale=layerscale) for r in rates
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.arch = {"name": f"vit_{size}_p{patch_size}", "image_size": image_size, "depth": depth}
        # only what differs from the defaults: our own checkpoints' arch stays as it was
        extra = {"heads": heads if heads != default_heads else None, "layerscale": layerscale}
        extra |= {"registers": registers or None}
        extra |= {"interpolation": interpolation if interpolation != "size" else None}
        extra |= {"global_pool": global_pool if global_pool != "cls" else None}
        self.arch.update({k: v for k, v in extra.items() if v is not None})
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        self.apply(_init_weights)
        if pos_embed != "learned":  # MAE / MoCo v3: fixed sin-cos, not trained
            if pos_embed not in ("sincos", "sincos_rows"):
                raise UserError(f"unknown ViT position embedding '{pos_embed}'")
            emb = sincos_pos_embed(dim, self.grid, self.grid, rows_first=pos_embed == "sincos_rows")
            self.pos_embed.data.copy_(emb)
            self.pos_embed.requires_grad_(False)
        if init == "mae":  # models_mae.py: xavier_uniform on every Linear
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
        elif init == "mocov3":  # moco-v3 vits.py
            for name, m in self.named_modules():
                if isinstance(m, nn.Linear):
                    if name.endswith("qkv"):  # q, k and v treated as three matrices
                        val = math.sqrt(6.0 / (m.weight.shape[0] // 3 + m.weight.shape[1]))
                        nn.init.uniform_(m.weight, -val, val)
                    else:
                        nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(self.cls_token, std=1e-6)
            val = math.sqrt(6.0 / (3 * patch_size * patch_size + dim))
            nn.init.uniform_(self.patch_embed.proj.weight, -val, val)
        elif init != "default":
            raise UserError(f"unknown ViT initialisation '{init}'")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the mask token became optional hold one for every ViT;
        # a ViT without it ignores the key, a ViT that masks keeps its own when it is missing.
        key = prefix + "mask_token"
        if self.mask_token is None:
            state_dict.pop(key, None)
        elif key not in state_dict:
            state_dict[key] = self.mask_token.detach().clone()
        elif state_dict[key].dim() == 2:  # DINOv2 stores it as [1, D]
            state_dict[key] = state_dict[key][None]
        for old in ("weight", "bias"):  # ours before the community names: patch_embed.weight
            if prefix + f"patch_embed.{old}" in state_dict:
                state_dict[prefix + f"patch_embed.proj.{old}"] = state_dict.pop(
                    prefix + f"patch_embed.{old}"
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def num_patches(self, h: int, w: int) -> int:
        return (h // self.patch_size) * (w // self.patch_size)

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The position grid resized for an input of h x w pixels, by the model's own rule."""
        gh, gw, n = h // self.patch_size, w // self.patch_size, self.grid
        if gh == n and gw == n:
            return self.pos_embed
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.float().reshape(1, n, n, -1).permute(0, 3, 1, 2)
        if self.interpolation == "dino":  # the authors' offset, kept for bit-compatibility
            how = {"scale_factor": ((gh + 0.1) / n, (gw + 0.1) / n)}
        else:
            how = {"size": (gh, gw), "antialias": self.interpolation == "antialias"}
        grid_pos = F.interpolate(grid_pos, mode="bicubic", **how)
        grid_pos = grid_pos.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([cls_pos, grid_pos], dim=1)

    def embed(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch embedding + position, with optional mask-token replacement or patch keeping."""
        pos = self.interpolate_pos_embed(x.shape[-2], x.shape[-1])
        tokens = self.patch_embed(x)  # [B, N, D]
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("this ViT has no mask token; build it with mask_token=True")
            tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + pos[:, 1:]
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        cls = (self.cls_token + pos[:, :1]).expand(tokens.shape[0], -1, -1)
        if self.register_tokens is None:
            return torch.cat([cls, tokens], dim=1)
        regs = self.register_tokens.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, regs, tokens], dim=1)  # DINOv2: registers after [CLS], no position

    @property
    def num_prefix_tokens(self) -> int:
        """[CLS] and the registers: the tokens before the patches."""
        return 1 + self.num_registers

    def forward_tokens(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """All output tokens [B, 1+R+N', D] (normalised); N' = K when `keep` is given."""
        t = self.embed(x, mask, keep)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.forward_tokens(x)
        return t[:, self.num_prefix_tokens :].mean(1) if self.global_pool == "avg" else t[:, 0]

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's patch tokens after the norm, as a map (DINO's video protocol and
        DINOv2's PCA figure use exactly these)."""
        t = self.forward_tokens(x)[:, self.num_prefix_tokens :]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return t.transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """The normalised tokens of the last n blocks (DINO / DINOv2's get_intermediate_layers)."""
        t, out = self.embed(x), []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i >= len(self.blocks) - n:
                out.append(self.norm(t))
        return out

    @torch.no_grad()
    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights of the last block: [B, heads, 1+R+N, 1+R+N]."""
        t = self.embed(x)
        for blk in self.blocks[:-1]:
            t = blk(t)
        return self.blocks[-1](t, return_attention=True)[1]


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):  # patch embedding: xavier on the flattened kernel, as in MAE
        w = m.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def default_patch_size(image_size: int) -> int:
    """Keep at least a 4x4 grid of patches on small images."""
    if image_size >= 128:
        return 16
    return 8 if image_size >= 48 else 4
