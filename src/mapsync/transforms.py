"""Named field rules. Each compiles once, from the sheet, to a plain function of one value.

A rule registers under the sheet key it reads (`RULES`, applied in that order). Its function
raises `RecordRejected` for a value it cannot translate: nothing is guessed silently.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from mapsync.errors import RecordRejected
from mapsync.sheet import models

Step = Callable[[Any, "Tally"], Any]
Compiler = Callable[[models.FieldRule, str], Step | None]


@dataclasses.dataclass
class Tally:
    """What rules did on purpose in one batch: counted and reported, never silent."""

    truncated: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    defaulted: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    kept: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


# the order rules apply in (models.FieldRule's docstring); `RULES` is kept in this order
ORDER = (
    "on_null", "trim", "case", "split", "map", "map_from", "country", "lookup", "cast",
    "timezone", "python", "required", "pattern", "min", "max", "enum", "truncate",
)  # fmt: skip
# steps of these rules are called as `step(value, tally, row)`: they read the whole source row
ROW_RULES = frozenset({"python"})
RULES: dict[str, Compiler] = {}


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()  # what `on_null: omit` turns NULL into: the field is left out of the write


def rule(name: str) -> Callable[[Compiler], Compiler]:
    if name not in ORDER:
        raise ValueError(f"rule {name!r} has no place in transforms.ORDER")

    def register(fn: Compiler) -> Compiler:
        RULES[name] = fn
        ordered = sorted(RULES.items(), key=lambda item: ORDER.index(item[0]))
        RULES.clear()
        RULES.update(ordered)
        return fn

    return register


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…'"


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


@rule("map")
def _map(spec: models.FieldRule, field: str) -> Step | None:
    if spec.map is None and spec.map_from is None:
        return None
    table = {str(k): v for k, v in (spec.map or {}).items()}
    if spec.map_from is not None:  # read once, here; entries of `map` win
        from mapsync import lookups

        table = {**lookups.load_map(spec.map_from, field), **table}
    policy, fallback = spec.on_unknown, spec.map_default
    listed = ", ".join(list(table)[:8]) + (", …" if len(table) > 8 else "")

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
            tally.kept[field] += 1
            return value
        raise RecordRejected(
            f"value {show(value)} of `{field}` is not in the map {{{listed}}}", field, "map", value
        )

    return step


@rule("country")
def _country(spec: models.FieldRule, field: str) -> Step | None:
    if spec.country is None:
        return None
    form = spec.country

    def step(value: Any, tally: Tally) -> Any:
        if value is None or str(value).strip() == "":
            return None
        found = country_lookup(str(value))
        if found is None:
            raise RecordRejected(
                f"country {show(value)} of `{field}` is not a country it can place", field, "country", value
            )
        return {"iso2": found.alpha_2, "iso3": found.alpha_3, "name": found.name}[form]

    return step


@rule("lookup")
def _lookup(spec: models.FieldRule, field: str) -> Step | None:
    if spec.lookup is None:
        return None
    from mapsync import lookups  # batched and cached per run: see lookups.py

    return lookups.compile_lookup(spec, field)


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
        return None  # `auto` is resolved against the destination column in sheet/compile.py
    limit = spec.truncate

    def step(value: Any, tally: Tally) -> Any:
        if isinstance(value, str) and len(value) > limit:
            tally.truncated[field] += 1
            return value[:limit]
        return value

    return step


# --------------------------------------------------------------------------- conversions

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def convert(value: Any, kind: str, scale: int | None = None) -> Any:
    """Exact conversion; raises ValueError for a value that does not convert."""
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind == "decimal":
        if isinstance(value, float):
            value = repr(value)  # the shortest text of the float, not its binary expansion
        result = decimal.Decimal(str(value).strip())
        if not result.is_finite():
            raise ValueError("not finite")
        if scale is not None:
            result = result.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP)
        return result
    if kind == "int":
        if isinstance(value, bool):
            return int(value)
        number = decimal.Decimal(str(value).strip())
        if number != number.to_integral_value():
            raise ValueError("has a fraction")
        return int(number)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("not a boolean")
    if kind == "datetime":
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day)  # noqa: DTZ001
        return dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    if kind == "date":
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        return dt.date.fromisoformat(str(value).strip()[:10])
    raise ValueError(kind)


# --------------------------------------------------------------------------- countries

COUNTRY_ALIASES = {
    "us": "USA",
    "u s": "USA",
    "usa": "USA",
    "u s a": "USA",
    "united states": "USA",
    "united states of america": "USA",
    "america": "USA",
    "the united states": "USA",
    "uk": "GBR",
    "u k": "GBR",
    "great britain": "GBR",
    "britain": "GBR",
    "england": "GBR",
    "scotland": "GBR",
    "wales": "GBR",
    "northern ireland": "GBR",
    "united kingdom": "GBR",
    "deutschland": "DEU",
    "germany": "DEU",
    "brd": "DEU",
    "holland": "NLD",
    "the netherlands": "NLD",
    "nederland": "NLD",
    "espana": "ESP",
    "osterreich": "AUT",
    "schweiz": "CHE",
    "suisse": "CHE",
    "russia": "RUS",
    "south korea": "KOR",
    "korea": "KOR",
    "north korea": "PRK",
    "czech republic": "CZE",
    "czechia": "CZE",
    "vietnam": "VNM",
    "iran": "IRN",
    "taiwan": "TWN",
    "bolivia": "BOL",
    "venezuela": "VEN",
    "tanzania": "TZA",
    "syria": "SYR",
    "laos": "LAO",
    "moldova": "MDA",
    "uae": "ARE",
    "u a e": "ARE",
    "ivory coast": "CIV",
    "turkey": "TUR",
    "prc": "CHN",
    "mexico": "MEX",
    "mejico": "MEX",
    "canada": "CAN",
    "italia": "ITA",
    "brasil": "BRA",
}


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return text.strip()


def country_lookup(text: str) -> Any:
    return _country_by_norm(_normalize(text))


@functools.lru_cache(maxsize=8192)
def _country_by_norm(norm: str) -> Any:
    import pycountry

    if not norm:
        return None
    code = COUNTRY_ALIASES.get(norm)
    if code:
        return pycountry.countries.get(alpha_3=code)
    compact = norm.replace(" ", "")
    # a code only when written as one token: "N/A" is not Namibia ("U.S." etc. are aliases)
    if len(compact) in (2, 3) and compact.isalpha() and compact == norm:
        found = pycountry.countries.get(**{f"alpha_{len(compact)}": compact.upper()})  # type: ignore[arg-type]
        if found:
            return found
    for country in pycountry.countries:
        names = [country.name, getattr(country, "official_name", ""), getattr(country, "common_name", "")]
        if norm in {_normalize(n) for n in names if n}:
            return country
    return None


# --------------------------------------------------------------------------- delete policies

DeletePolicy = Callable[[models.DeletesConfig, dict[str, Any]], tuple[str, dict[str, Any]] | None]
DELETE_POLICIES: dict[str, DeletePolicy] = {}


def delete_policy(name: str) -> Callable[[DeletePolicy], DeletePolicy]:
    """Register what a source delete becomes: (write op, values) or None for nothing."""

    def register(fn: DeletePolicy) -> DeletePolicy:
        DELETE_POLICIES[name] = fn
        return fn

    return register


@delete_policy("ignore")
def _ignore(cfg: models.DeletesConfig, key_values: dict[str, Any]) -> None:
    return None


@delete_policy("disable")
def _disable(cfg: models.DeletesConfig, key_values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert cfg.field is not None
    return "update", {**key_values, cfg.field: cfg.value}


@delete_policy("hard")
def _hard(cfg: models.DeletesConfig, key_values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "delete", key_values


# rules kept in their own modules register themselves in `RULES` when imported
from mapsync import conversion, validation  # noqa: E402, F401
