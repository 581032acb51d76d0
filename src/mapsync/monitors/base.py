"""The monitor registry and evaluation (see the package's docstring)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Literal

from mapsync.monitors.facts import SheetFacts, SyncFacts
from mapsync.state.data import Finding

log = logging.getLogger("mapsync.watch")
Check = Callable[[Any], list[Finding] | None]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One monitor: its name (as written in `monitors.disabled` and in routes), its default
    severity and failure class (who is called: `source`/`destination` are the system owner's,
    `tool`/`config`/`state` ours), a one-line runbook, the scope it looks at and its check."""

    name: str
    severity: str
    failure_class: str
    runbook: str
    scope: Literal["sync", "sheet"]
    check: Check
    doc: str = ""


REGISTRY: dict[str, Spec] = {}


def monitor(
    name: str, *, severity: str, failure_class: str, runbook: str, scope: Literal["sync", "sheet"] = "sync"
) -> Callable[[Check], Check]:
    """Register a check under `name` (its docstring is its documentation)."""

    def register(check: Check) -> Check:
        if name in REGISTRY:
            raise ValueError(f"monitor {name} registered twice")
        REGISTRY[name] = Spec(
            name, severity, failure_class, runbook, scope, check, (check.__doc__ or "").strip()
        )
        return check

    return register


def finding(spec_name: str, facts: SyncFacts | SheetFacts, message: str, **kw: Any) -> Finding:
    """A finding of monitor `spec_name` with its registered severity (or the sheet's override),
    failure class and runbook; `kw` may override `numbers`, `subject`, `failure_class`, `runbook`."""
    spec = REGISTRY[spec_name]
    severity = facts.thresholds.severity.get(spec_name, spec.severity)
    return Finding(
        monitor=spec_name,
        sync=facts.sync if isinstance(facts, SyncFacts) else None,
        severity=severity,
        failure_class=kw.pop("failure_class", spec.failure_class),
        message=message,
        numbers=kw.pop("numbers", {}),
        runbook=kw.pop("runbook", spec.runbook),
        subject=kw.pop("subject", ""),
    )


def _evaluate(scope: str, facts: Any) -> dict[str, list[Finding] | None]:
    out: dict[str, list[Finding] | None] = {}
    for name, spec in REGISTRY.items():
        if spec.scope != scope or name in facts.thresholds.disabled:
            continue
        try:
            out[name] = spec.check(facts)
        except Exception as exc:  # a bug in one monitor must not cost the others' answers
            log.error(
                "monitor_failed",
                extra={
                    "action": "monitor_failed",
                    "monitor": name,
                    "sync": getattr(facts, "sync", None),
                    "error": type(exc).__name__,  # the class only: a message could quote a value
                },
            )
            out[name] = None  # cannot tell: its incidents stay as they are
    return out


def evaluate_sync(facts: SyncFacts) -> dict[str, list[Finding] | None]:
    """Each sync monitor's findings for one sync (None: it cannot tell); disabled ones left out."""
    return _evaluate("sync", facts)


def evaluate_sheet(facts: SheetFacts) -> dict[str, list[Finding] | None]:
    """Each sheet-wide monitor's findings (the state store, clocks, disk, alert channels)."""
    return _evaluate("sheet", facts)
