"""Checkpoint IO: atomic writes, and loads that never unpickle code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from engine.errors import UserError

FORMAT = "selfsup-v1"


def atomic_write(path: str | Path, write_fn) -> None:
    """Write through `write_fn(tmp_path)` then rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write_fn(tmp)
    os.replace(tmp, path)


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    import torch  # here, not at the top: atomic_write serves torch-free callers too

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", allow: tuple = ()
) -> dict[str, Any]:
    """Weights only: tensors and plain containers, plus exactly the classes in `allow` (DINO's
    checkpoints hold an argparse.Namespace); anything else that would unpickle code is refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path}: refused to load, the file needs code unpickling ({first[:160]})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint ({msg[:160]})") from None
