"""The one verdict on a kNN check against random init, and its advice per kind of method."""

from __future__ import annotations

import pytest

from engine.evaluation.verdict import GENERIC, knn_verdict, what_to_change


def test_better_means_one_more_validation_image_right():
    assert knn_verdict(0.6, 0.5, val_images=10).better  # one image of 10
    assert not knn_verdict(0.5, 0.5, val_images=10).better  # a tie is not
    assert not knn_verdict(0.505, 0.5, val_images=100).better  # half an image
    assert knn_verdict(0.51, 0.5, val_images=100).better
    assert not knn_verdict(0.509, 0.5).better  # unknown count: one point
    v = knn_verdict(0.8, 0.5, 20)
    assert v.text == "kNN top-1 0.80 vs random init 0.50 (+30.0 points)"
    assert v.points == pytest.approx(30.0) and v.advice.startswith("Better than")


@pytest.mark.parametrize(
    "method,hint",
    [
        ("byol", "choose simclr or moco_v2"),
        ("dino", "EMA outputs start slowest"),
        ("mae", "selfsup eval finetune"),
        ("ibot", "selfsup eval finetune"),
        ("jigsaw", "64 px"),
        ("deepcluster", "many epochs"),
        ("instdisc", GENERIC),  # +18.9 in 15 minutes with its CIFAR settings
        ("simclr", GENERIC),
        ("", GENERIC),
    ],
)
def test_advice_names_what_to_change_for_the_method(method, hint):
    v = knn_verdict(0.40, 0.45, 1000, method)
    assert not v.better and v.advice.startswith("Not better than the untrained network.")
    assert hint in v.advice


def test_short_runs_say_how_short():
    assert what_to_change("byol", 120).startswith("This run trained 120 steps. ")
    assert what_to_change("byol", 5000) == what_to_change("byol")
