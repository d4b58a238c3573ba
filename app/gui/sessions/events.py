"""A plain-callback event: what a Qt signal is to a widget, without Qt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Event:
    """`session.changed.connect(fn)`; `session.changed.emit(*args)` calls every fn in order."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> None:
        self._callbacks.append(fn)

    def disconnect(self, fn: Callable[..., Any]) -> None:
        self._callbacks.remove(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._callbacks):
            fn(*args)
