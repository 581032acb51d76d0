"""Loaded at start-up (PYTHONPATH) by the processes the several-workers clock test runs under
libfaketime (tests/integration/state/test_workers_process.py).

With FAKETIME_DONT_FAKE_MONOTONIC (needed, or every timed wait lasts the two minutes of the
offset), libfaketime 0.9.10 fails every `clock_nanosleep` on the monotonic clock with EINVAL: each
`time.sleep` raises `OSError: [Errno 22] Invalid argument`, so the daemon could not wait between
two tries of a state store call (a crash with a traceback instead of a retry). A host whose clock
is off sleeps fine, so here a sleep is a timed wait, which works under libfaketime."""

from __future__ import annotations

import threading
import time


def _sleep(seconds: float) -> None:
    threading.Event().wait(max(0.0, seconds))


time.sleep = _sleep
