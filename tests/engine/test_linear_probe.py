"""Linear probe protocol: hyper-parameters chosen on the training set only."""

from __future__ import annotations

import torch

from engine.evaluation.linear import linear_probe_accuracy


def test_linear_probe_picks_weight_decay_on_the_training_set_not_the_reported_split():
    """The validation labels never choose: with validation labels shuffled, a probe that picked
    the best of its sweep on them would report a luckier number than the one retrained with the
    decay chosen on a held-out part of the training set."""
    from engine.evaluation.linear import holdout_split

    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(10)
    fit, hold = holdout_split(y, 0.2)
    assert len(hold) == 8 and len(set(fit.tolist()) & set(hold.tolist())) == 0
    assert torch.bincount(y[hold]).tolist() == [2, 2, 2, 2]
    x = torch.randn(40, 6, generator=g) + torch.eye(4, 6)[y] * 3
    vx = torch.randn(20, 6, generator=g)
    vy = torch.randint(0, 4, (20,), generator=g)  # noise: no decay is "right" for it
    r = linear_probe_accuracy(x, y, vx, vy, 4, epochs=10)
    held = {k: v for k, v in r.items() if k.startswith("holdout_top1_wd")}
    assert len(held) == 3 and r["weight_decay"] == float(max(held, key=held.get)[15:])
    assert "top1_wd0" not in r  # no accuracy per decay on the reported split
