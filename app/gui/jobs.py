"""Background work: CLI child processes for long jobs, a thread pool for short ones.

Long work (training, propagation, indexing) runs as `python -m app ...` in a QProcess, in its
own session so that cancelling can take down the whole process group (DataLoader workers
included) and a crash in the child cannot take the window down. Short work (a forward pass,
thumbnails) runs in QThreadPool workers whose results come back through queued signals.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QObject,
    QProcess,
    QProcessEnvironment,
    QRunnable,
    QThreadPool,
    QTimer,
    Signal,
    Slot,
)

from app.gui.errors import log, setup_logging
from engine.events import EventTail


def cli_command(args: list[str]) -> list[str]:
    """How a CLI command line is shown to users (the same as typing it in a terminal)."""
    return ["selfsup", *[a if a and " " not in a else repr(a) for a in args]]


class CliJob(QObject):
    """One `selfsup ...` child process with line-wise output and a one-line error on failure."""

    output = Signal(str)  # each line of stdout / stderr (tqdm's \r updates split into lines)
    event = Signal(dict)  # each record of the command's --events stream (progress, done, error)
    finished = Signal(int, str)  # exit code, one-line error message ("" on success or stop)

    def __init__(self, parent: QObject | None = None, kill_after_s: float = 30.0):
        super().__init__(parent)
        self.proc: QProcess | None = None
        self.args: list[str] = []
        self.module = "app"
        self.lines: list[str] = []
        self.stopping = False
        self.kill_after_ms = int(kill_after_s * 1000)
        self.pid = 0
        self._buf = {"out": "", "err": ""}
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.kill)
        self.tail: EventTail | None = None
        self.result: dict[str, Any] | None = None  # the `done` record's result
        self._events_timer = QTimer(self)
        self._events_timer.setInterval(100)
        self._events_timer.timeout.connect(self._poll_events)

    def start(
        self,
        args: list[str],
        cwd: str | Path | None = None,
        module: str = "app",
        events: str | Path | None = None,
    ) -> None:
        """Run `python -m <module> args...` (module "app" is the `selfsup` CLI). With `events`,
        the command writes its progress there (`--events FILE`) and `event` relays each record."""
        if self.is_running():
            raise RuntimeError("job already running")
        self.result, self.tail = None, None
        if events is not None:
            Path(events).unlink(missing_ok=True)
            args = [*args, "--events", str(events)]
            self.tail = EventTail(events)
            self._events_timer.start()
        self.args, self.module, self.lines, self.stopping = list(args), module, [], False
        self._buf = {"out": "", "err": ""}
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        if cwd:
            proc.setWorkingDirectory(str(cwd))
        if hasattr(QProcess, "UnixProcessFlag") and sys.platform != "win32":
            flags = (
                QProcess.UnixProcessFlag.CreateNewSession | QProcess.UnixProcessFlag.IgnoreSigPipe
            )
            proc.setUnixProcessParameters(flags)
        proc.readyReadStandardOutput.connect(lambda: self._read("out"))
        proc.readyReadStandardError.connect(lambda: self._read("err"))
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.proc = proc
        setup_logging()
        log.info(
            "start: %s",
            " ".join(cli_command(args))
            if module == "app"
            else f"python -m {module} {' '.join(args)}",
        )
        proc.start(sys.executable, ["-m", module, *args])
        self.pid = int(proc.processId() or 0)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.state() != QProcess.ProcessState.NotRunning

    def stop(self) -> None:
        """Polite stop: SIGTERM to the CLI process (training checkpoints and exits), then kill."""
        if not self.is_running():
            return
        self.stopping = True
        self.proc.terminate()
        self._kill_timer.start(self.kill_after_ms)

    def kill(self) -> None:
        """Hard stop of the whole process group (the child and anything it started)."""
        if not self.is_running():
            return
        self.stopping = True
        if self.pid and sys.platform != "win32":
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        else:
            self.proc.kill()

    def wait(self, ms: int) -> bool:
        """Blocking wait; only for shutdown and tests, never from a running page."""
        return self.proc is None or self.proc.waitForFinished(ms)

    def _read(self, which: str) -> None:
        if self.proc is None:
            return
        raw = (
            self.proc.readAllStandardOutput()
            if which == "out"
            else self.proc.readAllStandardError()
        )
        text = self._buf[which] + bytes(raw.data()).decode("utf-8", "replace")
        parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buf[which] = parts.pop()
        for line in parts:
            if line.strip():
                self._emit(line)

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        del self.lines[:-400]
        self.output.emit(line)

    def error_message(self, code: int) -> str:
        """The CLI's own `error: ...` line when there is one, else the last line it printed."""
        for line in reversed(self.lines):
            if line.startswith("error: "):
                return line[len("error: ") :]
        tail = [ln for ln in self.lines if ln.strip()]
        last = tail[-1].strip() if tail else ""
        what = f"exit code {code}" if code >= 0 else "it was killed"
        name = " ".join(cli_command(self.args[:1]))
        return f"{name} stopped unexpectedly ({what}){': ' + last if last else ''}"

    def _poll_events(self) -> None:
        if self.tail is None:
            return
        for e in self.tail.poll():
            if e.get("type") == "done":
                self.result = e.get("result") or {}
            self.event.emit(e)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        self._events_timer.stop()
        self._poll_events()
        for which in ("out", "err"):
            self._read(which)
            if self._buf[which].strip():
                self._emit(self._buf[which])
            self._buf[which] = ""
        if status == QProcess.ExitStatus.CrashExit:
            code = -1
        message = "" if code == 0 else self.error_message(code)
        if code != 0:
            log.error(
                "job failed (%s): %s\n%s",
                code,
                " ".join(cli_command(self.args)),
                "\n".join(self.lines[-60:]),
            )
        self.finished.emit(code, message)

    def _on_error(self, err: QProcess.ProcessError) -> None:
        if err == QProcess.ProcessError.FailedToStart:
            self.lines.append(f"could not start {sys.executable}")
            self.finished.emit(
                -1, f"could not start the command line tool ({sys.executable} -m app)"
            )


