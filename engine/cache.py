"""The user's cache folder for things worth remembering between runs (the method catalog of
`selfsup methods`, measured probes): $SELFSUP_CACHE, else $XDG_CACHE_HOME/selfsup, else
~/.cache/selfsup. Everything in it can be deleted at any time."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    if os.environ.get("SELFSUP_CACHE"):
        return Path(os.environ["SELFSUP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfsup"


def files_key(paths: list[str | Path], *extra: Any) -> str:
    """A key that changes when any of the files (size, mtime) or the extra values change."""
    h = hashlib.sha1(repr(extra).encode())
    for p in sorted(str(p) for p in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{p}:missing".encode())
    return h.hexdigest()[:16]


def read_json(name: str) -> Any | None:
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def write_json(name: str, value: Any) -> None:
    """Best effort: a read-only home must not break the command that wanted to cache."""
    from engine.checkpoint import atomic_write

    try:
        atomic_write(cache_dir() / name, lambda tmp: Path(tmp).write_text(json.dumps(value)))
    except OSError:
        pass
