"""`mapsync run --follow`: the command-line side of `mapsync.follow`."""

from __future__ import annotations

import threading

from mapsync import follow as follow_mod
from mapsync.cli import _fail, _handled, _print_report, _report_dict, _store, err, out
from mapsync.engine import Engine, RunReport
from mapsync.sheet.duration import parse_duration
from mapsync.sheet.loader import LoadedSheet


def run_follow(loaded: LoadedSheet, names: list[str], poll: str, as_json: bool) -> None:
    """Passes until SIGTERM/SIGINT; each pass that did something prints its report (one JSON
    object per line with --json). Exits 0 after a clean stop, whatever the passes reported:
    failed runs are in the history and `mapsync status`."""
    try:
        interval = parse_duration(poll)
    except ValueError as exc:
        raise _fail(f"--poll: {exc}", 2) from None
    if interval.total_seconds() <= 0:
        raise _fail("--poll must be more than 0", 2)
    store = _store(loaded, create=False)
    engine = Engine(loaded, store)
    stop = threading.Event()

    def report(r: RunReport) -> None:
        if as_json:
            import json

            out.print(json.dumps(_report_dict(r, loaded.sheet), default=str), soft_wrap=True, highlight=False)
        else:
            _print_report(r, loaded.sheet)

    try:
        with _handled(loaded.secrets), follow_mod.stop_on_signals(stop):
            err.print(f"following {', '.join(names)} (poll {poll}); stop with Ctrl-C or SIGTERM")
            passes = follow_mod.follow(engine, names, poll=interval, stop=stop, on_report=report)
            err.print(f"stopped after {passes} pass(es)")
    finally:
        engine.close()
        store.close()
