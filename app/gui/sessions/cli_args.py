"""Form values as CLI flags, Qt-free (the pages build `selfsup ...` command lines with it)."""

from __future__ import annotations

from typing import Any


def flag_value(v: Any) -> str:
    """A value as the CLI parses it back (bools true/false, tuples comma-separated)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    return str(v)
