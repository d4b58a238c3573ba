"""`selfsup eval knn --baseline`: the trained backbone and the same architecture with seeded
random weights, scored on the same data; both numbers in the printed table, the --events
result and the run's eval/knn.json."""

from __future__ import annotations

import json

import pytest

from app.cli import main

TINY = ["--image-size", "16", "--batch-size", "12", "--num-workers", "0"]


@pytest.fixture
def tiny_run(shapes_dir, tmp_path):
    run_dir = tmp_path / "run"
    code = main(
        ["train", "--data", str(shapes_dir), "--run-dir", str(run_dir), "--max-steps", "2", *TINY]
    )
    assert code == 0
    return run_dir


def knn(run_dir, shapes_dir, *extra):
    return main(
        ["eval", "knn", "--checkpoint", str(run_dir), "--train", str(shapes_dir), "--k", "5"]
        + ["--num-workers", "0", *extra]
    )


def test_knn_baseline_reports_both_rows(capsys, tiny_run, shapes_dir, tmp_path):
    from engine.events import read_events
    from engine.run import RunDir

    events = tmp_path / "knn-events.jsonl"
    capsys.readouterr()
    assert knn(tiny_run, shapes_dir, "--baseline", "--events", str(events)) == 0
    out = capsys.readouterr().out
    assert "trained" in out and "random init" in out
    line = next(x for x in out.splitlines() if x.startswith("verdict: kNN top-1"))
    # a 2-step run: either it beat random init, or the advice says how short it was
    assert "Better than the untrained network" in line or "This run trained 2 steps." in line
    recs = read_events(events)
    assert recs[-1]["type"] == "done"
    result = recs[-1]["result"]
    base = result["baseline"]
    assert 0 <= result["top1"] <= 1 and 0 <= base["top1"] <= 1
    assert result["gain"] == pytest.approx(result["top1"] - base["top1"])
    assert base["val_images"] == result["val_images"] and base["seed"] == 0
    assert [e["stage"] for e in recs if e["type"] == "progress"][:2] == [
        "trained model",
        "random init",
    ]
    saved = json.loads((RunDir(tiny_run).subdir("eval") / "knn.json").read_text())
    assert saved["baseline"]["top1"] == base["top1"] and saved["top1"] == result["top1"]


def test_random_init_is_seeded_and_differs_from_the_trained_weights(tiny_run):
    import torch

    from engine.features import load_features, random_init_features

    ext = load_features(str(tiny_run), "global")
    a, b, c = (random_init_features(tiny_run, "global", seed=s) for s in (0, 0, 1))

    def state(e):
        sd = e.backbone.state_dict().values()
        return torch.cat([p.flatten() for p in sd if p.is_floating_point()])

    assert torch.equal(state(a), state(b)) and not torch.equal(state(a), state(c))
    assert not torch.equal(state(a), state(ext))
    assert a.arch == ext.arch and a.image_size == ext.image_size and a.mean == ext.mean
    x = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    assert a.embed(x).shape == ext.embed(x).shape


def test_knn_without_baseline_has_no_baseline_key(capsys, tiny_run, shapes_dir, tmp_path):
    events = tmp_path / "e.jsonl"
    assert knn(tiny_run, shapes_dir, "--events", str(events)) == 0
    from engine.events import read_events

    result = read_events(events)[-1]["result"]
    assert "baseline" not in result and 0 <= result["top1"] <= 1
