"""The CLI's promise: bad names and arguments get one clear line listing the choices, no traceback."""

from __future__ import annotations

import json

import pytest

from app.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unknown_method_lists_choices(capsys, shapes_dir):
    code, _, err = run(capsys, "train", "--data", str(shapes_dir), "--method", "nope")
    assert (
        code == 2 and "unknown method 'nope'" in err and "simclr" in err and "Traceback" not in err
    )


def test_unknown_backbone(capsys, shapes_dir, tmp_path):
    code, _, err = run(
        capsys,
        "train",
        "--data",
        str(shapes_dir),
        "--backbone",
        "vgg",
        "--run-dir",
        str(tmp_path / "r"),
    )
    assert code == 2 and "unknown backbone 'vgg'" in err and "resnet18" in err


def test_missing_data_folder(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err


def test_bad_argument_type_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--batch-size", "many"])
    assert e.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_methods_json_lists_defaults(capsys):
    code, out, _ = run(capsys, "methods", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["simclr"]["options"]["temperature"] == 0.5
    assert all(r["description"] for r in rows.values())


def test_train_eval_export_round_trip(capsys, shapes_dir, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train",
        "--data",
        str(shapes_dir),
        "--run-dir",
        str(run_dir),
        "--image-size",
        "16",
        "--batch-size",
        "12",
        "--max-steps",
        "2",
        "--num-workers",
        "0",
    )
    assert code == 0, err
    knn = ("eval", "knn", "--train", str(shapes_dir), "--k", "5", "--num-workers", "0")
    code, out, err = run(capsys, *knn, "--checkpoint", str(run_dir))
    assert code == 0, err
    assert json.loads((run_dir / "eval" / "knn.json").read_text())["top1"] >= 0
    code, out, err = run(capsys, "export", "--checkpoint", str(run_dir))
    assert code == 0 and (run_dir / "exports" / "backbone.safetensors").exists()
    code, out, err = run(
        capsys, *knn, "--checkpoint", str(run_dir / "exports" / "backbone.safetensors")
    )
    assert code == 0, err


def test_every_command_help_renders(capsys):
    """argparse formats help lazily: a stray '%' in a help string only breaks at --help time."""
    from app.cli import build_parser

    parser = build_parser([])
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.format_help(), name
        for a in p._actions:
            if isinstance(a.choices, dict):  # nested sub-commands (eval knn, visualize pca, ...)
                for q, child in a.choices.items():
                    assert child.format_help(), (name, q)


def test_train_with_a_time_budget(capsys, shapes_dir, tmp_path):
    """--time-budget MINUTES: a plan record, the planned steps in config.json, a done event."""
    from engine.events import read_events

    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys, "train", "--data", str(shapes_dir), "--method", "simclr", "--image-size", "16",
        "--batch-size", "12", "--num-workers", "0", "--time-budget", "0.1", "--run-dir",
        str(run_dir), "--proj-hidden-dim", "32", "--proj-dim", "16",
    )  # fmt: skip
    assert code == 0, err
    assert "time budget 0.1 min: planned" in out  # the timing test is in test_trainer.py
    assert "backbone resnet18_w32: simclr's default at <= 32 px" in out  # said, not hidden
    events = read_events(run_dir)
    plans = [e for e in events if e["type"] in ("plan", "replan")]  # re-plans follow the pace
    assert [e["type"] for e in plans].count("plan") == 1 and plans[0]["type"] == "plan"
    final = plans[-1]["planned_steps"]
    assert events[-1]["type"] == "done" and events[-1]["planned_steps"] == final
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == final


def test_demo_verdict_line_says_whether_training_beat_random_init():
    from app.demo import beat_random_verdict

    v = beat_random_verdict(0.612, 0.455)
    assert v["beats_random"] and round(v["gain_points"], 1) == 15.7
    assert v["line"] == (
        "verdict: kNN top-1 trained 0.612 vs random init 0.455 (+15.7 points): "
        "the trained model BEATS random init"
    )
    v = beat_random_verdict(0.40, 0.41)
    assert not v["beats_random"] and "does NOT beat random init" in v["line"]
