"""Small widgets every page uses: page header, path picker with recent items, image view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.gui.paths import Settings


def to_qimage(arr: np.ndarray) -> QImage:
    """uint8 HxW or HxWx3/4 numpy array -> QImage (copied, so the array may be freed)."""
    a = np.ascontiguousarray(arr)
    if a.dtype != np.uint8:
        a = np.clip(a * (255 if a.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return QImage(
            a.data, a.shape[1], a.shape[0], a.strides[0], QImage.Format.Format_Grayscale8
        ).copy()
    fmt = QImage.Format.Format_RGB888 if a.shape[2] == 3 else QImage.Format.Format_RGBA8888
    return QImage(a.data, a.shape[1], a.shape[0], a.strides[0], fmt).copy()


def std_icon(widget: QWidget, name: str, colour: str | None = None) -> QIcon:
    """One of Qt's standard icons, optionally recoloured (white icons on the dark sidebar)."""
    icon = widget.style().standardIcon(getattr(QStyle.StandardPixmap, name))
    if colour is None:
        return icon
    pm = icon.pixmap(32, 32)
    if pm.isNull():
        return icon
    p = QPainter(pm)
    p.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)
    p.fillRect(pm.rect(), QColor(colour))
    p.end()
    return QIcon(pm)


def flush_layout(widget: QWidget, kind: type[QBoxLayout] = QVBoxLayout) -> QBoxLayout:
    """A box layout on `widget` without margins: a column (or row) nested in another layout."""
    lay = kind(widget)
    lay.setContentsMargins(0, 0, 0, 0)
    return lay


class Page(QWidget):
    """A page: title, one-line hint of what it is for (both set by the subclass), then the page's
    own content."""

    title = ""
    hint = ""

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setObjectName("page")
        self.outer = QVBoxLayout(self)
        self.outer.setContentsMargins(20, 16, 20, 12)
        self.outer.setSpacing(10)
        t = QLabel(self.title)
        t.setObjectName("pageTitle")
        h = QLabel(self.hint)
        h.setObjectName("pageHint")
        h.setWordWrap(True)
        self.outer.addWidget(t)
        self.outer.addWidget(h)


class PathPicker(QWidget):
    """Editable combo of recent paths + Browse button. mode: 'dir', 'file' or 'any'."""

    chosen = Signal(str)

    def __init__(
        self,
        settings: Settings,
        kind: str,
        mode: str = "dir",
        file_filter: str = "",
        placeholder: str = "",
        parent: QWidget | None = None,
        browse_text: str = "Browse…",
    ):
        super().__init__(parent)
        self.settings, self.kind, self.mode, self.file_filter = settings, kind, mode, file_filter
        lay = flush_layout(self, QHBoxLayout)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.setMinimumContentsLength(20)
        self.combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        if placeholder:
            self.combo.lineEdit().setPlaceholderText(placeholder)
        self.button = QPushButton(browse_text)
        self.button.setIcon(std_icon(self, "SP_DirOpenIcon" if mode != "file" else "SP_FileIcon"))
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.button)
        self.refresh_recent()
        self.button.clicked.connect(self.browse)
        self.combo.activated.connect(lambda _i: self._emit())
        self.combo.lineEdit().returnPressed.connect(self._emit)

    def refresh_recent(self) -> None:
        current = self.path()
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(self.settings.recent(self.kind))
        self.combo.setEditText(current)
        self.combo.blockSignals(False)

    def path(self) -> str:
        return self.combo.currentText().strip()

    def set_path(self, path: str | Path, emit: bool = True) -> None:
        self.combo.setEditText(str(path))
        if emit:
            self._emit()

    def browse(self) -> None:
        start = self.path() or str(Path.home())
        if self.mode == "dir":
            p = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self.mode == "any":  # a file, or cancel the file dialog to pick a folder instead
            p, _ = QFileDialog.getOpenFileName(
                self, "Choose a file (cancel to choose a folder)", start, self.file_filter
            )
            p = p or QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        else:
            p, _ = QFileDialog.getOpenFileName(self, "Choose a file", start, self.file_filter)
        if p:
            self.set_path(p)

    def _emit(self) -> None:
        p = self.path()
        if p:
            self.chosen.emit(p)

    def remember(self) -> None:
        if self.path():
            self.settings.add_recent(self.kind, self.path())
            self.refresh_recent()


class ImageView(QWidget):
    """Shows one image scaled to fit, aspect kept, with an optional caption underneath."""

    clicked = Signal()

    def __init__(self, parent: QWidget | None = None, min_size: int = 64):
        super().__init__(parent)
        self._pix: QPixmap | None = None
        self.caption = ""
        self.border: QColor | None = None
        self.setMinimumSize(min_size, min_size)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(
        self,
        img: QImage | QPixmap | np.ndarray | None,
        caption: str = "",
        border: str | tuple | None = None,
    ) -> None:
        self.border = (
            QColor(*border) if isinstance(border, tuple) else QColor(border) if border else None
        )
        if isinstance(img, np.ndarray):
            img = to_qimage(img)
        if isinstance(img, QImage):
            img = QPixmap.fromImage(img)
        self._pix, self.caption = img, caption
        self.update()

    def pixmap(self) -> QPixmap | None:
        return self._pix

    def image_rect(self) -> QRectF:
        """Where the image is drawn inside the widget (for mapping mouse positions)."""
        if self._pix is None or self._pix.isNull():
            return QRectF()
        cap = 18 if self.caption else 0
        w, h = self.width(), self.height() - cap
        s = min(w / self._pix.width(), h / self._pix.height())
        dw, dh = self._pix.width() * s, self._pix.height() * s
        return QRectF((w - dw) / 2, (h - dh) / 2, dw, dh)

    def sizeHint(self) -> QSize:
        return QSize(256, 256)

    def mousePressEvent(self, e) -> None:
        self.clicked.emit()
        super().mousePressEvent(e)

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        if self._pix is not None and not self._pix.isNull():
            r = self.image_rect()
            p.drawPixmap(r, self._pix, QRectF(self._pix.rect()))
            if self.border is not None:
                p.setPen(QPen(self.border, 4))
                p.drawRect(r.adjusted(2, 2, -2, -2))
        if self.caption:
            p.setPen(self.palette().windowText().color())
            p.drawText(
                QRectF(0, self.height() - 18, self.width(), 18),
                Qt.AlignmentFlag.AlignCenter,
                self.caption,
            )
        p.end()


