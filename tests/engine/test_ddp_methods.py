"""Two gloo processes through the trainer for the methods the simclr DDP test does not cover:
a ViT method that never uses a [MASK] token (MAE), a masking one (MaskFeat), MoCo v2's
ShuffleBN across ranks, the queues that every rank must keep identical (OBoW, MOCA), SPOT's slots
over a frozen encoder and Dense Object Nets on clips. Before the mask token became optional,
MAE's unused token made DDP fail at step 2 ("Expected to have finished reduction in the prior
iteration")."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import torch

RUNS = {  # method -> (backbone, image size, method options): tiny, a few seconds each
    "mae": ("vit_tiny", 16, {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}),
    "maskfeat": ("vit_tiny", 16, {}),
    "moco_v2": ("resnet18", 16, {"proj_hidden_dim": 16, "proj_dim": 8, "queue_size": 16}),
    # queues of teacher features gathered from every rank (OBoW's vocabulary, MOCA's codebook)
    "obow": ("resnet18", 16, {"num_words": 16}),
    "moca": ("vit_tiny", 16, {"num_words": 16, "num_new_words": 4}),
    # a frozen encoder with trained slots and an autoregressive decoder; a video method whose
    # non-matches are drawn for the global batch (Dense Object Nets, on two-frame clips)
    "spot": ("vit_tiny", 16, {"num_slots": 3, "slot_dim": 16, "slot_mlp_dim": 16,
                              "decoder_blocks": 1, "decoder_heads": 2}),
    "dense_object_nets": ("resnet18", 16, {"descriptor_dim": 8, "matches": 8,
                                           "nonmatches_per_match": 4}),
}  # fmt: skip


class _Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=g)
        clip = torch.stack([image, image.roll(1, dims=2)])  # two frames, one pixel apart
        return {"image": image, "clip": clip, "label": torch.tensor(i % 2)}


def _train(method: str, run_dir: str) -> dict[str, float]:
    import engine.methods  # noqa: F401
    import video.methods  # noqa: F401
    from engine.build import apply_method_defaults, build_method
    from engine.trainer import Trainer

    backbone, size, args = RUNS[method]
    train = dict(
        data="memory",
        backbone=backbone,
        image_size=size,
        batch_size=8,
        max_steps=3,
        num_workers=0,
        device="cpu",
        log_every=1,
        checkpoint_every=100,
        channels_last="off",
        method_args=args,
    )
    cfg = apply_method_defaults(train, {"warmup_epochs": 0.0}, method)
    torch.manual_seed(cfg.seed)
    model = build_method(cfg)
    losses = Trainer(cfg, model, _Images(), run_dir).fit()["losses"]
    words = [b for name, b in model.named_buffers() if name.endswith("words")]
    return {**losses, "words": [w.double().sum().item() for w in words]}


def _worker(rank: int, port: int, root: str, out: dict) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    res = {}
    for method in RUNS:
        res[method] = _train(method, os.path.join(root, f"{method}-ddp"))
    out[rank] = res
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(sys.platform == "win32", reason="gloo process group test")
def test_vit_masked_and_shufflebn_methods_train_under_two_process_ddp(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.start_processes(_worker, args=(port, str(tmp_path), out), nprocs=2, start_method="spawn")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = _train("mae", str(tmp_path / "mae-one"))
    finally:
        torch.set_num_threads(n)
    for method in RUNS:  # three steps each, the same reduced loss on both ranks
        assert out[0][method]["loss"] == pytest.approx(out[1][method]["loss"], rel=1e-6)
        assert torch.isfinite(torch.tensor(out[0][method]["loss"]))
    for method in ("obow", "moca"):  # every rank keeps the same queue of words
        assert out[0][method]["words"] == out[1][method]["words"], method
    # MAE draws its masks and views for the global batch and has no batch norm: two processes
    # compute what one does (up to the gradient all-reduce's rounding)
    assert out[0]["mae"]["loss"] == pytest.approx(one["loss"], rel=1e-3)
