"""Named field rules. Each compiles once, from the sheet, to a plain function of one value.

A rule registers under the sheet key it reads (`RULES`, applied in that order). Its function
raises `RecordRejected` for a value it cannot translate: nothing is guessed silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from mapsync import conversion, lookups, validation  # noqa: F401  (they register their rules)
from mapsync.casts import convert as convert
from mapsync.countries import COUNTRY_ALIASES as COUNTRY_ALIASES  # countries live there
from mapsync.countries import country_lookup as country_lookup
from mapsync.countries import country_near_misses as country_near_misses
from mapsync.countries import country_spellings as country_spellings
from mapsync.countries import normalize as normalize
from mapsync.deletes import DELETE_POLICIES, DeletePolicy, delete_policy  # noqa: F401
from mapsync.errors import RecordRejected

# the rule base's names, re-exported: this module is the facade of the rules
from mapsync.rules import OMIT as OMIT
from mapsync.rules import ORDER as ORDER
from mapsync.rules import ROW_RULES as ROW_RULES
from mapsync.rules import RULES as RULES
from mapsync.rules import Compiler as Compiler
from mapsync.rules import Step as Step
from mapsync.rules import Tally as Tally
from mapsync.rules import rule as rule
from mapsync.rules import show as show
from mapsync.sheet import models


@rule("on_null")
def _on_null(spec: models.FieldRule, field: str) -> Step | None:
    """The field's `on_null` (RowMapping fills in the sync's); a field with a `default` and no
    `on_null` of its own uses the default, for NULL and for empty text, as it always did."""
    policy = spec.on_null or ("default" if spec.default is not None else "send")
    if policy == "send" or (policy == "default" and spec.default is None):
        return None
    fallback = spec.default

    def default(value: Any, tally: Tally) -> Any:
        if value is None or value == "":
            tally.defaulted[field] += 1
            return fallback
        return value

    def omit(value: Any, tally: Tally) -> Any:
        return OMIT if value is None else value

    def reject(value: Any, tally: Tally) -> Any:
        if value is None:
            raise RecordRejected(f"field `{field}` is NULL (on_null: reject)", field, "on_null")
        return value

    return {"default": default, "omit": omit, "reject": reject}[policy]


def map_rule(spec: models.FieldRule, field: str, resolver: lookups.Resolver | None) -> Step | None:
    if spec.map is None and spec.map_from is None:
        return None
    table = {str(k): v for k, v in (spec.map or {}).items()}
    if spec.map_from is not None:  # read once, here; entries of `map` win
        table = {**lookups.load_map(spec.map_from, field, resolver), **table}
    policy, fallback = spec.on_unknown, spec.map_default
    listed = ", ".join(list(table)[:8]) + (", …" if len(table) > 8 else "")
    placed_later = spec.country is not None or spec.lookup is not None  # `keep` hands the value on

    def step(value: Any, tally: Tally) -> Any:
        if value is None:
            return None
        text = str(value)
        if text in table:
            return table[text]
        if policy == "default":
            tally.defaulted[field] += 1
            return fallback
        if policy == "keep":
            if placed_later:
                tally.pending_kept.add(field)
            else:  # really unmapped: it goes out as it came
                tally.kept[field] += 1
            return value
        raise RecordRejected(
            f"value {show(value)} of `{field}` is not in the map {{{listed}}}", field, "map", value
        )

    return step


@rule("map")
def _map(spec: models.FieldRule, field: str) -> Step | None:
    return map_rule(spec, field, None)


def settle_kept(
    compiled: list[tuple[str, Step]], spec: models.FieldRule, field: str
) -> list[tuple[str, Step]]:
    """`map: {…}, on_unknown: keep` in front of `country` or `lookup` (the documented recipe for
    a few odd spellings): most values are not in the map and are placed by the later rule, so a
    kept value counts in `kept` only when that rule then rejects it."""
    if spec.on_unknown != "keep" or spec.map is None:
        return compiled
    at = next((i for i, (r, _) in enumerate(compiled) if r in ("country", "lookup")), None)
    if at is None:
        return compiled
    rule_name, inner = compiled[at]

    def placed(value: Any, tally: Tally) -> Any:
        kept = field in tally.pending_kept
        tally.pending_kept.discard(field)
        try:
            return inner(value, tally)
        except RecordRejected:
            if kept:
                tally.kept[field] += 1
            raise

    return [*compiled[:at], (rule_name, placed), *compiled[at + 1 :]]


@rule("country")
def _country(spec: models.FieldRule, field: str) -> Step | None:
    if spec.country is None:
        return None
    opts = spec.country if isinstance(spec.country, models.CountryRule) else None
    form: str = opts.to if opts else str(spec.country)
    autocorrect, cutoff = (opts.autocorrect, opts.cutoff) if opts else (False, 1.0)

    def step(value: Any, tally: Tally) -> Any:
        if value is None or str(value).strip() == "":
            return None
        found = country_lookup(str(value))
        if found is None and autocorrect:
            near = country_near_misses(str(value), cutoff)
            if len(near) == 1:  # one country close enough: corrected, counted
                tally.corrected[field] += 1
                found = near[0]
            elif near:
                names = ", ".join(c.name for c in near[:4])
                raise RecordRejected(
                    f"country {show(value)} of `{field}` is ambiguous: close to {names}",
                    field,
                    "country",
                    value,
                )
        if found is None:
            raise RecordRejected(
                f"country {show(value)} of `{field}` is not a country it can place", field, "country", value
            )
        return {"iso2": found.alpha_2, "iso3": found.alpha_3, "name": found.name}[form]

    return step


@rule("lookup")
def _lookup(spec: models.FieldRule, field: str) -> Step | None:
    # batched and cached: see lookups.py; without a mapping's resolver there is no connection
    return lookups.compile_lookup(spec, field, None)


# rules that read other data: a compiled Mapping calls these with its resolver instead
WITH_RESOLVER: dict[str, Callable[[models.FieldRule, str, lookups.Resolver | None], Step | None]] = {
    "map": map_rule,
    "lookup": lookups.compile_lookup,
}


@rule("cast")
def _cast(spec: models.FieldRule, field: str) -> Step | None:
    if spec.cast is None:
        return None
    kind, scale, fmt = spec.cast, spec.scale, spec.format
    wanted = f"{kind} (format {fmt})" if fmt else kind

    def step(value: Any, tally: Tally) -> Any:
        if value is None:
            return None
        try:
            if fmt is not None and isinstance(value, str):  # cast: date|datetime with `format`
                parsed = dt.datetime.strptime(value.strip(), fmt)  # noqa: DTZ007
                return parsed.date() if kind == "date" else parsed
            return convert(value, kind, scale)
        except (ValueError, ArithmeticError, TypeError):
            raise RecordRejected(
                f"value {show(value)} of `{field}` is not a valid {wanted}", field, "cast"
            ) from None

    return step


@rule("truncate")
def _truncate(spec: models.FieldRule, field: str) -> Step | None:
    if not isinstance(spec.truncate, int):
        return None  # `auto` is resolved against the destination column in mapping.py
    limit = spec.truncate

    def step(value: Any, tally: Tally) -> Any:
        if isinstance(value, str) and len(value) > limit:
            tally.truncated[field] += 1
            return value[:limit]
        return value

    return step
