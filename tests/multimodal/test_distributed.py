"""Two gloo processes on the CPU: the CLIP loss under DDP (local loss + gather with gradients)
equals the single-process loss, and a sharded index equals a single-process one."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank: int, init_file: str, photos: str, idx: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        from engine.config import TrainConfig
        from multimodal.clip_method import Clip
        from multimodal.config import ClipConfig
        from multimodal.embedder import load_clip
        from multimodal.index import Indexer

        g = torch.Generator().manual_seed(0)
        img = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
        txt = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
        lo, hi = rank * 4, rank * 4 + 4
        mine_i, mine_t = img[lo:hi].clone().requires_grad_(), txt[lo:hi].clone().requires_grad_()
        loss = Clip.build(TrainConfig(image_size=32), ClipConfig()).loss_fn()(
            mine_i, mine_t, torch.tensor(5.0)
        )
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "gi": mine_i.grad, "gt": mine_t.grad}, f"{out}/grad{rank}.pt"
        )

        emb = load_clip("selfsup-tiny", image_size=32)
        Indexer(idx, emb, batch_size=2, num_workers=0, progress=False).update([photos])
    finally:
        dist.destroy_process_group()


def test_ddp_clip_loss_and_sharded_index(tmp_path, photos):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    from engine.config import TrainConfig
    from multimodal.clip_method import Clip
    from multimodal.config import ClipConfig
    from multimodal.embedder import load_clip
    from multimodal.index import Index, build_index

    load_clip("selfsup-tiny", image_size=32)  # warm every import: forked children inherit them
    args = (str(tmp_path / "init"), str(photos), str(tmp_path / "idx"), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=WORLD, join=True, start_method="fork")

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1).requires_grad_()
    full = Clip.build(TrainConfig(image_size=32), ClipConfig()).loss_fn()(
        img, txt, torch.tensor(5.0)
    )
    full.backward()
    parts = [torch.load(tmp_path / f"grad{r}.pt", weights_only=True) for r in range(WORLD)]
    # each rank's local loss averages its own rows; DDP averages the ranks
    assert torch.stack([p["loss"] for p in parts]).mean().item() == pytest.approx(
        full.item(), rel=1e-5
    )
    # gathered with gradients: each rank's features get the gradient of every rank's loss
    gi = torch.cat([p["gi"] for p in parts]) / WORLD
    gt = torch.cat([p["gt"] for p in parts]) / WORLD
    assert torch.allclose(gi, img.grad, atol=1e-6) and torch.allclose(gt, txt.grad, atol=1e-6)

    sharded = Index(tmp_path / "idx")
    build_index(
        tmp_path / "single",
        [photos],
        load_clip("selfsup-tiny", image_size=32),
        num_workers=0,
        progress=False,
    )
    single = Index(tmp_path / "single")
    assert sharded.paths == single.paths and len(sharded) == 6
    np.testing.assert_allclose(
        np.asarray(sharded.embeddings), np.asarray(single.embeddings), atol=1e-5
    )
    assert not os.path.exists(tmp_path / "idx" / "work")
