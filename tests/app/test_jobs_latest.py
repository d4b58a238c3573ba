"""app.gui.jobs.run_in_thread(key=...): a newer call with the same key (and owner) makes the
older result be dropped; cancel_pending drops what is in flight; other keys are independent."""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject

from app.gui import jobs
from tests.app.helpers import wait_until


def test_latest_only_drops_superseded_results(qtbot):
    owner, other = QObject(), QObject()
    gate = threading.Event()
    got, errors = [], []

    def slow(v):
        def fn():
            gate.wait(10)
            return v

        return fn

    jobs.run_in_thread(slow("old"), got.append, errors.append, owner, key="k")
    jobs.run_in_thread(slow("other-key"), got.append, errors.append, owner, key="j")
    jobs.run_in_thread(slow("other-owner"), got.append, errors.append, other, key="k")
    jobs.run_in_thread(slow("new"), got.append, errors.append, owner, key="k")
    assert jobs.is_pending(owner, "k")
    gate.set()
    wait_until(qtbot, lambda: len(got) == 3, 10, "the three current results")
    qtbot.wait(200)
    assert sorted(got) == ["new", "other-key", "other-owner"] and errors == []
    assert not jobs.is_pending(owner, "k")


def test_superseded_errors_are_dropped_and_cancel_pending(qtbot):
    owner = QObject()
    gate = threading.Event()
    got, errors = [], []

    def fail():
        gate.wait(10)
        raise RuntimeError("stale")

    jobs.run_in_thread(fail, got.append, errors.append, owner, key="k")
    jobs.run_in_thread(lambda: gate.wait(10) and "fresh", got.append, errors.append, owner, key="k")
    jobs.run_in_thread(
        lambda: gate.wait(10) and "cancelled", got.append, errors.append, owner, key="c"
    )
    jobs.cancel_pending(owner, "c")
    assert not jobs.is_pending(owner, "c")
    gate.set()
    wait_until(qtbot, lambda: got == ["fresh"], 10, "the fresh result")
    qtbot.wait(200)
    assert got == ["fresh"] and errors == []


def test_without_key_every_result_is_delivered(qtbot):
    got = []
    for i in range(3):
        jobs.run_in_thread(lambda i=i: i, got.append, lambda e: None)
    wait_until(qtbot, lambda: len(got) == 3, 10, "every result")
    assert sorted(got) == [0, 1, 2]
