"""Delete policies: what a source delete becomes at the destination (docs/translations.md).

A policy registers in `DELETE_POLICIES` under the sheet's `deletes.policy` name and turns one
delete into a write (`"delete"`, `"update"`) with its values, or None for nothing. It sees the
deleted row's old image when the capture had one (`Change.data`); `by_reason` judges expiry
from it, and a delete without an image of the columns it needs is disabled (never a guessed
hard delete).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from mapsync.sheet import models

Outcome = tuple[str, dict[str, Any]] | None
DeletePolicy = Callable[[models.DeletesConfig, dict[str, Any], dict[str, Any]], Outcome]
DELETE_POLICIES: dict[str, DeletePolicy] = {}


def delete_policy(name: str) -> Callable[[DeletePolicy], DeletePolicy]:
    """Register a policy: `fn(cfg, dest_key_values, old_image)` → (write op, values) or None."""

    def register(fn: DeletePolicy) -> DeletePolicy:
        DELETE_POLICIES[name] = fn
        return fn

    return register


def outcome(cfg: models.DeletesConfig, action: str, key_values: dict[str, Any]) -> Outcome:
    """The write an action (`ignore`, `disable`, `hard`) means for one destination key."""
    if action == "ignore":
        return None
    if action == "hard":
        return "delete", key_values
    assert cfg.field is not None  # DeletesConfig checks `field` for every policy that disables
    return "update", {**key_values, cfg.field: cfg.value}


@delete_policy("ignore")
def _ignore(cfg: models.DeletesConfig, key_values: dict[str, Any], old: dict[str, Any]) -> Outcome:
    return None


@delete_policy("disable")
def _disable(cfg: models.DeletesConfig, key_values: dict[str, Any], old: dict[str, Any]) -> Outcome:
    return outcome(cfg, "disable", key_values)


@delete_policy("hard")
def _hard(cfg: models.DeletesConfig, key_values: dict[str, Any], old: dict[str, Any]) -> Outcome:
    return outcome(cfg, "hard", key_values)


@delete_policy("by_reason")
def _by_reason(cfg: models.DeletesConfig, key_values: dict[str, Any], old: dict[str, Any]) -> Outcome:
    assert cfg.expired is not None and cfg.otherwise is not None
    verdict = expired(cfg.expired, old)
    if verdict is None:  # no old image to judge by: the safe choice keeps the row, disabled
        return outcome(cfg, "disable", key_values)
    return outcome(cfg, cfg.expired.then if verdict else cfg.otherwise, key_values)


def needed_columns(rule: models.ExpiredRule) -> list[str]:
    return [c for c in (rule.date, rule.status) if c is not None]


def expired(rule: models.ExpiredRule, row: dict[str, Any], now: dt.datetime | None = None) -> bool | None:
    """Whether `row` shows the record expired; None when the row lacks a column to judge by."""
    if any(c not in row for c in needed_columns(rule)):
        return None
    if rule.status is not None and rule.in_ is not None:
        value = row[rule.status]
        if value is not None and str(value) in {str(v) for v in rule.in_}:
            return True
    if rule.date is not None:
        return _passed(row[rule.date], now or dt.datetime.now(dt.UTC))
    return False


def _passed(value: Any, now: dt.datetime) -> bool:
    """An expiry date or time before `now`; NULL or a value that is no date never expires."""
    if value is None:
        return False
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return False
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return bool(value < now)
    if isinstance(value, dt.date):
        return value < now.astimezone(dt.UTC).date()
    return False


def disable_expired_update(cfg: models.DeletesConfig, row: dict[str, Any]) -> bool:
    """Whether an upsert of `row` is written disabled: `by_reason` with `expired.then: disable`
    and the row expired."""
    if cfg.policy != "by_reason" or cfg.expired is None or cfg.expired.then != "disable":
        return False
    return expired(cfg.expired, row) is True
