"""The `delivery:` section of a sync: batch sizes, synchronous or asynchronous submits, and
the job API of a REST destination."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from mapsync.sheet.base import Model
from mapsync.sheet.duration import Duration


class AsyncJobs(Model):
    """The job API of a generic REST destination, for `delivery.mode: async`: a write of many
    records answers a job id, and a status endpoint tells when the job is done and how each
    record fared."""

    job_id: str = Field(
        "job_id", description="Body field (dotted path) of the submit answer with the job id."
    )
    status_path: str = Field(
        "jobs/{job}", description="Path polled for the job's state; `{job}` is the job id."
    )
    status_field: str = Field("status", description="Body field (dotted path) of the job's state.")
    done: list[str] = Field(
        default_factory=lambda: ["done", "completed", "succeeded"],
        description="States meaning the job finished (its per-record results are final).",
    )
    failed: list[str] = Field(
        default_factory=lambda: ["failed", "error"],
        description="States meaning the whole job failed (every record of it is a record error).",
    )
    results: str | None = Field(
        "results",
        description=(
            "Body field (dotted path) of the finished job with one result per record, in request "
            "order (`ok: false` or an `error` is a record error); not set: done means all applied."
        ),
    )
    batch_header: str | None = Field(
        "Idempotency-Key",
        description="Header carrying the client batch id on the submit (a server may dedupe by it).",
    )


class BreakerConfig(Model):
    """The circuit breaker of a sync's destination (see docs/design.md, "The breaker")."""

    refused: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of a batch's sent records the destination refused that makes it a refused batch.",
    )
    batches: int = Field(
        3, ge=1, le=1000, description="Refused batches in a row that trip the breaker: the run fails."
    )


class DeliveryConfig(Model):
    """How records travel to the destination."""

    mode: Literal["sync", "async"] = Field(
        "sync",
        description=(
            "`sync`: write each batch and wait for its result; `async`: submit batches of "
            "`async_batch` records to the destination's queue, then poll or read back (REST with "
            "`jobs`, CIMcloud only)."
        ),
    )
    seed_mode: Literal["sync", "async"] | None = Field(
        None,
        description=(
            "Mode of seeds only (e.g. `async` to seed a large table while incremental runs stay "
            "`sync`); default: `mode`."
        ),
    )
    batch: int = Field(500, gt=0, le=100_000, description="Records per read page and per destination write.")
    async_batch: int = Field(
        500,
        gt=0,
        le=10_000,
        description="Records per asynchronous submit (at most `batch`: one read page is one write).",
    )
    poll_every: Duration = Field(
        dt.timedelta(seconds=1),
        description="First wait before polling a job or reading a batch back; doubled up to 30s.",
    )
    async_timeout: Duration = Field(
        dt.timedelta(minutes=10),
        description=(
            "Longest wait for a submitted batch; past it the run fails, the batch stays "
            "unfinished and the next run resumes it (never resubmits it blindly)."
        ),
    )
    jobs: AsyncJobs | None = Field(None, description="The job API of a REST destination (async mode).")
    version_guard: bool = Field(
        True,
        description=(
            "When a timestamp, date or number destination column holds the source's version (the "
            "watermark column mapped with `from:`), a SQL write never replaces a newer version with "
            "an older one (a late write of a run that lost its lease changes nothing). `false` "
            "turns the guard off."
        ),
    )
    columnar: bool = Field(
        True,
        description=(
            "A seed (and a watermark run) from a SQL table into PostgreSQL, MariaDB or SQLite "
            "maps and hashes its batches as Arrow columns where every field rule has a column "
            "form, and writes them by binary COPY (PostgreSQL) or as one multi-row upsert "
            "(docs/performance.md); rows a column rule cannot place, and every other case, take "
            "the per-record path. `false` keeps every batch on the per-record path."
        ),
    )
    breaker: BreakerConfig | None = Field(
        default_factory=BreakerConfig,
        description=(
            "Circuit breaker: after a batch whose sent records the destination refused (at least "
            "`refused` of them), refused calls are no longer split to find the records at fault; "
            "`batches` refused batches in a row fail the run (failure class `destination`). "
            "`false` turns it off."
        ),
    )

    @field_validator("breaker", mode="before")
    @classmethod
    def _breaker_switch(cls, value: object) -> object:
        """`breaker: false` is off, `breaker: true` the defaults."""
        if value is False:
            return None
        if value is True:
            return {}
        return value
