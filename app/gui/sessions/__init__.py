"""Qt-free page state (napari's layer / _qt split): each page's session object holds what the
page shows and decides, and tells the page through plain-callback events; the page only renders
and forwards input. Nothing here imports Qt, so the logic is unit-tested without a window."""

from app.gui.sessions.events import Event

__all__ = ["Event"]
