"""Sheet models of HTTP connections: a generic REST API and CIMcloud.

Like every sheet model, each field has a description (docs/sheet.md is generated from them).
Secrets (tokens, passwords) belong in `${VAR}` references: values from the environment are
redacted wherever text is shown.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from mapsync.redact import basic_credentials
from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration, parse_duration

_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


def parse_limit(text: str) -> tuple[int, dt.timedelta]:
    """`"100/15m"` → (100, 15 minutes): at most that many calls in any such window."""
    match = _LIMIT.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"'{text}' is not a call limit (write e.g. 2/1s or 100/15m)")
    window = parse_duration(match.group(2))
    if window.total_seconds() <= 0:
        raise ValueError(f"'{text}': the window must be longer than zero")
    return int(match.group(1)), window


def _check_limits(value: list[str]) -> list[str]:
    for item in value:
        parse_limit(item)
    return value


class RetryPolicy(Model):
    """How failed calls are retried: 429, 5xx, connection errors and timeouts, with exponential
    backoff and jitter; a `Retry-After` from the server (seconds or HTTP date) wins."""

    attempts: int = Field(6, ge=1, le=50, description="Tries per call, the first included.")
    backoff: Duration = Field(
        dt.timedelta(milliseconds=500), description="Wait before the second try; doubled each time."
    )
    max_backoff: Duration = Field(
        dt.timedelta(seconds=60), description="Longest wait between two tries (also caps `Retry-After`)."
    )


class BearerAuth(Model):
    """A fixed bearer token: `Authorization: Bearer <token>`."""

    type: Literal["bearer"] = Field(description="`bearer`.")
    token: str = Field(description="The token; put it in `${VAR}`.")


class BasicAuth(Model):
    """HTTP Basic authentication."""

    type: Literal["basic"] = Field(description="`basic`.")
    username: str = Field(description="User name.")
    password: str = Field(description="Password; put it in `${VAR}`.")


class ApiKeyAuth(Model):
    """An API key sent in a header of every request."""

    type: Literal["api_key"] = Field(description="`api_key`.")
    header: str = Field("X-API-Key", description="Header name.")
    value: str = Field(description="The key; put it in `${VAR}`.")


class TokenEndpointAuth(Model):
    """A token fetched from an endpoint (POST of a JSON body) and renewed before it expires."""

    type: Literal["token"] = Field(description="`token`.")
    url: str = Field(description="Token endpoint, absolute or relative to `base_url`.")
    body: dict[str, str] = Field(
        default_factory=dict, description="JSON body of the token request (credentials in `${VAR}`)."
    )
    token_field: str = Field("token", description="Response field holding the token.")
    expires_field: str | None = Field(
        "expiration",
        description="Response field with the expiry (ISO time, or seconds from now if a number).",
    )
    lifetime: Duration = Field(
        dt.timedelta(hours=1), description="Assumed token lifetime when the response gives no expiry."
    )
    refresh_before: Duration = Field(
        dt.timedelta(minutes=5), description="Renew the token this long before it expires."
    )


RestAuth = Annotated[BearerAuth | BasicAuth | ApiKeyAuth | TokenEndpointAuth, Field(discriminator="type")]


class RestPaging(Model):
    """How a REST source pages through a collection."""

    style: Literal["page", "offset", "cursor", "link", "none"] = Field(
        "page",
        description=(
            "`page` (page number parameter), `offset` (offset parameter), `cursor` (a next "
            "cursor or next URL in the body), `link` (the `Link: <…>; rel=next` header) or `none`."
        ),
    )
    size: int = Field(100, gt=0, le=10_000, description="Records per page.")
    size_param: str | None = Field("per_page", description="Query parameter of the page size.")
    page_param: str = Field("page", description="For `page`: the page-number parameter.")
    first_page: int = Field(1, ge=0, description="For `page`: the number of the first page.")
    offset_param: str = Field("offset", description="For `offset`: the offset parameter.")
    cursor_param: str = Field("cursor", description="For `cursor`: the parameter that carries the cursor.")
    next_field: str = Field(
        "next", description="For `cursor`: body field with the next cursor or absolute next URL."
    )
    items: str | None = Field(
        None, description="Body field holding the records (dotted path); not set: the body is a list."
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "For `cursor` and `link`: hosts other than `base_url`'s that may serve the next page, "
            "as `host` or `host:port`, e.g. `[cdn.example.com]`. Their pages are fetched without "
            "the connection's credentials and headers; a next URL on any other scheme, host or "
            "port stops the run."
        ),
    )


class RestWrite(Model):
    """How a REST destination writes records."""

    method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="HTTP method of upserts.")
    update_method: Literal["POST", "PUT", "PATCH"] = Field(
        "PATCH", description="HTTP method of updates of existing records (`deletes: disable`)."
    )
    batch: int = Field(10, gt=0, le=1000, description="Records per call (a JSON array); 1 sends an object.")
    results: str | None = Field(
        None,
        description=(
            "Body field (dotted path) with one result per record, in request order; a result "
            "with `ok: false` or an `error` is a record error. Not set: a 2xx accepts the call."
        ),
    )
    delete_path: str = Field(
        "{resource}/{key}", description="Path of a hard delete (`deletes: hard`), `{key}` is the key."
    )


class RestConnection(Model):
    """A generic JSON REST API."""

    kind: Literal["rest"] = Field(description="`rest`.")
    base_url: str = Field(description="Base URL; a sync's `resource` is a path below it.")
    auth: RestAuth | None = Field(None, description="Authentication; `type` picks the kind.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers on every request.")
    timeout: Duration = Field(dt.timedelta(seconds=30), description="Timeout of one request.")
    max_concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once, at most.")
    budget: list[str] = Field(
        default_factory=list,
        description=(
            "Call limits of the credential, all enforced, e.g. `[2/1s, 100/15m]`; shared by every "
            "sync and process using it (through the state store)."
        ),
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of failed calls.")
    paging: RestPaging = Field(default_factory=RestPaging, description="How reads page.")
    modified_param: str | None = Field(
        None,
        description=(
            "Query parameter of the incremental filter: records modified at or after (`>=`) the "
            "value, e.g. `updated_since`. Required for `changes: watermark` from this API."
        ),
    )
    key_param: str | None = Field(
        None,
        description="Query parameter filtering by key (comma-separated values), for `mapsync retry`.",
    )
    write: RestWrite = Field(default_factory=RestWrite, description="How writes are sent.")

    _limits = field_validator("budget")(_check_limits)


class CimcloudTokenAuth(Model):
    """CIMcloud App Authorization: `POST /{site}/authenticate` → a bearer token valid 7 days."""

    type: Literal["token"] = Field(description="`token`.")
    auth_key: str = Field(description="AuthKey of the App Authorization; put it in `${VAR}`.")
    username: str = Field(description="AuthUserName.")
    password: str = Field(description="AuthPassword; put it in `${VAR}`.")
    refresh_before: Duration = Field(
        dt.timedelta(hours=1), description="Renew the token this long before its `expiration`."
    )


class CimcloudBasicAuth(Model):
    """CIMcloud App Authorization of type Basic (enabled by CIMcloud on request)."""

    type: Literal["basic"] = Field(description="`basic`.")
    username: str = Field(description="Authorization user name.")
    password: str = Field(description="Authorization password; put it in `${VAR}`.")


class CimcloudConnection(Model):
    """A CIMcloud site through its REST API (see docs/rest.md: what is documented vs inferred)."""

    kind: Literal["cimcloud"] = Field(description="`cimcloud`.")
    base_url: str = Field("https://api.cimcloud.com", description="API root; the site name follows it.")
    site: str = Field(min_length=1, description="Site name: requests go to `{base_url}/{site}/…`.")
    auth: Annotated[CimcloudTokenAuth | CimcloudBasicAuth, Field(discriminator="type")] = Field(
        description="Token (AuthKey, user, password) or Basic credentials."
    )
    async_contract: Literal["none", "jobs"] = Field(
        "none",
        description=(
            "What a queued (> 10 records) write returns, which CIMcloud does not document: `none` "
            "(confirm by reading back) or `jobs` (poll a job id; an inference, opt in)."
        ),
    )
    batch: int = Field(
        10, ge=1, le=10, description="Records per synchronous POST/PUT; CIMcloud queues more than 10."
    )
    read_paths: dict[str, str] = Field(
        default_factory=lambda: {"account": "accounts", "product": "products", "customer": "customers"},
        description=(
            "Write resource → the resource that reads it back (the docs POST `account/` but GET "
            "`accounts/`); a resource not listed reads from itself."
        ),
    )
    keys: dict[str, str] = Field(
        default_factory=dict,
        description="Resource → its user-key field, where it differs from the sync's `key.to`.",
    )
    modified_field: str = Field("last_modify_date", description="Field of incremental reads.")
    date_format: str = Field(
        "%Y-%m-%dT%H:%M:%S",
        description="strftime format of dates in searchstrings (the docs show `1/1/2021`).",
    )
    timeout: Duration = Field(dt.timedelta(seconds=60), description="Timeout of one request.")
    max_concurrency: int = Field(1, ge=1, le=16, description="Requests in flight at once, at most.")
    budget: list[str] = Field(
        default_factory=lambda: ["2/1s", "100/15m"],
        description=(
            "Call limits of the credential (CIMcloud's default: two per second and 100 per 15 "
            "minutes); `[]` turns the client-side budget off."
        ),
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of failed calls.")

    _limits = field_validator("budget")(_check_limits)

    @model_validator(mode="after")
    def _site_is_a_name(self) -> CimcloudConnection:
        if "/" in self.site or self.site.strip() != self.site:
            raise ValueError("`site` is the site name alone (no slashes or spaces)")
        return self


def secrets_of(connections: Iterable[object]) -> list[str]:
    """Tokens, passwords and keys of HTTP connections: redacted wherever text is shown, even
    when the sheet holds them literally instead of in `${VAR}`."""
    out: list[str] = []
    for conn in connections:
        auth = getattr(conn, "auth", None)
        for name in ("token", "password", "value", "auth_key"):
            value = getattr(auth, name, None)
            if isinstance(value, str) and value:
                out.append(value)
        user, password = getattr(auth, "username", None), getattr(auth, "password", None)
        if isinstance(user, str) and isinstance(password, str) and password:
            out.append(basic_credentials(user, password))  # the header's base64, echoed by some APIs
        body = getattr(auth, "body", None)
        if isinstance(body, dict):
            out.extend(v for v in body.values() if isinstance(v, str) and v)
    return out
