"""One owner per concept (docs/architecture.md): the run directory's file names live in
engine/run.py, and no consumer branches on a method's name; it asks the registry what a model
produces (engine.features.load_features / produces)."""

from __future__ import annotations

import re

from tests.app.helpers import REPO

PACKAGES = ("app", "engine", "video", "multimodal")
RUN_FILES = re.compile(r"""["'](?:checkpoints/last\.pt|last\.pt|config\.json)["']""")


def _sources():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            yield path, path.read_text(encoding="utf-8", errors="replace")


def test_run_directory_layout_is_spelled_only_in_engine_run():
    owner = REPO / "engine" / "run.py"
    hits = [
        f"{p.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for p, text in _sources()
        if p != owner
        for m in RUN_FILES.finditer(text)
    ]
    assert hits == [], "run-directory paths outside engine/run.py:\n" + "\n".join(hits)


def test_no_consumer_compares_method_names():
    from app.registry_all import load_all
    from engine.registry import list_methods

    load_all()
    names = "|".join(re.escape(m.name) for m in list_methods())
    quoted = rf"""["'](?:{names})["']"""
    call = r"(?:\((?:[^()]|\([^()]*\))*\))?"  # e.g. method_of(Path(p))
    subject = rf"""(?:\w*method\w*{call}|\[["']method["']\]|get\(["']method["']\)|__name__)"""
    compare = re.compile(
        rf"""{subject}\s*(?:==|!=|in|not in)\s*[(\[{{]?[^)\]}}\n]*{quoted}"""
        rf"""|{quoted}\s*(?:==|!=)\s*{subject}""",
        re.IGNORECASE,  # class names too: type(method).__name__ == "MAE"
    )
    hits = [
        f"{p.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for p, text in _sources()
        for m in compare.finditer(text)
    ]
    assert hits == [], (
        "method-name comparisons (ask engine.features.produces instead):\n" + "\n".join(hits)
    )
