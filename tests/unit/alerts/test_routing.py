"""Routing (alerts/routing.py): routes in order, the first match takes the incident unless it
says `continue`; no routes: every channel; no `alerts:`: none."""

from __future__ import annotations

from mapsync.alerts.routing import channels_for
from mapsync.sheet.alert_models import AlertsConfig
from mapsync.state.data import Finding

CHANNELS = {"ops": {"log": {}}, "owner": {"log": {}}, "chat": {"log": {}}}


def finding(**kw: str) -> Finding:
    base = {"monitor": "failed_run", "sync": "orders", "severity": "critical", "failure_class": "source"}
    return Finding(message="m", **{**base, **kw})  # type: ignore[arg-type]


def test_first_matching_route_takes_it_unless_continue() -> None:
    alerts = AlertsConfig.model_validate(
        {
            "channels": CHANNELS,
            "routes": [
                {"match": {"failure_class": ["source", "destination"]}, "to": ["owner"], "continue": True},
                {"match": {"severity": "critical", "sync": ["orders"]}, "to": ["ops", "owner"]},
                {"to": ["chat"]},
            ],
        }
    )
    assert channels_for(finding(), alerts) == ["owner", "ops"]
    assert channels_for(finding(failure_class="tool"), alerts) == ["ops", "owner"]
    assert channels_for(finding(failure_class="tool", severity="warning"), alerts) == ["chat"]
    assert channels_for(finding(failure_class="tool", sync="customers"), alerts) == ["chat"]


def test_monitor_and_wildcard_sync() -> None:
    alerts = AlertsConfig.model_validate(
        {"channels": CHANNELS, "routes": [{"match": {"monitor": "lag", "sync": "*"}, "to": "ops"}]}
    )
    assert channels_for(finding(monitor="lag", sync="x"), alerts) == ["ops"]
    assert channels_for(finding(monitor="late_start"), alerts) == []


def test_no_routes_every_channel_and_no_alerts_none() -> None:
    assert channels_for(finding(), AlertsConfig.model_validate({"channels": CHANNELS})) == [
        "ops",
        "owner",
        "chat",
    ]
    assert channels_for(finding(), None) == []
