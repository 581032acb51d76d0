"""Named crash points for fault-injection tests.

`MAPSYNC_CRASH_AT=<point>[:<nth>]` kills the process with SIGKILL the nth time (default 1st)
execution passes `<point>`; with `MAPSYNC_CRASH_SIGNAL=STOP` it stops it there instead (SIGSTOP,
as a frozen VM or a long GC pause would: SIGCONT resumes it right after the point, a zombie).
If `MAPSYNC_CRASH_MARKER` names a file, the point's name is
written there first, so a test can prove the crash fired.

In-process mode (`MAPSYNC_CRASH_MODE=raise`, set by the tests' in-process CLI runner): the point
raises `Crashed` instead, a BaseException that no `except Exception` catches, so the open
transactions roll back on the way up as the server rolls them back after a SIGKILL. From then
on `dead()` is true: the `except BaseException` handlers re-raise at once without recording
anything, and the runner refuses every further statement and commit of the dead run (see
tests/cli_runner.py), so it leaves the state a killed process leaves. `pid()` is the process id
that leases record: `os.getpid()`, or in-process a stand-in pid of a process that has exited.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

POINTS: tuple[str, ...] = (
    "after_read",  # CP1: batch read from the source, nothing written yet
    "after_write",  # CP2: destination confirmed, nothing else recorded
    "after_ack",  # CP3: source acknowledged (queue rows, write-back), state not committed
    "after_commit",  # CP4: state committed, before the next batch is read
    "during_write",  # CP5: inside the destination transaction, before its commit
    "during_state_write",  # CP8: inside the state transaction, before its commit
    "during_error_record",  # CP9: while recording record errors
)

# Points of asynchronous delivery (REST jobs, CIMcloud queue). Kept out of POINTS: the SQL
# crash matrix runs every point of POINTS, and these fire only with `delivery.mode: async`.
ASYNC_POINTS: tuple[str, ...] = (
    "after_async_record",  # batch id and keys persisted, the submit not sent (or not answered)
    "after_async_submit",  # job id persisted, the results not yet known
)

# Points of a transaction export (`changes: {method: export_flag}`), kept out of POINTS like the
# async ones: between the write-back of the delivered rows and that of the refused ones.
EXPORT_POINTS: tuple[str, ...] = ("during_writeback",)

# Points of an export from an API whose GET marks what it returns (capture/export_inbox.py):
# the GET answered and nothing stored (the answer is lost: the lost-order sweep finds them), and
# the raw page stored in the inbox but not yet split into its orders.
DESTRUCTIVE_POINTS: tuple[str, ...] = ("after_get", "after_page_stored")

_hits: dict[str, int] = {}
_dead: str | None = None  # in-process mode: the point that "killed" this run
_stand_in: int | None = None  # in-process mode: the pid that leases record


class Crashed(BaseException):
    """A crash point fired in in-process mode: the run is dead (as after SIGKILL)."""


def dead() -> bool:
    """Whether an in-process crash point fired: nothing more may be recorded."""
    return _dead is not None


def pid() -> int:
    """The process id that leases and runs record for this process."""
    return _stand_in if _stand_in is not None else os.getpid()


def reset(stand_in: int | None = None) -> None:
    """Forget the hits and the death (the in-process runner, before and after each command)."""
    global _dead, _stand_in
    _hits.clear()
    _dead = None
    _stand_in = stand_in


def point(name: str) -> None:
    """Die here if the environment asks for it."""
    global _dead
    spec = os.environ.get("MAPSYNC_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    marker = os.environ.get("MAPSYNC_CRASH_MARKER")
    if marker:
        with Path(marker).open("a", encoding="utf-8") as fh:
            fh.write(f"{name}:{_hits[name]}\n")
            fh.flush()
            os.fsync(fh.fileno())
    if os.environ.get("MAPSYNC_CRASH_MODE") == "raise":
        _dead = name
        raise Crashed(name)
    if os.environ.get("MAPSYNC_CRASH_SIGNAL", "").upper() == "STOP":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    os.kill(os.getpid(), signal.SIGKILL)
