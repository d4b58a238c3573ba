"""Masking rules, MAE / MaskFeat / iBOT pieces, and a few training steps of each."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from engine.backbones import build_backbone
from engine.masking import (
    attention_masks,
    block_mask,
    block_masks,
    keep_lowest,
    patchify,
    random_masking,
    restore_order,
    tokens_and_attention,
    unpatchify,
)
from engine.methods.ibot import IBOT, IBOTConfig, ibot_patch_loss
from engine.methods.mae import MAE, MAEConfig
from engine.methods.maskfeat import MaskFeat, MaskFeatConfig


def tiny_vit(size: int = 16, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_backbone("vit_tiny", size, depth=2, **kw)  # patch 4 at 16 px: 4x4 grid


def shapes_batch(root, n: int = 8, size: int = 16) -> torch.Tensor:
    from engine.data import ImageFolderDataset

    ds = ImageFolderDataset(root, load_size=size)
    return torch.stack([ds[i * 4]["image"] for i in range(n)])  # both classes of shapes, uint8


# ---- masking ---------------------------------------------------------------------------------


def test_random_masking_ratio_and_unshuffle_are_exact():
    g = torch.Generator().manual_seed(0)
    km = random_masking(5, 64, 0.75, generator=g)
    assert km.ids_keep.shape == (5, 16)
    assert (km.mask.sum(1) == 48).all()  # exactly 75% masked, every row
    assert len({tuple(r.tolist()) for r in km.ids_keep}) == 5  # a different shuffle per sample
    assert not km.mask.gather(1, km.ids_keep).any()  # kept = not masked
    tokens = torch.randn(5, 64, 7)
    visible = torch.gather(tokens, 1, km.ids_keep[..., None].expand(-1, -1, 7))
    fill = torch.full((1, 1, 7), 99.0)
    restored = restore_order(visible, fill, km.ids_restore)
    assert torch.equal(restored[~km.mask], tokens[~km.mask])  # bit-exact un-shuffle
    assert (restored[km.mask] == 99.0).all()


def test_keep_lowest_masks_highest_scores():
    km = keep_lowest(torch.tensor([[0.5, 0.1, 0.9, 0.3]]), 2)
    assert km.ids_keep.tolist() == [[1, 3]] and km.mask.tolist() == [[True, False, True, False]]


def test_patchify_roundtrip_and_layout():
    x = torch.randn(2, 3, 16, 12)
    p = patchify(x, 4)
    assert p.shape == (2, 12, 48)
    torch.testing.assert_close(unpatchify(p, 4, 16, 12), x, rtol=0, atol=0)
    # patch 1 is the second patch of the first row; its first value is pixel (0, 4) of channel 0
    assert p[0, 1, 0] == x[0, 0, 0, 4] and p[0, 1, 1] == x[0, 1, 0, 4]


def test_block_masks_reach_the_ratio_in_blocks_and_are_reproducible():
    m = block_mask(14, 14, 0.4 * 196, random.Random(0))
    assert 0.3 * 196 <= int(m.sum()) <= math.ceil(0.4 * 196)  # BEiT lands on or just under target
    grid = m.reshape(14, 14).float()
    # blocks, not salt-and-pepper: most masked patches have a masked 4-neighbour
    nb = F.conv2d(
        grid[None, None],
        torch.tensor([[[[0, 1, 0], [1, 0, 1], [0, 1, 0]]]], dtype=torch.float32),
        padding=1,
    )[0, 0]
    assert ((nb > 0) & (grid > 0)).sum() >= 0.9 * grid.sum()
    a = block_masks(64, 8, 8, 0.3, torch.Generator().manual_seed(1), ratio_var=0.2, prob=0.5)
    b = block_masks(64, 8, 8, 0.3, torch.Generator().manual_seed(1), ratio_var=0.2, prob=0.5)
    assert torch.equal(a, b)
    masked_rows = a.any(1).float().mean()
    assert 0.3 < masked_rows < 0.7  # iBOT: about half of the crops are masked
    ratios = a[a.any(1)].float().mean(1)
    assert ratios.min() >= 0.05 and ratios.max() <= 0.5 + 1e-6
    assert not block_masks(4, 8, 8, 0.3, torch.Generator().manual_seed(1), prob=0.0).any()


def test_attention_masks_high_low_hint():
    attn = torch.tensor([[0.05, 0.30, 0.02, 0.20, 0.10, 0.08, 0.15, 0.10]])
    high = attention_masks(attn, 0.25, "high")
    assert high.nonzero()[:, 1].tolist() == [1, 3]
    low = attention_masks(attn, 0.25, "low")
    assert low.nonzero()[:, 1].tolist() == [0, 2]
    attn = torch.rand(3, 100, generator=torch.Generator().manual_seed(0))
    hint = attention_masks(attn, 0.5, "hint", hint_max=0.2)
    assert (hint.sum(1) == 50 - 10).all()  # 0.5 * 0.2 * 100 hints revealed
    top20 = torch.zeros_like(hint).scatter_(1, attn.argsort(1, descending=True)[:, :20], True)
    revealed = attention_masks(attn, 0.5, "high") & ~hint
    assert (revealed <= top20).all()  # hints come from the most attended patches


def test_tokens_and_attention_is_one_forward_of_both():
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 16, 16)
    tokens, attn = tokens_and_attention(vit, x)
    torch.testing.assert_close(tokens, vit.forward_tokens(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn, vit.get_last_selfattention(x), atol=1e-6, rtol=1e-5)


# ---- MAE -------------------------------------------------------------------------------------


def mae_model(**kw) -> MAE:
    return MAE(tiny_vit(), 16, MAEConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2, **kw))


def test_mae_encoder_sees_only_visible_patches_and_loss_only_masked():
    mae = mae_model().eval()
    x = torch.randn(2, 3, 16, 16)
    mae.set_step_context(0, 0)
    km = mae.choose_mask(x)
    assert (km.mask.sum(1) == 12).all()  # 75% of 16 patches
    latent = mae.forward_encoder(x, km)
    assert latent.shape == (2, 1 + 4, 192)
    # changing a hidden patch's pixels does not change the encoding
    x2 = patchify(x, 4).clone()
    x2[km.mask] += 5.0
    torch.testing.assert_close(mae.forward_encoder(unpatchify(x2, 4, 16, 16), km), latent)
    pred = mae.forward_decoder(latent, km.ids_restore)
    loss = mae.forward_loss(x, pred, km.mask)
    pred_changed = pred.clone()
    pred_changed[~km.mask] += 10.0  # visible patches do not count
    assert mae.forward_loss(x, pred_changed, km.mask) == loss
    t = mae.targets(x)  # norm_pix_loss: each patch has zero mean, unit variance
    assert t.mean(-1).abs().max() < 1e-5 and (t.var(-1) - 1).abs().max() < 1e-3
    # hand computation of the masked MSE
    manual = ((pred - t) ** 2).mean(-1)[km.mask].mean()
    torch.testing.assert_close(loss, manual)


def test_mae_attmask_hides_the_most_attended_patches():
    mae = mae_model(masking="attmask_high").eval()
    x = torch.randn(3, 3, 16, 16)
    km = mae.choose_mask(x)
    attn = mae.backbone.get_last_selfattention(x)[:, :, 0, 1:].mean(1)
    top = attn.argsort(1, descending=True)[:, :12]
    assert torch.equal(km.mask, torch.zeros_like(km.mask).scatter_(1, top, True))


def test_masks_drawn_for_the_global_batch_are_sliced_per_process():
    """Under DDP each process must use its rows of the one-process masks."""
    x = torch.randn(4, 3, 16, 16)
    mf = MaskFeat(tiny_vit(mask_token=True), 16, MaskFeatConfig())
    mf.set_step_context(3, 5)
    whole = mf.masks(x)
    mf.set_step_context(3, 5, offset=2, global_batch=4)
    torch.testing.assert_close(mf.masks(x[2:]), whole[2:])
    mae = mae_model()
    mae.set_step_context(3, 5)
    full = mae.choose_mask(x)
    mae.set_step_context(3, 5, offset=2, global_batch=4)
    assert torch.equal(mae.choose_mask(x[2:]).mask, full.mask[2:])
    ib = IBOT(tiny_vit(mask_token=True), 16, small_ibot())
    glob = torch.randn(8, 3, 16, 16)  # 2 crops x 4 images
    ib.set_step_context(3, 5)
    m_all = ib.masks(glob, None)
    ib.set_step_context(3, 5, offset=2, global_batch=4)
    m_part = ib.masks(torch.cat([glob[2:4], glob[6:8]]), None)
    assert torch.equal(m_part, torch.cat([m_all[2:4], m_all[6:8]]))


# ---- iBOT ------------------------------------------------------------------------------------


def small_ibot(**kw) -> IBOTConfig:
    return IBOTConfig(
        out_dim=64, patch_out_dim=48, hidden_dim=64, bottleneck_dim=32, n_local=2, **kw
    )


def test_ibot_patch_loss_by_hand():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    center = torch.randn(1, 1, 5) * 0.1
    loss = ibot_patch_loss([s], [t], [mask], center, 0.1, 0.04)
    tp = F.softmax((t - center) / 0.04, -1)
    ce = -(tp * F.log_softmax(s / 0.1, -1)).sum(-1)
    expected = ((ce[0, 0] + ce[0, 2]) / 2 + 0.0) / 2  # the unmasked image contributes 0
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("masking,shared", [("block", True), ("attmask_hint", False)])
def test_ibot_forward_shapes_centers_and_attmask(masking, shared):
    ib = IBOT(
        tiny_vit(mask_token=True),
        16,
        small_ibot(masking=masking, shared_head=shared, mask_prob=1.0),
    )
    images = (torch.rand(4, 3, 16, 16) * 255).to(torch.uint8)
    ib.set_step_context(0, 0)
    out = ib({"image": images})
    assert set(out) >= {"loss", "loss_cls", "loss_patch"} and torch.isfinite(out["loss"])
    assert ib.center.abs().sum() > 0 and ib.center_patch.abs().sum() > 0  # both centers moved
    assert ib.center_patch.shape == (1, 1, 64 if shared else 48)
    assert 0 < float(out["mask_ratio"]) < 0.6
    ib.on_step_end(1, 10)
    assert float(ib.teacher_patch_temp) > 0.04


def _steps(method, images, n, lr=1e-3):
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(n):
        method.set_step_context(0, 0)  # same views and masks every step: the loss must fall
        out = method({"image": images, "label": torch.zeros(len(images), dtype=torch.long)})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(step + 1, 1000)
        losses.append(float(out["loss"].detach()))
    assert all(math.isfinite(v) for v in losses)
    return losses


def test_mae_maskfeat_ibot_train_a_few_steps(shapes_dir):
    torch.set_num_threads(1)
    images = shapes_batch(shapes_dir)
    mae = _steps(mae_model(), images, 12)
    assert sum(mae[-3:]) < 0.8 * sum(mae[:3]), mae
    mf = _steps(MaskFeat(tiny_vit(mask_token=True), 16, MaskFeatConfig()), images, 12)
    assert sum(mf[-3:]) < 0.8 * sum(mf[:3]), mf
    ib = _steps(IBOT(tiny_vit(mask_token=True), 16, small_ibot(mask_prob=1.0)), images, 12, lr=5e-4)
    assert sum(ib[-3:]) < sum(ib[:3]), ib
