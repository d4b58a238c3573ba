"""Where the app keeps its own files: settings, recent items, logs, thumbnail cache.

Qt's QStandardPaths gives the platform's folders; SELFSUP_STUDIO_HOME overrides both (tests,
portable installs). Recent items live in one small JSON file so they are easy to inspect.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QStandardPaths

APP_NAME = "Selfsup Studio"
ORG_NAME = "selfsup"
RECENT_KINDS = ("folders", "videos", "captions", "runs", "checkpoints", "indexes")
MAX_RECENT = 12


def _home_override() -> Path | None:
    home = os.environ.get("SELFSUP_STUDIO_HOME")
    return Path(home) if home else None


def data_dir() -> Path:
    base = _home_override()
    if base is None:
        base = Path(
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
            or Path.home() / ".selfsup-studio"
        )
    else:
        base = base / "data"
    base.mkdir(parents=True, exist_ok=True)
    return base


def cache_dir() -> Path:
    base = _home_override()
    if base is None:
        base = Path(
            QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation)
            or Path.home() / ".cache" / "selfsup-studio"
        )
    else:
        base = base / "cache"
    base.mkdir(parents=True, exist_ok=True)
    return base


def log_path() -> Path:
    return data_dir() / "selfsup-studio.log"


def default_runs_root() -> Path:
    """`./runs` when the app starts inside a project that has one, else the user's data folder."""
    local = Path.cwd() / "runs"
    return local if local.is_dir() else data_dir() / "runs"


class Settings:
    """Recent folders/runs/files and a few preferences, persisted as JSON between sessions."""

    def __init__(self, path: Path | None = None):
        self.path = path or data_dir() / "settings.json"
        self.data: dict = {"recent": {k: [] for k in RECENT_KINDS}, "prefs": {}}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.data["recent"].update(
                    {
                        k: [str(p) for p in v]
                        for k, v in loaded.get("recent", {}).items()
                        if isinstance(v, list)
                    }
                )
                self.data["prefs"].update(loaded.get("prefs", {}))
        except (OSError, ValueError):
            pass  # first start or a damaged file: start fresh rather than refuse to open

    def recent(self, kind: str) -> list[str]:
        """Most recent first; paths that no longer exist are dropped."""
        return [p for p in self.data["recent"].get(kind, []) if Path(p).exists()]

    def add_recent(self, kind: str, path: str | Path) -> None:
        p = str(Path(path).expanduser().resolve())
        items = [x for x in self.data["recent"].get(kind, []) if x != p]
        self.data["recent"][kind] = [p, *items][:MAX_RECENT]
        self.save()

    def pref(self, key: str, default=None):
        return self.data["prefs"].get(key, default)

    def set_pref(self, key: str, value) -> None:
        self.data["prefs"][key] = value
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=2))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home must not break the app; recent items are a convenience


def recent_models(settings: Settings, kind: str) -> list[str]:
    """Recent runs whose method produces `kind` features (engine.registry.FEATURE_KINDS), then
    recent model files (checked when used: reading a whole checkpoint to list it costs too much)."""
    from engine.features import produces
    from engine.run import RunDir

    runs = [
        p
        for p in settings.recent("runs")
        if RunDir(p).has_checkpoint() and kind in produces(RunDir(p).path)
    ]
    files = [p for p in settings.recent("checkpoints") if Path(p).is_file()]
    return runs + files


def published_models() -> list[tuple[str, str]]:
    """(label, name) of the published models (engine.pretrained's catalog), those whose weights
    are already on this machine first: a name not cached downloads once when used (online)."""
    from engine.pretrained import CATALOG, is_cached

    rows = sorted(CATALOG.values(), key=lambda m: (not is_cached(m.name), m.name))
    return [
        (f"{m.name}  ({'on this computer' if is_cached(m.name) else 'downloads once'})", m.name)
        for m in rows
    ]
