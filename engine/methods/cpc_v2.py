"""Contrastive Predictive Coding v2 on image patches (Hénaff et al. 2020, "Data-Efficient Image
Recognition with Contrastive Predictive Coding"), scaled to small images.

Each image is cut into a grid of overlapping patches (the paper: 64 px patches with stride 32,
a 7 x 7 grid; here 8 px patches with stride 4 give the same 7 x 7 grid on a 32 px image). A patch
encoder (a small ResNet whose normalisation is layer normalisation, GroupNorm(1, C), never batch
normalisation: batch statistics would let patches of one image talk to each other and the task
be solved without learning) maps every patch to a vector z_{i,j}. A masked, PixelCNN-style
context network over the grid of z gives c_{i,j}, which sees only rows <= i; linear heads W_k
predict z_{i+k,j} (k = 1..K rows below) from c_{i,j}, scored by InfoNCE against every other
patch of every image in the batch. As in CPC v2 the task is done in both directions: top-down,
and bottom-up on the grid flipped vertically (its own context network and heads).

Patch augmentations of the paper kept: a random crop of each patch (a spatial jitter of up to
`patch_jitter` px inside a slightly larger window), a random horizontal flip per patch, and
colour dropping (each patch keeps one random channel, the other two set to the dataset mean).
The measure is the paper's linear probe on the patch encoder's features pooled over the grid:
the backbone's forward(x) is that pooled vector, so `selfsup eval linear` runs the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.errors import UserError
from engine.losses import fp32
from engine.methods.base import Method


@dataclass
class CPCv2Config:
    patch_size: int = opt(8, "patch side in pixels (paper 64 px on 224 px images)")
    patch_stride: int = opt(4, "patch stride: half the side, so patches overlap (paper 32)")
    width: int = opt(32, "channels of the patch encoder's first stage (paper ResNet-161)")
    code_dim: int = opt(64, "size of each patch's code z (paper 4096, ResNet-161's pool)")
    context_layers: int = opt(3, "masked residual blocks of the context network (paper 12)")
    predict_rows: int = opt(3, "predict k = 1..K rows below (the paper's grid: up to 5)")
    patch_jitter: int = opt(1, "random crop of each patch: shift of up to this many px")
    color_drop_p: float = opt(1.0, "chance a patch keeps one random channel only (paper: all)")
    bidirectional: bool = opt(True, "also predict upwards, on the flipped grid (paper: yes)")


def grid_size(image: int, patch: int, stride: int) -> int:
    return (image - patch) // stride + 1


def patch_grid(x: Tensor, patch: int, stride: int) -> Tensor:
    """[B, C, H, W] -> [B, gh, gw, C, patch, patch], row-major over the grid."""
    return x.unfold(2, patch, stride).unfold(3, patch, stride).permute(0, 2, 3, 1, 4, 5)


def channel_ln(c: int) -> nn.GroupNorm:
    """Layer normalisation over a sample's channels and positions (no batch statistics)."""
    return nn.GroupNorm(1, c)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.n1, self.c1 = channel_ln(c), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = channel_ln(c), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # pre-activation ResNet v2, as the paper's encoder
        return x + self.c2(F.relu(self.n2(self.c1(F.relu(self.n1(x))))))


class PatchEncoder(nn.Module):
    """A small pre-activation ResNet with layer norm: patch [N, 3, p, p] -> code [N, D]."""

    def __init__(self, width: int, code_dim: int):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            ResBlock(w),
            channel_ln(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            ResBlock(2 * w),
            channel_ln(2 * w),
            nn.ReLU(),
        )
        self.out = nn.Linear(2 * w, code_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.net(x).mean(dim=(2, 3)))


