"""A frame with an editable object mask and keypoints on top (the Video page's canvas).

Masks are object-id maps at the frame's own resolution (uint8 [H, W], 0 = background), the
same representation as video.masks, shown in the DAVIS palette so what you paint is what the
exported palette PNGs contain. Brush strokes are drawn with OpenCV lines of the brush width;
Ctrl+Z undoes a stroke (on the frame shown). In keypoint mode a press near a keypoint drags
it (it keeps its number, so a correction moves the same point), elsewhere adds one.
"""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeySequence, QPainter, QPen, QPixmap, QShortcut
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.gui.widgets import to_qimage

MODES = ("brush", "erase", "point", "view")


def palette() -> np.ndarray:
    from video.masks import DAVIS_PALETTE

    return DAVIS_PALETTE


def overlay_image(ids: np.ndarray, alpha: int = 130) -> QImage:
    """RGBA image: object colours where ids > 0 (void 255 left clear)."""
    pal = palette()
    rgba = np.zeros((*ids.shape, 4), np.uint8)
    rgba[..., :3] = pal[ids]
    rgba[..., 3] = np.where((ids > 0) & (ids != 255), alpha, 0)
    return to_qimage(rgba)


class MaskCanvas(QWidget):
    edited = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.frame: np.ndarray | None = None
        self.ids: np.ndarray | None = None
        self.points: list[tuple[float, float, int]] = []  # (x, y, object id)
        self.mode = "brush"
        self.current = 1
        self.brush = 8
        self.alpha = 130
        self._frame_pix: QPixmap | None = None
        self._overlay: QImage | None = None
        self._last: tuple[int, int] | None = None
        self._hover: QPointF | None = None
        self._undo: list[tuple[np.ndarray, list]] = []
        self._drag: int | None = None  # index of the keypoint being dragged
        self.setMouseTracking(True)
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        QShortcut(QKeySequence.StandardKey.Undo, self, activated=self.undo)

    # ---- content -------------------------------------------------------------------------
    def set_frame(
        self,
        frame: np.ndarray,
        ids: np.ndarray | None = None,
        points: list | None = None,
        keep_mask: bool = False,
    ) -> None:
        self.frame = frame
        self._frame_pix = QPixmap.fromImage(to_qimage(frame))
        if not keep_mask:
            self.ids = np.zeros(frame.shape[:2], np.uint8) if ids is None else ids.astype(np.uint8)
            self.points = list(points or [])
            self._undo.clear()  # undo stays on the frame it was made on
            self._drag = self._last = None
        self._refresh_overlay()

    def set_mask(self, ids: np.ndarray, undoable: bool = True) -> None:
        if self.frame is not None and ids.shape != self.frame.shape[:2]:
            from engine.errors import UserError

            raise UserError(
                f"mask is {ids.shape[1]}x{ids.shape[0]} but the frame is {self.frame.shape[1]}x{self.frame.shape[0]}"
            )
        if undoable:
            self._push_undo()
        self.ids = ids.astype(np.uint8).copy()
        self._refresh_overlay()
        self.edited.emit()

    def clear(self) -> None:
        self._push_undo()
        if self.ids is not None:
            self.ids[:] = 0
        self.points = []
        self._refresh_overlay()
        self.edited.emit()

    def object_ids(self) -> list[int]:
        ids = (
            set()
            if self.ids is None
            else {int(i) for i in np.unique(self.ids) if i not in (0, 255)}
        )
        return sorted(ids | {p[2] for p in self.points})

    def _refresh_overlay(self) -> None:
        self._overlay = overlay_image(self.ids, self.alpha) if self.ids is not None else None
        self.update()

    def _push_undo(self) -> None:
        if self.ids is not None:
            self._undo.append((self.ids.copy(), list(self.points)))
            del self._undo[:-30]

    def undo(self) -> None:
        if self._undo:
            self.ids, self.points = self._undo.pop()
            self._refresh_overlay()
            self.edited.emit()

    # ---- geometry ------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        if self.frame is None:
            return QRectF()
        h, w = self.frame.shape[:2]
        s = min(self.width() / w, self.height() / h)
        return QRectF((self.width() - w * s) / 2, (self.height() - h * s) / 2, w * s, h * s)

    def to_image(self, pos: QPointF) -> tuple[float, float] | None:
        r = self.image_rect()
        if r.isEmpty():
            return None
        h, w = self.frame.shape[:2]
        x = (pos.x() - r.x()) / r.width() * w
        y = (pos.y() - r.y()) / r.height() * h
        return (x, y) if 0 <= x < w and 0 <= y < h else None

    def sizeHint(self) -> QSize:
        return QSize(640, 420)

    # ---- editing -------------------------------------------------------------------------
    def paint_at(self, x: float, y: float, erase: bool = False) -> None:
        """One brush stamp (or a line from the previous stamp while dragging)."""
        value = 0 if erase or self.mode == "erase" else self.current
        p = (int(round(x)), int(round(y)))
        if self._last is None:
            cv2.circle(self.ids, p, self.brush, int(value), -1)
        else:
            cv2.line(self.ids, self._last, p, int(value), thickness=2 * self.brush + 1)
        self._last = p
        self._refresh_overlay()

    def add_point(self, x: float, y: float) -> None:
        self._push_undo()
        self.points.append((float(x), float(y), self.current))
        self.update()
        self.edited.emit()

    def point_near(self, x: float, y: float) -> int | None:
        """Index of the keypoint within reach of (x, y) (image pixels), None if none is."""
        if not self.points:
            return None
        d = [(px - x) ** 2 + (py - y) ** 2 for px, py, _ in self.points]
        i = int(np.argmin(d))
        r = self.image_rect()
        reach = 10 / (r.width() / self.frame.shape[1]) if not r.isEmpty() else 10
        return i if d[i] < max(reach, 3 * self.brush + 6) ** 2 else None

    def remove_point_near(self, x: float, y: float) -> None:
        i = self.point_near(x, y)
        if i is not None:
            self._push_undo()
            self.points.pop(i)
            self.update()
            self.edited.emit()

    def move_point(self, i: int, x: float, y: float) -> None:
        """Keypoint i to (x, y), keeping its number and object."""
        self.points[i] = (float(x), float(y), self.points[i][2])
        self.update()

    def mousePressEvent(self, e) -> None:
        if self.mode == "view" or self.frame is None:
            return
        xy = self.to_image(e.position())
        if xy is None:
            return
        right = e.button() == Qt.MouseButton.RightButton
        if self.mode == "point":
            near = self.point_near(*xy)
            if right:
                self.remove_point_near(*xy)
            elif near is not None:
                self._push_undo()
                self._drag = near
            else:
                self.add_point(*xy)
            return
        self._push_undo()
        self._last = None
        self.paint_at(*xy, erase=right)
        self._erasing = right

    def mouseMoveEvent(self, e) -> None:
        self._hover = e.position()
        if self._drag is not None and e.buttons():
            xy = self.to_image(e.position())
            if xy is not None:
                self.move_point(self._drag, *xy)
        if self.mode in ("brush", "erase") and e.buttons() and self._last is not None:
            xy = self.to_image(e.position())
            if xy is not None:
                self.paint_at(*xy, erase=getattr(self, "_erasing", False))
        self.update()

    def mouseReleaseEvent(self, e) -> None:
        if self._drag is not None:
            self._drag = None
            self.edited.emit()
        if self._last is not None:
            self._last = None
            self.edited.emit()

    def leaveEvent(self, e) -> None:
        self._hover = None
        self.update()

    # ---- drawing -------------------------------------------------------------------------
    def paintEvent(self, _e) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#11151c"))
        if self._frame_pix is None:
            p.setPen(QColor("#98a2b3"))
            p.drawText(
                self.rect(), Qt.AlignmentFlag.AlignCenter, "Open a video or a DAVIS folder to start"
            )
            p.end()
            return
        r = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawPixmap(r, self._frame_pix, QRectF(self._frame_pix.rect()))
        if self._overlay is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(r, self._overlay, QRectF(self._overlay.rect()))
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        h, w = self.frame.shape[:2]
        s = r.width() / w
        pal = palette()
        font = QFont(self.font())
        font.setPointSizeF(8)
        font.setBold(True)
        p.setFont(font)
        for k, (x, y, obj) in enumerate(self.points):
            c = QPointF(r.x() + x * s, r.y() + y * s)
            p.setPen(QPen(QColor("white"), 2))
            p.setBrush(QColor(*[int(v) for v in pal[obj % 256]]))
            p.drawEllipse(c, 7, 7)
            p.setPen(QColor("white"))
            p.drawText(QRectF(c.x() + 8, c.y() - 16, 30, 14), str(k + 1))
        if self._hover is not None and self.mode in ("brush", "erase"):
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor("white"), 1, Qt.PenStyle.DashLine))
            p.drawEllipse(self._hover, self.brush * s, self.brush * s)
        p.end()
