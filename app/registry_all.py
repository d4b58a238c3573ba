"""Declare every package's methods and datasets (app is the only layer above all of them).

Declaring is cheap: names and module paths only. A method's module (and torch) is imported when
the method is first asked for, so `selfsup --help` and a child process that trains one method
import only what they need."""

from __future__ import annotations

import importlib

_PACKAGES = ["engine.methods", "video.methods", "multimodal.methods"]
_loaded = False


def load_all() -> None:
    global _loaded
    if not _loaded:
        for name in _PACKAGES:
            importlib.import_module(name)
        _loaded = True
