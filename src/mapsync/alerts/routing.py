"""Which channels hear of an incident: the sheet's `alerts.routes`, in order (the first route that
matches takes it, unless it says `continue: true`); without routes, every channel; without
`alerts:`, none (the incident is only logged)."""

from __future__ import annotations

from mapsync.sheet.alert_models import AlertsConfig, Match
from mapsync.state.data import Finding


def matches(match: Match, finding: Finding) -> bool:
    """Every condition the match gives holds for the finding (`*` in `sync` takes any sync)."""
    if match.sync is not None and "*" not in match.sync and finding.sync not in match.sync:
        return False
    if match.monitor is not None and finding.monitor not in match.monitor:
        return False
    if match.failure_class is not None and finding.failure_class not in match.failure_class:
        return False
    return match.severity is None or finding.severity in match.severity


def channels_for(finding: Finding, alerts: AlertsConfig | None) -> list[str]:
    """The channel names a finding goes to, each once, in the order the routes name them."""
    if alerts is None:
        return []
    if not alerts.routes:
        return list(alerts.channels)
    out: list[str] = []
    for route in alerts.routes:
        if not matches(route.match, finding):
            continue
        out.extend(name for name in route.to if name not in out)
        if not route.continue_:
            break
    return out
