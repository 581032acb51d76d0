"""Run the `mapsync` CLI in the test process, with the observable result of `python -m mapsync`.

`run(args, cwd, env)` returns a `subprocess.CompletedProcess[str]` as `subprocess.run` would:
the exit code (SystemExit / the CLI's Exit; an uncaught exception is 1 with its traceback on
stderr, as the interpreter prints it), stdout and stderr text. For the call only: the whole
environment (`env`), the working folder, sys.argv and stdin, the `mapsync` logging the CLI
sets up (and no handler on the root logger, so other libraries' warnings reach stderr through
logging's last resort, as in a fresh process), Python's default warning filters with warnings
on stderr, the signal handlers, and the process-global state a fresh interpreter starts
without (the log redactor's secrets, crash-point hits, rate-limited warnings, in-process call
budgets). The two rich consoles of `mapsync.cli.common` are set up again for each call as at
import in a process whose output is a pipe.

Crash points (`MAPSYNC_CRASH_AT`) run in `mapsync.crash`'s in-process mode: the point raises
`crash.Crashed`; from then on every SQL statement, begin and commit of the dead run (on any
thread but those alive before the call: the test's own servers) raises `Crashed` again, so
nothing is recorded behind it, and its output stops, as after SIGKILL; the result is returncode
-9. Leases record a stand-in pid (of a process that has exited), so the next run takes the dead
run's lease over at once, as after a real kill. After the call the dead run's frames are
dropped and collected, so its connections roll back and close.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mapsync import crash

PROG = "python -m mapsync"
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_LOGGERS = ("", "mapsync", "psycopg")
_lock = threading.Lock()  # one in-process command at a time


class _Net:
    """After an in-process crash: no statement and no commit of the dead run gets through."""

    exempt: frozenset[int] = frozenset()  # threads alive before the call (the test's servers)
    installed = False

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            sa.event.listen(sa.Engine, "before_cursor_execute", cls._statement)
            sa.event.listen(sa.Engine, "commit", cls._commit)
            sa.event.listen(sa.Engine, "begin", cls._commit)
            cls.installed = True

    @classmethod
    def _check(cls) -> None:
        if crash.dead() and threading.get_ident() not in cls.exempt:
            raise crash.Crashed("the run is dead: no statement after its crash point")

    @classmethod
    def _statement(cls, *_: Any) -> None:
        cls._check()

    @classmethod
    def _commit(cls, *_: Any) -> None:
        cls._check()


def _stand_in_pid() -> int:
    """The pid of a process that has exited: what a lease of a killed run names."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


class _Out(io.TextIOWrapper):
    """A pipe's end as the CLI sees it: UTF-8 text over bytes, not a terminal."""

    def __init__(self, errors: str) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors=errors, newline="\n", write_through=True)

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if crash.dead():  # a killed process writes nothing more
            return len(text)
        return super().write(text)

    def text(self) -> str:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _logging() -> Iterator[None]:
    saved = []
    for name in _LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.handlers[:], lg.level, lg.propagate, lg.filters[:], lg.disabled))
    root = logging.getLogger()
    root.handlers[:] = []  # a fresh process: nothing on the root, warnings go to the last resort
    try:
        yield
    finally:
        for lg, handlers, level, propagate, filters, disabled in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
            lg.filters[:] = filters
            lg.disabled = disabled


@contextlib.contextmanager
def _globals() -> Iterator[None]:
    """The module state a fresh interpreter starts without, empty for the call and restored."""
    from mapsync import logs
    from mapsync.capture import watermark
    from mapsync.redact import Redactor
    from mapsync.rest import budget

    redactor, warned, local = logs._redactor, dict(watermark._future_warned), dict(budget._LOCAL)
    logs._redactor = Redactor()
    watermark._future_warned.clear()
    budget._LOCAL.clear()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    try:
        yield
    finally:
        logs._redactor = redactor
        watermark._future_warned.clear()
        watermark._future_warned.update(warned)
        budget._LOCAL.clear()
        budget._LOCAL.update(local)
        for s, h in handlers.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _warnings() -> Iterator[None]:
    """The interpreter's default warning filters, shown on (the call's) stderr."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.showwarning = _show  # not pytest's recorder
        yield


def _show(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _consoles() -> None:
    """Set the CLI's consoles up again under the call's environment and streams (as at import)."""
    from mapsync.cli import common

    common.out.__init__(soft_wrap=True, width=None if sys.stdout.isatty() else 200)  # type: ignore[misc]
    common.err.__init__(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)  # type: ignore[misc]


def _exit_code(exc: SystemExit, err: _Out) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=err)
    return 1


@contextlib.contextmanager
def _finalizers() -> Iterator[None]:
    """Finalizers of the dead run that try to record something (a generator's `finally` run when
    it is collected) meet `Crashed`: dropped, as a killed process never runs them."""
    hook = sys.unraisablehook

    def dropped(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, crash.Crashed):
            hook(unraisable)

    sys.unraisablehook = dropped
    try:
        yield
    finally:
        sys.unraisablehook = hook


def run(args: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m mapsync ARGS` in this process; `env` is the whole environment of the call."""
    import mapsync.cli
    from mapsync.cli import common

    _Net.install()
    crashing = bool(env.get("MAPSYNC_CRASH_AT"))
    if crashing:
        env = {**env, "MAPSYNC_CRASH_MODE": "raise"}
    out, err = _Out("strict"), _Out("backslashreplace")
    code = 0
    with _lock, _environment(env), _logging(), _globals(), _warnings(), _finalizers():
        saved = (sys.stdout, sys.stderr, sys.stdin, sys.argv, os.getcwd())
        hook = sys.excepthook  # typer sets its own on each call
        crash.reset(_stand_in_pid() if crashing else None)
        _Net.exempt = frozenset(t.ident for t in threading.enumerate() if t.ident is not None) - {
            threading.get_ident()
        }
        try:
            sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO("")
            sys.argv = [PROG, *args]
            os.chdir(cwd)
            _consoles()
            try:
                try:
                    mapsync.cli.app(args=list(args), prog_name=PROG)
                except common.Exit as exc:  # as `mapsync.cli.main` does
                    sys.exit(exc.code)
            except SystemExit as exc:
                code = _exit_code(exc, err)
            except BaseException as exc:  # what the interpreter does with it
                if crash.dead():
                    code = -signal.SIGKILL
                else:
                    traceback.print_exception(exc, file=err)
                    code = 1
                del exc
            if crash.dead():
                code = -signal.SIGKILL
        finally:
            sys.stdout, sys.stderr, sys.stdin, sys.argv = saved[:4]
            sys.excepthook = hook
            os.chdir(saved[4])
            if crash.dead():
                gc.collect()  # the dead run's frames, connections, open transactions: rolled back, closed
            crash.reset()
            _Net.exempt = frozenset()
    _consoles()  # as at import, under the test process's own environment and streams
    return subprocess.CompletedProcess([PROG, *args], code, out.text(), err.text())
