"""Batched k-means in torch (Lloyd iterations) with faiss-style empty-cluster re-assignment,
and the PCA-whitening pre-processing DeepCluster applies before clustering.

Empty clusters: DeepCluster (Caron et al. 2018) notes that k-means can leave clusters empty and
fixes it as faiss does: pick a non-empty cluster with probability proportional to its size, and
split it: the empty centroid becomes that centroid plus a small perturbation, the chosen one the
centroid minus it, so the next assignment shares its points between the two. After the last
iteration any cluster that is still empty takes half the points of the largest cluster (split
along a random direction), so every returned cluster has at least one member when n >= k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class KMeansResult:
    centroids: Tensor  # [k, d]
    assignments: Tensor  # long [n]
    inertia: float  # sum of squared distances to the assigned centroids
    reassigned: int  # empty clusters fixed over all iterations


def assign(x: Tensor, centroids: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Nearest centroid for each row of x: (indices [n], squared distances [n]), in chunks."""
    c2 = centroids.pow(2).sum(1)
    idx, dist = [], []
    for part in x.split(chunk):
        d = part.pow(2).sum(1, keepdim=True) - 2 * part @ centroids.T + c2
        m, i = d.min(1)
        idx.append(i)
        dist.append(m.clamp(min=0))
    return torch.cat(idx), torch.cat(dist)


def _split_empty_centroids(
    centroids: Tensor, counts: Tensor, g: torch.Generator, eps: float
) -> int:
    empty = (counts == 0).nonzero().flatten().tolist()
    for e in empty:
        probs = (counts - 1).clamp(min=0).float()
        if probs.sum() == 0:
            break
        c = int(torch.multinomial(probs.cpu(), 1, generator=g))
        delta = eps * (torch.randint(0, 2, (centroids.shape[1],), generator=g).float() * 2 - 1).to(
            centroids
        )
        base = centroids[c].clone()
        centroids[e] = base * (1 + delta)
        centroids[c] = base * (1 - delta)
        counts[e] = counts[c] // 2
        counts[c] -= counts[e]
    return len(empty)


def _split_empty_points(x: Tensor, assignments: Tensor, k: int, g: torch.Generator) -> int:
    """Give every still-empty cluster half the points of the currently largest cluster."""
    fixed = 0
    counts = torch.bincount(assignments, minlength=k)
    for e in (counts == 0).nonzero().flatten().tolist():
        big = int(counts.argmax())
        if counts[big] < 2:
            break
        members = (assignments == big).nonzero().flatten()
        direction = torch.randn(x.shape[1], generator=g).to(x)
        proj = x[members] @ direction
        moved = members[proj >= proj.median()][: len(members) // 2]
        if len(moved) == 0:
            moved = members[:1]
        assignments[moved] = e
        counts[e], counts[big] = len(moved), counts[big] - len(moved)
        fixed += 1
    return fixed


def kmeans(x: Tensor, k: int, iters: int = 20, seed: int = 0, eps: float = 1e-4) -> KMeansResult:
    """Lloyd's k-means of x [n, d] into k clusters; random distinct points as the initial
    centroids (faiss's default), deterministic for a given seed."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n, got k={k}, n={n}")
    x = x.float()
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(n, generator=g)[:k].to(x.device)].clone()
    reassigned = 0
    for _ in range(iters):
        a, _ = assign(x, centroids)
        counts = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, a, x)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None].float()
        reassigned += _split_empty_centroids(centroids, counts.cpu(), g, eps)
    a, d = assign(x, centroids)
    fixed = _split_empty_points(x, a, k, g)
    if fixed:
        reassigned += fixed
        counts = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, a, x)
        centroids = sums / counts[:, None].clamp(min=1).float()
        d = (x - centroids[a]).pow(2).sum(1)
    return KMeansResult(centroids, a, float(d.sum()), reassigned)


def pca_whiten(x: Tensor, dim: int, eps: float = 1e-5) -> Tensor:
    """DeepCluster's pre-processing: centre, project on the top `dim` principal components,
    divide each by its standard deviation (whitening), then L2-normalise every row."""
    x = x.float()
    x = x - x.mean(0, keepdim=True)
    dim = min(dim, x.shape[1], max(1, x.shape[0] - 1))
    cov = x.T @ x / max(1, x.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov.double())  # ascending
    evals, evecs = evals.flip(0)[:dim].float(), evecs.flip(1)[:, :dim].float()
    z = x @ evecs / (evals.clamp(min=0) + eps).sqrt()
    return F.normalize(z, dim=1)
