"""Did training beat the untrained network, and if not, what to change.

One verdict for every place that compares a run with random init on a kNN check: the demo's
result line, `selfsup eval knn --baseline` and the desktop app's feature check. The advice
follows what `bench/bench_knn_all_methods.py` measured for each kind of method after 15 CPU
minutes on 32 px images (docs/benchmarks.md), so a user whose BYOL run loses to random init
hears that this is expected at a short budget and which method would do better. Torch-free:
the GUI imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.run import RunDir

GENERIC = (
    "Try: train longer (more epochs), larger images (image size), or another method; "
    "a few hundred steps on a small folder rarely beat an untrained network."
)

# method -> why it may trail an untrained network after a short run, and what to do instead
_BY_KIND: list[tuple[frozenset[str], str]] = [
    (
        frozenset({"byol", "dino", "obow"}),
        "Methods whose targets are the network's own EMA outputs start slowest: in 15 CPU "
        "minutes on 32 px images BYOL, DINO and OBoW ended between -5 and +4 points of random "
        "init, where SimCLR and MoCo v2 gained +12. For a short run choose simclr or moco_v2; "
        "these need hundreds of epochs.",
    ),
    (
        frozenset({"mae", "maskfeat", "beit", "ibot", "moca"}),
        "Masked-image-modelling features are made to be fine-tuned: read frozen, as kNN reads "
        "them, they stay near or below an untrained network after short runs (MAE -2 to -3 "
        "points in 15 CPU minutes), as their papers' linear probes trail too. Judge them with "
        "`selfsup eval finetune`, or choose simclr or moco_v2 for frozen features.",
    ),
    (
        frozenset({"jigsaw", "relpatch"}),
        "Tile puzzles need tiles with content: at 32 px each tile is a few pixels and the task "
        "is solved from its edges (-1 to -3 points in 15 CPU minutes). Use images of 64 px or "
        "more, or rotation or splitbrain at small sizes.",
    ),
    (
        frozenset({"deepcluster", "cpc_v2", "pixelcnn"}),
        "This method's signal builds over many epochs (re-clustering, or a likelihood model): "
        "it stayed near or below random init after 15 CPU minutes on 32 px images, where "
        "SimCLR and MoCo v2 gained +12. Train far longer or choose simclr or moco_v2 for a "
        "short run.",
    ),
]

SHORT_RUN_STEPS = 1000


def what_to_change(method: str = "", steps: int = 0) -> str:
    """The advice for a run that did not beat random init."""
    advice = next((text for names, text in _BY_KIND if method in names), GENERIC)
    if 0 < steps < SHORT_RUN_STEPS:
        advice = f"This run trained {steps} steps. " + advice
    return advice


@dataclass(frozen=True)
class Verdict:
    top1: float
    baseline: float
    points: float  # (top1 - baseline) in percentage points
    better: bool
    text: str  # "kNN top-1 0.xx vs random init 0.yy (+z points)"
    advice: str  # what it means and, when not better, what to change


def knn_verdict(
    top1: float, baseline: float, val_images: int = 0, method: str = "", steps: int = 0
) -> Verdict:
    """Better means at least one more validation image right than the untrained network
    (one point when the number of images is unknown)."""
    points = (top1 - baseline) * 100
    margin = 100.0 / val_images if val_images else 1.0
    better = points >= margin - 1e-9
    text = f"kNN top-1 {top1:.2f} vs random init {baseline:.2f} ({points:+.1f} points)"
    if better:
        advice = "Better than the untrained network: training learned features that separate these classes."
    else:
        advice = "Not better than the untrained network. " + what_to_change(method, steps)
    return Verdict(top1, baseline, points, better, text, advice)


def result_verdict(result: dict[str, Any], run: RunDir | None = None) -> Verdict:
    """The verdict on a `selfsup eval knn --baseline` result, advised for the run it checked
    (its method and step count) when that is a run folder."""
    method, steps = (run.method(), run.state().step) if run is not None else ("", 0)
    return knn_verdict(
        float(result["top1"]),
        float(result["baseline"]["top1"]),
        int(result.get("val_images") or 0),
        method,
        steps,
    )
