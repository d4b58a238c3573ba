"""SSL losses as pure functions, each tested against a hand computation.

Under DDP every loss here equals the single-process loss on the global batch: contrastive
negatives are gathered with gradients, Barlow Twins' statistics are all-reduced."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from engine.distributed import all_reduce_sum_with_grad, gather_no_grad, gather_with_grad, rank


def fp32(loss_fn):
    """Run a loss in float32 whatever the autocast precision: tensors (also inside lists) are
    cast up and autocast is off inside, so logits divided by a small temperature (0.04-0.1) and
    softmaxes are not quantised to bf16's 8 bits of mantissa. The result is a float32 tensor."""

    def up(x):
        if torch.is_tensor(x) and x.is_floating_point():
            return x.float()
        if isinstance(x, (list, tuple)):
            return type(x)(up(v) for v in x)
        return x

    @functools.wraps(loss_fn)
    def wrapped(*args, **kwargs):
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(device, enabled=False):
            return loss_fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})

    return wrapped


@fp32
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent over 2N views; negatives come from every process (gathered with grad)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    a1, a2 = gather_with_grad(z1), gather_with_grad(z2)
    total = a1.shape[0]
    z_all = torch.cat([a1, a2])  # [2N]
    z_local = torch.cat([z1, z2])  # [2n]
    logits = z_local @ z_all.T / temperature
    idx = torch.arange(n, device=z1.device) + rank() * n
    self_cols = torch.cat([idx, idx + total])
    pos_cols = torch.cat([idx + total, idx])
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * n, device=z1.device), self_cols] = True
    return F.cross_entropy(logits.masked_fill(is_self, float("-inf")), pos_cols)


@fp32
def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None = None, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo's InfoNCE: positive = the matching key; negatives = the queue (MoCo v1/v2), or the
    other keys of the global batch when there is no queue (MoCo v3). Rows are normalised here."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    if queue is not None:
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ F.normalize(queue, dim=1).T
        logits = torch.cat([pos, neg], dim=1) / temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
    k_all = gather_with_grad(k) if k.requires_grad else gather_no_grad(k)
    logits = q @ k_all.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
    return F.cross_entropy(logits, labels)


@fp32
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), mean over the batch (BYOL eq. 2); z is the stop-gradient target."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


@fp32
def dino_loss(
    student: list[torch.Tensor],
    teacher: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Cross-entropy H(P_t, P_s) between the centred, sharpened teacher distribution of each
    global view and the student distribution of every *other* view, averaged over pairs.
    `student` lists the global views first, in the same order as `teacher`."""
    t_probs = [F.softmax((t.detach() - center) / teacher_temp, dim=-1) for t in teacher]
    s_logp = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total, pairs = 0.0, 0
    for ti, tp in enumerate(t_probs):
        for si, sl in enumerate(s_logp):
            if si == ti:
                continue
            total = total + (-tp * sl).sum(-1).mean()
            pairs += 1
    return total / pairs


def _standardise(z: torch.Tensor, n: torch.Tensor, eps: float) -> torch.Tensor:
    """Global-batch standardisation per dimension, as BatchNorm1d(affine=False) in training."""
    mean = all_reduce_sum_with_grad(z.sum(0)) / n
    var = all_reduce_sum_with_grad((z - mean).pow(2).sum(0)) / n
    return (z - mean) * torch.rsqrt(var + eps)


@fp32
def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5
) -> torch.Tensor:
    """Cross-correlation of batch-standardised embeddings pushed to the identity (Zbontar et al.
    2021): sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2. Mean, variance and C span the global
    batch (all-reduced with gradients), so N processes compute the one-process loss."""
    n = all_reduce_sum_with_grad(torch.tensor(float(z1.shape[0]), device=z1.device))
    with torch.autocast(z1.device.type, enabled=False):  # a D x D sum of squares wants fp32
        z1, z2 = _standardise(z1.float(), n, eps), _standardise(z2.float(), n, eps)
        c = all_reduce_sum_with_grad(z1.T @ z2) / n
    diag = torch.diagonal(c)
    on_diag = (diag - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag


@fp32
def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out): z [V*B, D] views stacked, labels
    [V*B] (>= 0). Positives of an anchor are all other samples of its label, on every process;
    the mean log-probability over positives is taken outside the log."""
    z = F.normalize(z, dim=1)
    z_all, labels_all = gather_with_grad(z), gather_no_grad(labels)
    logits = z @ z_all.T / temperature
    n = z.shape[0]
    self_idx = torch.arange(n, device=z.device) + rank() * n
    not_self = torch.ones_like(logits, dtype=torch.bool)
    not_self[torch.arange(n, device=z.device), self_idx] = False
    pos = (labels[:, None] == labels_all[None, :]) & not_self
    logits = logits.masked_fill(~not_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0).sum(1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()