class CPCPatchBackbone(nn.Module):
    """The patch encoder over the grid of an image: forward(x) [B, D] the codes averaged over
    the grid (the paper's linear-probe features), forward_dense [B, D, gh, gw]."""

    def __init__(self, cfg: CPCv2Config, image_size: int):
        super().__init__()
        self.patch, self.grid_stride = cfg.patch_size, cfg.patch_stride
        self.encoder = PatchEncoder(cfg.width, cfg.code_dim)
        self.embed_dim, self.stride = cfg.code_dim, cfg.patch_stride
        self.arch = {"name": "cpc_v2_patches", "image_size": image_size}

    def encode_patches(self, patches: Tensor) -> Tensor:
        """[B, gh, gw, 3, p, p] -> codes [B, D, gh, gw]."""
        b, gh, gw = patches.shape[:3]
        z = self.encoder(patches.reshape(b * gh * gw, *patches.shape[3:]))
        return z.view(b, gh, gw, -1).permute(0, 3, 1, 2)

    def forward_dense(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.patch:
            raise UserError(f"CPC v2: images of {tuple(x.shape[-2:])} px are smaller than a patch")
        return self.encode_patches(patch_grid(x, self.patch, self.grid_stride))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_dense(x).mean(dim=(2, 3))


class RowCausalConv(nn.Module):
    """3 x 3 convolution whose output at row i sees rows i-2..i only (a PixelCNN-style mask
    over rows: zero padding above, none below)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, (2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 0)))


class PositionLN(nn.Module):
    """Layer norm over channels at each grid position (normalising over positions would mix
    rows below into the context)."""

    def __init__(self, c: int):
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ContextNet(nn.Module):
    """Masked residual blocks over the grid of codes: c_{i,j} depends on z_{u,v}, u <= i."""

    def __init__(self, d: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleList([PositionLN(d), RowCausalConv(d), PositionLN(d), nn.Conv2d(d, d, 1)])
            for _ in range(layers)
        )
        self.norm = PositionLN(d)

    def forward(self, z: Tensor) -> Tensor:
        h = z
        for n1, conv, n2, proj in self.blocks:
            h = h + proj(F.relu(n2(conv(F.relu(n1(h))))))
        return self.norm(h)


@fp32
def info_nce(pred: Tensor, codes: Tensor, target: Tensor) -> Tensor:
    """InfoNCE: cross-entropy of the scores pred . codes^T (no temperature, as CPC) on the index
    of the true code. pred [N, D], codes [M, D] (every patch of every image), target [N]."""
    return F.cross_entropy(pred @ codes.t(), target)


def cpc_loss(context: Tensor, z: Tensor, heads: nn.ModuleList) -> Tensor:
    """Mean over k = 1..K of the InfoNCE of W_k c_{i,j} for z_{i+k,j}: context and z
    [B, D, G, G']; the candidates of every prediction are all B * G * G' codes (the same image's
    other patches and every other image's), the true one at b * G * G' + (i + k) * G' + j."""
    b, d, g, gw = z.shape
    codes = z.permute(0, 2, 3, 1).reshape(-1, d)
    losses = []
    for k, head in enumerate(heads, start=1):
        if k >= g:
            break
        pred = head(context[:, :, : g - k].permute(0, 2, 3, 1)).reshape(-1, d)
        bi, ii, jj = torch.meshgrid(
            torch.arange(b), torch.arange(g - k), torch.arange(gw), indexing="ij"
        )
        target = (bi * g * gw + (ii + k) * gw + jj).flatten().to(z.device)
        losses.append(info_nce(pred, codes, target))
    if not losses:
        raise UserError(f"CPC v2: a grid of {g} rows leaves nothing to predict")
    return torch.stack(losses).mean()


class CPCv2(Method):
    """CPC v2: a masked context network over a grid of patch codes predicts the rows below
    (InfoNCE), both directions"""

    method_name, family, config_cls = "cpc_v2", "contrastive", CPCv2Config
    # paper: Adam; no weight decay on the small data, lr for batch 256
    defaults = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "backbone": "cpc_v2_patches",
    }

    def extractor(self, kind: str, source=None):
        return cpc_v2_features(self, kind, source)

    def __init__(self, image_size: int, cfg: CPCv2Config):
        super().__init__()
        if cfg.patch_size > image_size:
            raise UserError(f"CPC v2: patch_size {cfg.patch_size} > image size {image_size}")
        g = grid_size(image_size, cfg.patch_size, cfg.patch_stride)
        if g < 2:
            raise UserError(
                f"CPC v2: {image_size} px images give a {g} x {g} grid; lower --patch-size or --patch-stride"
            )
        self.cfg, self.image_size = cfg, image_size
        self.backbone = CPCPatchBackbone(cfg, image_size)
        d = cfg.code_dim
        directions = 2 if cfg.bidirectional else 1
        self.context = nn.ModuleList(ContextNet(d, cfg.context_layers) for _ in range(directions))
        self.heads = nn.ModuleList(
            nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(cfg.predict_rows))
            for _ in range(directions)
        )
        # the image-level crop before the grid is cut; per-patch augmentations follow
        self.spec = augment.ViewSpec(
            size=image_size, scale=(0.6, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0
        )

    @classmethod
    def build(cls, cfg, m: CPCv2Config) -> CPCv2:
        return cls(cfg.image_size, m)

    def augmented_patches(self, x: Tensor) -> Tensor:
        """x [B, 3, S, S] normalised -> [B, G, G, 3, p, p]: each patch a random crop of a window
        `patch_jitter` px larger on every side, flipped at random, and (colour dropping) with
        one random channel kept."""
        p, s, j = self.cfg.patch_size, self.cfg.patch_stride, self.cfg.patch_jitter
        win = patch_grid(F.pad(x, (j, j, j, j), mode="replicate") if j else x, p + 2 * j, s)
        b, gh, gw = win.shape[:3]
        per = gh * gw

        def draw(n: int, g: torch.Generator) -> dict[str, Tensor]:
            dev = g.device
            return {
                "dy": torch.randint(0, 2 * j + 1, (n, per), generator=g, device=dev),
                "dx": torch.randint(0, 2 * j + 1, (n, per), generator=g, device=dev),
                "flip": torch.rand(n, per, generator=g, device=dev) < 0.5,
                "drop": torch.rand(n, per, generator=g, device=dev) < self.cfg.color_drop_p,
                "keep": torch.randint(0, 3, (n, per), generator=g, device=dev),
            }

        r = {k: v.flatten() for k, v in self.draw_global(draw, b, salt=11, device=x.device).items()}
        w = win.reshape(b * per, 3, p + 2 * j, p + 2 * j)
        ar = torch.arange(p, device=x.device)
        rows, cols = r["dy"][:, None] + ar, r["dx"][:, None] + ar  # [N, p]
        n = torch.arange(b * per, device=x.device)[:, None, None]
        out = w[n, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [N, 3, p, p]
        out = torch.where(r["flip"][:, None, None, None], out.flip(-1), out)
        keep = F.one_hot(r["keep"], 3).to(out.dtype)
        mask = torch.where(r["drop"][:, None], keep, torch.ones_like(keep))
        out = out * mask[:, :, None, None]  # dropped channels at 0: the mean after normalising
        return out.view(b, gh, gw, 3, p, p)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        z = self.backbone.encode_patches(self.augmented_patches(x))  # [B, D, G, G]
        out: dict[str, Tensor] = {}
        grids = [z, z.flip(2)]  # top-down, then bottom-up (the grid upside down)
        for name, ctx, heads, grid in zip(("down", "up"), self.context, self.heads, grids):
            out[f"loss_{name}"] = cpc_loss(ctx(grid), grid, heads)
        out["loss"] = torch.stack(list(out.values())).mean()
        return out


def cpc_v2_features(method: CPCv2, kind: str, source=None):
    """The patch encoder over the grid (pooled for "global", the grid for "dense"), with the
    ImageNet normalisation it was trained with."""
    from engine.features import FeatureExtractor

    return FeatureExtractor(method.backbone, image_size=method.image_size, source=str(source))
