"""The CLI starts at once: `selfsup --help` imports no torch, `selfsup methods` imports it only
the first time (its rows are cached), and a training command imports only its own method."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.app.helpers import REPO

PROBE = """
import sys, json
from app.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "torchvision", "open_clip", "cv2") if m in sys.modules)
methods = sorted(m for m in sys.modules if m.startswith(("engine.methods.", "video.methods.", "multimodal.clip_method")))
print("PROBE " + json.dumps({{"heavy": heavy, "methods": methods}}))
"""


def probe(argv: list[str], cache) -> dict:
    env = {**os.environ, "SELFSUP_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("PROBE "))
    return json.loads(line[len("PROBE ") :])


def test_help_imports_no_torch(tmp_path):
    for argv in (
        ["--help"],
        ["propagate", "--help"],
        ["eval", "knn", "--help"],
        ["index", "--help"],
    ):
        r = probe(argv, tmp_path)
        assert r == {"heavy": [], "methods": []}, (argv, r)


def test_methods_listing_is_cached_and_train_help_imports_one_method(tmp_path):
    first = probe(["methods", "--json"], tmp_path)
    assert "torch" in first["heavy"]  # the first listing reads every method's defaults
    assert probe(["methods", "--json"], tmp_path) == {"heavy": [], "methods": []}
    r = probe(["train", "--method", "byol", "--help"], tmp_path)
    assert r["methods"] == ["engine.methods.base", "engine.methods.byol"], r


def test_every_declared_method_registers_under_its_name():
    from app.registry_all import load_all
    from engine.registry import list_methods, method_modules

    load_all()
    declared = method_modules()
    specs = list_methods()
    assert sorted(declared) == sorted(s.name for s in specs)
