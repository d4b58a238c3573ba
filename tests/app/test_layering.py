"""Only app/gui may import Qt: engine, video and multimodal (and the CLI that trains) stay
Qt-free, so they run headless, in child processes and under torchrun."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.app.helpers import REPO

QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6")
QT_IMPORT = re.compile(
    r"^\s*(from|import)\s+(PySide6|PyQt5|PyQt6|pyqtgraph|shiboken6|qtpy)\b", re.M
)

PROBE = """
import importlib, pkgutil, sys
failed = []
for pkg in ("engine", "video", "multimodal"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as e:  # an optional dependency (e.g. faiss) is not a layering problem
            failed.append(f"{info.name}: {e}")
from app.registry_all import load_all
load_all()
from app.cli import build_parser
build_parser(["train", "--help"])
import app.progress  # the CLI's progress reporting is Qt-free too
qt = sorted(m for m in sys.modules if m.split(".")[0] in QT)
print("QT:" + ",".join(qt))
print("MODULES:" + str(len([m for m in sys.modules if m.split(".")[0] in ("engine", "video", "multimodal")])))
"""


def test_engine_video_multimodal_import_without_qt():
    code = f"QT = {QT_MODULES!r}\n" + PROBE
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    qt_line = next(ln for ln in out.stdout.splitlines() if ln.startswith("QT:"))
    n = int(next(ln for ln in out.stdout.splitlines() if ln.startswith("MODULES:")).split(":")[1])
    assert qt_line == "QT:", f"Qt got imported below app/gui: {qt_line}"
    assert n > 20, f"only {n} modules imported; the probe did not walk the packages"


def test_no_qt_import_in_source_below_app():
    offenders = []
    roots = [REPO / "engine", REPO / "video", REPO / "multimodal", REPO / "app" / "commands"]
    files = [p for r in roots for p in r.rglob("*.py")] + [
        REPO / "app" / "cli.py",
        REPO / "app" / "progress.py",
    ]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in QT_IMPORT.finditer(text):
            line = text[: m.start()].count("\n") + 1
            offenders.append(f"{path.relative_to(REPO)}:{line}: {m.group(0).strip()}")
    # the `selfsup gui` command imports the app lazily inside run(), never at module level
    gui_cmd = (REPO / "app" / "commands" / "gui.py").read_text()
    assert "from app.gui import main" in gui_cmd
    assert offenders == [], "Qt imported outside app/gui:\n" + "\n".join(offenders)