def info_label(text: str = "", muted: bool = False) -> QLabel:
    lab = QLabel(text)
    lab.setObjectName("muted" if muted else "stat")
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


class PanelGrid(QWidget):
    """Captioned images in a grid of fixed-size cells (attention heads, PCA maps, neighbours)."""

    def __init__(self, cell: int = 150, parent: QWidget | None = None):
        super().__init__(parent)
        from PySide6.QtWidgets import QGridLayout

        self.cell = cell
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(4, 4, 4, 4)
        self.grid.setSpacing(8)
        self.views: list[ImageView] = []

    def set_panels(
        self, panels: list[tuple], cols: int, row_labels: list[str] | None = None
    ) -> None:
        """panels: (rgb uint8 [H, W, 3], caption[, border colour]) in row-major order."""
        while self.grid.count():
            w = self.grid.takeAt(0).widget()
            if w is not None:
                w.hide()  # gone now, not at the next turn of the event loop
                w.setParent(None)
                w.deleteLater()
        self.views = []
        off = 1 if row_labels else 0
        for i, panel in enumerate(panels):
            img, caption = panel[0], panel[1]
            border = panel[2] if len(panel) > 2 else None
            v = ImageView(min_size=self.cell)
            v.setFixedSize(self.cell, self.cell + 18)
            v.set_image(img, caption, border)
            r, c = divmod(i, cols)
            self.grid.addWidget(v, r, c + off)
            self.views.append(v)
        for r, text in enumerate(row_labels or []):
            lab = QLabel(text)
            lab.setObjectName("muted")
            lab.setWordWrap(True)
            lab.setFixedWidth(90)
            self.grid.addWidget(lab, r, 0)
        self.grid.setColumnStretch(cols + off, 1)
        self.grid.setRowStretch((len(panels) + cols - 1) // max(1, cols), 1)


class TimelineBar(QWidget):
    """Per-frame strip under a video slider, painted from a model with `n`, `states` (keyframe |
    done | pending | none | "" per frame), `keyframes`, `changed` (keyframes edited since the
    last run), `recomputed` (inclusive ranges the last run wrote) and `flagged` (frames to look
    at first): states as a coloured band, the last run's frames as a blue line below, keyframes
    as white ticks (amber while changed), flagged frames as red marks above, the current frame
    as a cursor. A click or drag seeks."""

    seek = Signal(int)
    COLOURS = {
        "done": "#3f8f5f",
        "keyframe": "#3f8f5f",
        "pending": "#a07d2c",
        "none": "#2b313b",
        "": "#2b313b",
    }
    RECOMPUTED, KEYFRAME, CHANGED, FLAGGED = "#4a90e2", "#ffffff", "#f5a524", "#e5484d"

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = None
        self.current = 0
        self.setFixedHeight(22)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "green: propagated · amber: still to propagate · white tick: keyframe (amber: changed, "
            "propagate again) · blue line: recomputed by the last run · red mark: the mask area jumps"
        )

    def set_model(self, model) -> None:
        self.model = model
        self.update()

    def set_current(self, t: int) -> None:
        self.current = t
        self.update()

    def frame_at(self, x: float) -> int:
        n = self.model.n if self.model is not None else 0
        return int(min(max(0, x / max(1, self.width()) * n), max(0, n - 1)))

    def mousePressEvent(self, e) -> None:
        if self.model is not None and self.model.n:
            self.seek.emit(self.frame_at(e.position().x()))

    def mouseMoveEvent(self, e) -> None:
        if e.buttons():
            self.mousePressEvent(e)

    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(self.rect(), QColor("#161a21"))
        m = self.model
        if m is None or not m.n:
            p.end()
            return
        fw = w / m.n
        band = QRectF(0, 5, 0, h - 11)

        def x0(t: int) -> float:
            return t * fw

        runs: list[tuple[int, int, str]] = []  # runs of one state, painted as one rectangle
        for t, s in enumerate(m.states or [""] * m.n):
            if runs and runs[-1][2] == s and runs[-1][1] == t - 1:
                runs[-1] = (runs[-1][0], t, s)
            else:
                runs.append((t, t, s))
        for a, b, s in runs:
            p.fillRect(
                QRectF(x0(a), band.y(), (b - a + 1) * fw, band.height()),
                QColor(self.COLOURS.get(s, "#2b313b")),
            )
        for a, b in m.recomputed:
            p.fillRect(QRectF(x0(a), h - 4, (b - a + 1) * fw, 3), QColor(self.RECOMPUTED))
        changed = set(m.changed)
        for t in m.keyframes:
            c = QColor(self.CHANGED if t in changed else self.KEYFRAME)
            p.fillRect(QRectF(x0(t) + fw / 2 - 1.5, 2, 3, h - 6), c)
        for t in m.flagged:
            p.fillRect(QRectF(x0(t) + fw / 2 - 2, 0, 4, 4), QColor(self.FLAGGED))
        cx = x0(self.current) + fw / 2
        p.setPen(QPen(QColor("#e6e9ef"), 1))
        p.drawLine(int(cx), 0, int(cx), h)
        p.end()
