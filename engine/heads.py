"""Projection and prediction heads shared by the methods (the lightly idea: tiny reusable heads)."""

from __future__ import annotations

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    layers: int = 2,
    bn: bool = True,
    last_bn: bool = False,
) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a final Linear (+ optional affine-free BN, as SimCLR v2/MoCo v3)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden_dim, bias=not bn)]
        if bn:
            mods.append(nn.BatchNorm1d(hidden_dim))
        mods.append(nn.ReLU(inplace=True))
        d = hidden_dim
    mods.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)


def xavier_init(m: nn.Module) -> None:
    """MAE's initialisation of its decoder (models_mae.py `_init_weights`), also MOCA's heads:
    xavier-uniform Linear weights, zero biases, unit LayerNorm. Use with `module.apply`."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
