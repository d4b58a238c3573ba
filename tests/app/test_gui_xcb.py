"""`selfsup gui` on a Linux desktop without the X11 libraries Qt's xcb plugin needs: one line
with the fix and exit 2, before Qt aborts the process."""

from __future__ import annotations

import sys

import pytest

import app.commands.gui as gui


@pytest.fixture
def x11_desktop(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_missing_xcb_libraries_give_the_install_command(x11_desktop, monkeypatch, capsys):
    from app.cli import main

    found = {"xcb-cursor": False, "xcb-keysyms": False}
    monkeypatch.setattr(gui, "has_library", lambda name, soname: found.get(name, True))
    started = []
    monkeypatch.setitem(sys.modules, "app.gui", type(sys)("app.gui"))
    sys.modules["app.gui"].main = lambda *a: started.append(a) or 0  # must not be reached
    assert main(["gui"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and not started
    assert "sudo apt-get install libxcb-cursor0 libxcb-keysyms1`" in err


def test_no_check_when_qt_will_not_use_xcb(x11_desktop, monkeypatch):
    monkeypatch.setattr(gui, "has_library", lambda name, soname: False)
    assert len(gui.missing_xcb_packages()) == len(gui.XCB_LIBS)
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    assert len(gui.missing_xcb_packages()) == len(gui.XCB_LIBS)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert gui.missing_xcb_packages() == []
    monkeypatch.setenv("QT_QPA_PLATFORM", "wayland")
    assert gui.missing_xcb_packages() == []
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.delenv("DISPLAY")
    assert gui.missing_xcb_packages() == []
    monkeypatch.setattr(gui, "has_library", lambda name, soname: True)
    monkeypatch.setenv("DISPLAY", ":0")
    assert gui.missing_xcb_packages() == []


def test_real_lookup_finds_libc():
    assert gui.has_library("c", "libc.so.6") and not gui.has_library("no-such-lib-x", "libnox.so.9")
