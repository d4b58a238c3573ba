"""DeepCluster (Caron et al. 2018): alternate between clustering the current features with k-means
and training the network to predict each image's cluster as a pseudo-label.

Recipe kept from the paper:
- every epoch, features of the whole training set (centre view, no augmentation, backbone in
  eval mode) are PCA-reduced to `pca_dim` (256 in the paper), whitened and L2-normalised, then
  clustered by k-means (`engine.kmeans`, faiss-style, 20 iterations);
- empty clusters are re-assigned by splitting a large cluster with a small perturbation (the
  paper's fix for the trivial solution where most images fall in a few clusters);
- against the same imbalance, the paper samples images uniformly over clusters; the shared
  trainer's sampler is fixed, so we re-weight the loss instead: each image by 1 / (its cluster's
  size), normalised to mean 1 (the same expected gradient as uniform sampling over clusters);
- the classifier (the top layer) is re-initialised every epoch, since pseudo-label k of one
  clustering has nothing to do with label k of the previous one (its optimiser state is cleared
  too); features are the backbone's global feature.
Deviation: the paper feeds a fixed Sobel filter of the grey image to remove colour as a shortcut;
here the backbone must take RGB like every other (export, evaluation), so colour is neutralised
the way DeepCluster v2 does it: colour jitter and random grayscale in the training views.
Scaled to small data: k = 100 clusters by default (10,000 for 1.3 M ImageNet images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.distributed import is_dist
from engine.errors import UserError
from engine.kmeans import kmeans, pca_whiten
from engine.methods.base import HALF_WIDTH_AT_32, RESNET_SGD, Method


@dataclass
class DeepClusterConfig:
    num_clusters: int = opt(100, "k of k-means (paper 10000 for ImageNet)")
    pca_dim: int = opt(256, "PCA dimension before whitening and clustering (paper 256)")
    kmeans_iters: int = opt(20, "Lloyd iterations per clustering")
    reweight: bool = opt(True, "weight images by 1/cluster size (uniform over clusters)")
    cluster_batch_size: int = opt(256, "batch size of the feature pass before clustering")


class DeepCluster(Method):
    """DeepCluster: k-means on the current features every epoch, predict the cluster as a
    pseudo-label"""

    method_name, family, config_cls = "deepcluster", "pretext", DeepClusterConfig
    defaults = RESNET_SGD | HALF_WIDTH_AT_32 | {"lr": 0.05, "weight_decay": 1e-5}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: DeepClusterConfig, seed: int = 0):
        super().__init__()
        if cfg.num_clusters < 2:
            raise UserError(
                f"DeepCluster needs at least 2 clusters, got num_clusters={cfg.num_clusters}"
            )
        self.backbone, self.cfg, self.image_size, self.seed = backbone, cfg, image_size, seed
        self.classifier = nn.Linear(backbone.embed_dim, cfg.num_clusters)
        self.register_buffer(
            "assignments", torch.empty(0, dtype=torch.long)
        )  # dataset index -> cluster
        self.register_buffer(
            "sample_weights", torch.ones(cfg.num_clusters)
        )  # per-cluster loss weight
        self.spec = augment.simclr_views(image_size)[0]
        self.center = augment.whole_view(image_size, flip_p=0.0)
        self.last_stats: dict[str, float] = {}

    @classmethod
    def build(cls, cfg, m: DeepClusterConfig) -> DeepCluster:
        method = super().build(cfg, m)
        method.seed = cfg.seed  # k-means and classifier re-initialisation seeds
        return method

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "assignments"  # its length is the dataset size, unknown when built
        if key in state_dict:
            self.assignments = torch.empty_like(state_dict[key], device=self.assignments.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def dataset_features(self, loader) -> Tensor:
        """Backbone features [N, D] of every image of an ordered loader (centre view)."""
        was_training = self.training
        self.eval()
        dev = self.classifier.weight.device
        feats = []
        try:
            for batch in loader:
                x = batch["image"].to(dev)
                params = augment.sample_view_params(
                    x.shape[0], self.center, dev, image_hw=tuple(x.shape[-2:])
                )
                if "hw" in batch:  # a whole image stretched to a square: its centre square
                    params.box = augment.centre_boxes(batch["hw"].to(dev))
                feats.append(self.backbone(augment.apply_view(x, self.center, params)).float())
        finally:
            self.train(was_training)
        return torch.cat(feats)

    @torch.no_grad()
    def recluster(self, features: Tensor, epoch: int) -> None:
        """k-means on PCA-whitened features -> pseudo-labels, loss weights, fresh classifier."""
        n, k = features.shape[0], self.cfg.num_clusters
        if n < k:
            raise UserError(
                f"DeepCluster: the dataset has {n} images, fewer than num_clusters={k}; lower --num-clusters"
            )
        z = pca_whiten(features, self.cfg.pca_dim)
        res = kmeans(z, k, iters=self.cfg.kmeans_iters, seed=self.seed * 10_007 + epoch)
        counts = torch.bincount(res.assignments, minlength=k).float()
        self.assignments = res.assignments.to(self.classifier.weight.device)
        w = torch.where(counts > 0, n / (k * counts.clamp(min=1)), torch.zeros_like(counts))
        self.sample_weights.copy_(w if self.cfg.reweight else torch.ones_like(w))
        g = torch.Generator().manual_seed(self.seed * 7_919 + epoch)  # the same on every process
        self.classifier.weight.copy_(torch.randn(self.classifier.weight.shape, generator=g) * 0.01)
        self.classifier.bias.zero_()
        self.last_stats = {
            "inertia": res.inertia,
            "reassigned": float(res.reassigned),
            "largest_cluster": float(counts.max() / n),
            "empty": float((counts == 0).sum()),
        }

    def on_epoch_start(self, epoch: int, trainer) -> None:
        self.recluster(
            self.dataset_features(trainer.feature_loader(self.cfg.cluster_batch_size)), epoch
        )
        if (
            is_dist()
        ):  # float round-off may differ between devices: everyone takes rank 0's clustering
            for t in (
                self.assignments,
                self.sample_weights,
                self.classifier.weight,
                self.classifier.bias,
            ):
                torch.distributed.broadcast(t.data, src=0)
        optimizer = getattr(trainer, "optimizer", None)
        if (
            optimizer is not None
        ):  # momentum / Adam moments of the old classifier are meaningless now
            for p in self.classifier.parameters():
                optimizer.state.pop(p, None)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if "index" not in batch:
            raise UserError(
                "DeepCluster needs the dataset index of each image (an 'index' field in the batch)"
            )
        if self.assignments.numel() == 0:
            raise UserError(
                "DeepCluster: no clustering yet; on_epoch_start must run before the first step"
            )
        (x,) = self.make_views(batch, [self.spec])
        labels = self.assignments[batch["index"].to(self.assignments.device)]
        logits = self.classifier(self.backbone(x))
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        w = self.sample_weights[labels]
        loss = (per_sample * w).sum() / w.sum().clamp(min=1e-8)
        return {"loss": loss, "acc": (logits.argmax(1) == labels).float().mean()}