class _Signals(QObject):
    """Lives on the GUI thread; its own slots receive the worker's signals (queued), so the
    callbacks always run on the GUI thread. With a latest-only key, a result whose call has
    been superseded (or cancelled) is dropped instead of delivered."""

    done = Signal(object)
    failed = Signal(object)

    def __init__(
        self,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        parent: QObject | None = None,
        key: tuple | None = None,
        token: int = 0,
    ):
        super().__init__(parent)
        self.on_done, self.on_error = on_done, on_error
        self.key, self.token = key, token
        self.done.connect(self._done)
        self.failed.connect(self._failed)

    def current(self) -> bool:
        return self.key is None or _latest.get(self.key) == self.token

    @Slot(object)
    def _done(self, result: Any) -> None:
        _live.discard(self)
        if self.current():
            self.on_done(result)

    @Slot(object)
    def _failed(self, error: BaseException) -> None:
        _live.discard(self)
        if self.current():
            self.on_error(error)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], signals: _Signals):
        super().__init__()
        self.fn, self.signals = fn, signals
        self.setAutoDelete(True)

    def run(self) -> None:
        if not self.signals.current():  # superseded before it started: skip the work
            self.signals.done.emit(None)
            return
        try:
            result = self.fn()
        except BaseException as e:  # handed to the GUI thread, shown as a one-line dialog
            e.__traceback__ = e.__traceback__ or sys.exc_info()[2]
            e.formatted = traceback.format_exc()  # type: ignore[attr-defined]
            self.signals.failed.emit(e)
            return
        self.signals.done.emit(result)


_pool: QThreadPool | None = None
_live: set[_Signals] = set()
_latest: dict[tuple, int] = {}  # (owner id, key) -> token of the newest call
_tokens = iter(range(1, 1 << 62))


def pool() -> QThreadPool:
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(max(2, min(4, os.cpu_count() or 2)))
    return _pool


def _scope(owner: QObject | None, key: Any) -> tuple:
    return (id(owner) if owner is not None else 0, key)


def run_in_thread(
    fn: Callable[[], Any],
    on_done: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
    owner: QObject | None = None,
    key: Any = None,
) -> None:
    """Run fn in a worker thread; on_done / on_error are called on the GUI thread.

    key (latest-only): a newer call with the same key and owner supersedes this one, whose
    result (or error) is then dropped, never delivered; a call not yet started is skipped."""
    scope, token = None, 0
    if key is not None:
        scope, token = _scope(owner, key), next(_tokens)
        _latest[scope] = token
    signals = _Signals(on_done, on_error, owner, scope, token)
    _live.add(signals)
    pool().start(_Task(fn, signals))


def cancel_pending(owner: QObject | None, *keys: Any) -> None:
    """Drop the results of the calls still running under these keys (e.g. on shutdown, or when
    the input they were computed for is gone)."""
    for key in keys:
        scope = _scope(owner, key)
        if scope in _latest:
            _latest[scope] = next(_tokens)


def is_pending(owner: QObject | None, key: Any) -> bool:
    """A latest-only call under this key has not delivered (or been dropped) yet."""
    scope = _scope(owner, key)
    return any(s.key == scope and s.token == _latest.get(scope) for s in _live)
