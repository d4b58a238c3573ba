"""A form generated from a config dataclass: one widget per scalar field, help as tooltip.

The dataclasses in engine/config.py (and each method's config_cls) are the single source of
truth; this turns their fields into widgets and the widgets back into values, and into the
`selfsup train` flags that differ from the defaults.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from app.gui.sessions.cli_args import flag_value  # noqa: F401 - pages import it from here
from engine.config import dataclass_defaults, scalar_fields
from engine.errors import UserError


def humanise(name: str) -> str:
    return name.replace("_", " ")


class DataclassForm(QWidget):
    """Widgets for the scalar fields of `cls` (nested dataclasses and dicts are skipped)."""

    changed = Signal()

    def __init__(
        self,
        cls: type,
        skip: tuple[str, ...] = (),
        overrides: dict[str, Any] | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.cls = cls
        self.defaults = {**dataclass_defaults(cls), **(overrides or {})}
        self.widgets: dict[str, QWidget] = {}
        self.types: dict[str, Any] = {}
        self.layout_ = QFormLayout(self)
        self.layout_.setContentsMargins(4, 4, 4, 4)
        self.layout_.setHorizontalSpacing(12)
        self.layout_.setVerticalSpacing(6)
        for f, tp in scalar_fields(cls, skip):
            w = self._make(f, tp)
            w.setToolTip(f.metadata.get("help", ""))
            w.setObjectName(f"field_{f.name}")
            self.widgets[f.name] = w
            self.types[f.name] = tp
            label = QLabel(humanise(f.name))
            label.setToolTip(f.metadata.get("help", ""))
            self.layout_.addRow(label, w)
        self.set_values(self.defaults)

    def _make(self, f: dataclasses.Field, tp: Any) -> QWidget:
        if tp is bool:
            w = QCheckBox()
            w.toggled.connect(self.changed)
            return w
        if "choices" in f.metadata:
            w = QComboBox()
            w.addItems([str(c) for c in f.metadata["choices"]])
            w.currentIndexChanged.connect(self.changed)
            return w
        if tp is int:
            w = QSpinBox()
            w.setRange(-(2**31) + 1, 2**31 - 1)
            w.setAccelerated(True)
            w.valueChanged.connect(self.changed)
            return w
        w = QLineEdit()
        if tp is float:
            v = QDoubleValidator(w)
            v.setNotation(QDoubleValidator.Notation.ScientificNotation)
            w.setValidator(v)
        w.textChanged.connect(self.changed)
        return w

    def set_values(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            w = self.widgets.get(k)
            if w is None:
                continue
            w.blockSignals(True)
            if isinstance(w, QCheckBox):
                w.setChecked(bool(v))
            elif isinstance(w, QComboBox):
                i = w.findText(str(v))
                w.setCurrentIndex(max(0, i))
            elif isinstance(w, QSpinBox):
                w.setValue(int(v))
            else:
                w.setText(
                    flag_value(v)
                    if isinstance(v, (tuple, list))
                    else repr(v)
                    if isinstance(v, float)
                    else str(v)
                )
            w.blockSignals(False)
        self.changed.emit()

    def values(self) -> dict[str, Any]:
        """Parsed values; a malformed entry raises UserError naming the field."""
        out: dict[str, Any] = {}
        for k, w in self.widgets.items():
            tp = self.types[k]
            if isinstance(w, QCheckBox):
                out[k] = w.isChecked()
            elif isinstance(w, QComboBox):
                out[k] = w.currentText()
            elif isinstance(w, QSpinBox):
                out[k] = w.value()
            else:
                out[k] = parse(w.text().strip(), tp, k)
        return out

    def changed_values(self) -> dict[str, Any]:
        """Only the fields that differ from the (method-adjusted) defaults."""
        return {k: v for k, v in self.values().items() if not _same(v, self.defaults.get(k))}

    def set_defaults(self, overrides: dict[str, Any]) -> None:
        """New defaults (e.g. the chosen method's paper settings) shown in the widgets."""
        self.defaults = {**dataclass_defaults(self.cls), **overrides}
        self.set_values({k: v for k, v in self.defaults.items() if k in self.widgets})


def parse(text: str, tp: Any, name: str) -> Any:
    try:
        if tp is float:
            return float(text)
        if tp is int:
            return int(text)
        if typing.get_origin(tp) in (tuple, list):
            inner = (typing.get_args(tp) or (float,))[0]
            inner = float if inner is Ellipsis else inner
            return tuple(inner(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(
            f"{humanise(name)}: '{text}' is not a valid {getattr(tp, '__name__', str(tp))}"
        ) from None
    return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return tuple(a) == tuple(b)
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(b))
    return a == b
