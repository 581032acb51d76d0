"""`alerts:` (top level): who is told of an incident, and how (`mapsync.alerts`). Channels are
named (`log`, `email`, `webhook`); routes send an incident to channels by sync, monitor, failure
class and severity. SMTP passwords, webhook URLs (a Slack URL carries its token) and signing
secrets are secrets: never shown in logs, `check` or errors (`secrets_of`)."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mapsync.sheet.base import Model, as_list
from mapsync.sheet.duration import Duration

LOOPBACK = ("127.0.0.1", "::1", "localhost")
FAILURE_CLASSES = ("source", "destination", "tool", "config", "state", "lease", "unseeded", "alerts")


class EmailChannel(Model):
    """An e-mail channel: SMTP with STARTTLS (default) or SSL, the server's certificate verified."""

    host: str = Field(description="SMTP server.")
    port: int | None = Field(
        None, ge=1, le=65535, description="SMTP port. Default 587 (`starttls`), 465 (`ssl`), 25 (`none`)."
    )
    tls: Literal["starttls", "ssl", "none"] = Field(
        "starttls",
        description=(
            "`starttls` (default) or `ssl`, the certificate verified; `none` sends in the clear and is "
            "allowed only for a relay on loopback (127.0.0.1, ::1, localhost)."
        ),
    )
    ca_file: str | None = Field(
        None,
        description="A CA bundle (PEM) to verify the server's certificate with, instead of the system's.",
    )
    username: str | None = Field(None, description="SMTP login, if the server asks for one.")
    password: str | None = Field(None, description="SMTP password: write it as `${VAR}`.")
    from_: str = Field(alias="from", description="Sender address.")
    to: list[str] = Field(min_length=1, description="Recipients.")
    subject_prefix: str = Field("[mapsync]", description="Put before every subject.")
    timeout: Duration = Field(dt.timedelta(seconds=10), description="Connect and send timeout.")

    _norm = field_validator("to", mode="before")(as_list)

    @model_validator(mode="after")
    def _plain_only_on_loopback(self) -> EmailChannel:
        if self.tls == "none" and self.host not in LOOPBACK:
            raise ValueError(
                f"`tls: none` sends mail in the clear: allowed only for a relay on loopback "
                f"({', '.join(LOOPBACK)}), not {self.host}; use `starttls` or `ssl`"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("give `username` and `password` together")
        return self

    def smtp_port(self) -> int:
        return self.port or {"starttls": 587, "ssl": 465, "none": 25}[self.tls]


class WebhookChannel(Model):
    """A webhook channel: a JSON POST (Slack-compatible `text` body by default)."""

    url: str = Field(description="Where to POST; a secret (write it as `${VAR}`): never shown.")
    format: Literal["slack", "json"] = Field(
        "slack",
        description='`slack`: `{"text": …}` plus the fields; `json`: the alert\'s fields only.',
    )
    secret: str | None = Field(
        None,
        description=(
            "Sign each body with HMAC-SHA256 under this secret: header `X-Mapsync-Signature: "
            "t=<unix time>,v1=<hex of HMAC(secret, t + '.' + body)>`."
        ),
    )
    ca_file: str | None = Field(
        None, description="A CA bundle (PEM) to verify the server's certificate with."
    )
    timeout: Duration = Field(dt.timedelta(seconds=10), description="Connect and answer timeout.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if value.startswith("https://"):
            return value
        if value.startswith("http://"):
            host = urllib.parse.urlsplit(value).hostname or ""
            if host in LOOPBACK:
                return value
            # the URL itself is a secret (a Slack URL carries its token): never echoed here
            raise ValueError(
                "a webhook `url` with http:// sends its token and the alerts in the clear: allowed only "
                f"on loopback ({', '.join(LOOPBACK)}); use https://"
            )
        raise ValueError("the webhook `url` must start with https:// (or http:// on loopback)")


class LogChannel(Model):
    """The log channel: one structured log line per alert."""

    level: Literal["error", "warning", "info"] = Field("warning", description="The log level of the line.")


class Channel(Model):
    """One named channel: exactly one of `email`, `webhook` or `log`."""

    email: EmailChannel | None = Field(None, description="Send by e-mail.")
    webhook: WebhookChannel | None = Field(None, description="POST to a webhook (Slack, Teams, a pager).")
    log: LogChannel | None = Field(None, description="Write a log line.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Channel:
        given = [k for k in ("email", "webhook", "log") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `email`, `webhook` or `log`")
        return self

    @property
    def kind(self) -> str:
        return "email" if self.email is not None else "webhook" if self.webhook is not None else "log"


class Match(Model):
    """Which incidents a route takes; every given condition must hold (an empty match takes all)."""

    sync: list[str] | None = Field(None, description="Syncs (names); `*` or left out: any.")
    monitor: list[str] | None = Field(None, description="Monitors (names).")
    failure_class: list[str] | None = Field(
        None,
        description=(
            "Failure classes: `source`, `destination` (the system owner's problem), `tool`, `config`, "
            "`state`, `lease`, `unseeded`, `alerts`."
        ),
    )
    severity: list[Literal["critical", "warning", "info"]] | None = Field(
        None, description="Severities: `critical`, `warning`, `info`."
    )

    _norm = field_validator("sync", "monitor", "failure_class", "severity", mode="before")(as_list)

    @field_validator("failure_class")
    @classmethod
    def _known_class(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in FAILURE_CLASSES:
                raise ValueError(f"unknown failure class {name!r} (one of {', '.join(FAILURE_CLASSES)})")
        return value


class Route(Model):
    """Incidents that `match` go `to` these channels. Routes are tried in order; the first that
    matches takes the incident, unless it says `continue: true` (then later routes may take it too)."""

    match: Match = Field(default_factory=Match, description="Which incidents; left out: all.")
    to: list[str] = Field(min_length=1, description="Channel names.")
    continue_: bool = Field(False, alias="continue", description="Try the later routes too.")

    _norm = field_validator("to", mode="before")(as_list)


class AlertsConfig(Model):
    """Who is told of incidents: named `channels`, `routes` to them, reminders and the resolved
    message (docs/operations.md, "Alerts"). Without `alerts:`, incidents are only logged."""

    channels: dict[str, Channel] = Field(min_length=1, description="Named channels.")
    routes: list[Route] = Field(
        default_factory=list, description="Where incidents go, in order. Left out: every channel."
    )
    remind_every: Duration | None = Field(
        dt.timedelta(hours=4),
        description="Remind this often while an incident lasts, unacknowledged; `null`: never.",
    )
    include_values: bool = Field(
        False,
        description=(
            "Put record values (customer data: an unmapped value, a key) in alerts. Default: names and "
            "counts only."
        ),
    )
    give_up_after: Duration = Field(
        dt.timedelta(hours=24),
        description="A send that keeps failing is retried with backoff for this long, then dropped.",
    )

    @model_validator(mode="after")
    def _known_channels(self) -> AlertsConfig:
        for i, route in enumerate(self.routes):
            unknown = [n for n in route.to if n not in self.channels]
            if unknown:
                raise ValueError(
                    f"routes[{i}].to names no channel {', '.join(unknown)} "
                    f"(channels: {', '.join(self.channels)})"
                )
        return self


def secrets_of(alerts: AlertsConfig | None) -> list[str]:
    """SMTP passwords, webhook URLs and signing secrets: redacted wherever text is shown, even when
    written literally instead of in `${VAR}`."""
    out: list[str] = []
    for channel in alerts.channels.values() if alerts is not None else ():
        if channel.email is not None and channel.email.password:
            out.append(channel.email.password)
        if channel.webhook is not None:
            out.append(channel.webhook.url)
            if channel.webhook.secret:
                out.append(channel.webhook.secret)
    return out
