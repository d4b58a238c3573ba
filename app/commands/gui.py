"""`selfsup gui [PATH]`: open the desktop app, optionally on a run folder or a data folder."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys

from engine.errors import UserError

PAGES = ("data", "train", "features", "video", "search")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gui",
        help="open the desktop app",
        description="Open the desktop app. With a run folder it opens on that run's curves; with an image folder, video or caption file it opens on the Data page.",
    )
    p.add_argument(
        "path",
        nargs="?",
        metavar="RUN_DIR",
        help="a run folder (or an image folder / video / caption file) to open",
    )
    p.add_argument("--page", choices=PAGES, help="page to show first")
    p.set_defaults(func=run)


def has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(
        os.environ.get("DISPLAY")
        or os.environ.get("WAYLAND_DISPLAY")
        or os.environ.get("QT_QPA_PLATFORM")
    )


# What Qt's xcb platform plugin loads beyond a basic X11 desktop: (library, soname, Debian package).
# Without them Qt only says "could not load the Qt platform plugin xcb" and aborts the process.
XCB_LIBS = (
    ("xcb-cursor", "libxcb-cursor.so.0", "libxcb-cursor0"),
    ("xcb-icccm", "libxcb-icccm.so.4", "libxcb-icccm4"),
    ("xcb-keysyms", "libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("xcb-image", "libxcb-image.so.0", "libxcb-image0"),
    ("xcb-render-util", "libxcb-render-util.so.0", "libxcb-render-util0"),
    ("xkbcommon-x11", "libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
)


def has_library(name: str, soname: str) -> bool:
    """Loadable by the dynamic linker (as Qt will load it), or known to ldconfig."""
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return ctypes.util.find_library(name) is not None


def missing_xcb_packages() -> list[str]:
    """Debian packages of the X11 libraries Qt's xcb plugin needs and cannot find; empty when
    Qt will not use xcb (another QT_QPA_PLATFORM, no DISPLAY, not Linux)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or not os.environ.get("DISPLAY"):
        return []
    if platform and not platform.startswith("xcb"):
        return []
    return [pkg for name, soname, pkg in XCB_LIBS if not has_library(name, soname)]


def run(args: argparse.Namespace) -> int:
    if args.path and not os.path.exists(os.path.expanduser(args.path)):
        raise UserError(f"{args.path}: no such run folder or file")
    if not has_display():
        raise UserError(
            "no display found (DISPLAY is not set); run the app on a desktop, or set QT_QPA_PLATFORM=offscreen for screenshots"
        )
    missing = missing_xcb_packages()
    if missing:
        raise UserError(
            f"Qt cannot start on X11 without {', '.join(missing)}; install them with "
            f"`sudo apt-get install {' '.join(missing)}` (Fedora: xcb-util-cursor xcb-util-wm "
            "xcb-util-keysyms xcb-util-image xcb-util-renderutil libxkbcommon-x11)"
        )
    try:
        from app.gui import main
    except ImportError as e:
        raise UserError(
            f"the desktop app needs PySide6 and pyqtgraph ({e}); pip install 'selfsup-studio'"
        ) from None
    return main(args.path, args.page)
