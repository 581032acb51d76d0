"""Field rules of the mapping sheet: how one destination field gets its value."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mapsync.sheet.base import Model, Name


class LookupRule(Model):
    """Translate a value through another table (fetched once per batch, cached)."""

    connection: Name = Field(description="Connection holding the lookup table.")
    table: str = Field(description="The lookup table.")
    key: str = Field(description="Column matched against the value.")
    value: str = Field(description="Column whose content replaces the value.")
    on_missing: Literal["reject", "null", "keep"] = Field(
        "reject",
        description="A value the table lacks: `reject` (record error), `null`, or `keep` it (counted).",
    )

    @field_validator("on_missing", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        return "null" if value is None else value  # YAML reads a bare `null` as None


class MapSource(Model):
    """A value map kept outside the sheet: a CSV file or a table."""

    file: str | None = Field(
        None, description="CSV file with a header and two columns: source value, destination value."
    )
    connection: Name | None = Field(None, description="Connection of a mapping table.")
    table: str | None = Field(None, description="Mapping table.")
    from_: str | None = Field(None, alias="from", description="Column holding source values.")
    to: str | None = Field(None, description="Column holding destination values.")
    allow_outside: bool = Field(
        False,
        description=(
            "Let `file` be an absolute path or lie outside the sheet's folder (by default a map "
            "file is read from that folder or below it)."
        ),
    )
    max_bytes: int = Field(
        10_000_000, gt=0, description="Largest `file` read, in bytes; a bigger file is a config error."
    )

    @model_validator(mode="after")
    def _file_or_table(self) -> MapSource:
        if self.file is None and {"allow_outside", "max_bytes"} & self.model_fields_set:
            raise ValueError("`allow_outside` and `max_bytes` are for a map `file`")
        table = (self.connection, self.table, self.from_, self.to)
        if (self.file is None) == all(v is None for v in table):
            raise ValueError("give either `file`, or `connection`, `table`, `from` and `to`")
        if self.file is None and any(v is None for v in table):
            raise ValueError("a mapping table needs `connection`, `table`, `from` and `to`")
        return self


class SplitRule(Model):
    """Take one part of a delimited value."""

    sep: str = Field(min_length=1, description="Separator.")
    index: int = Field(0, description="Which part (0 is the first, -1 the last); a missing part is NULL.")


class TimezoneRule(Model):
    """Give naive times their zone and convert them."""

    source: str = Field(description="IANA zone naive source times are written in, e.g. `Europe/Berlin`.")
    target: str = Field(
        "UTC",
        description="IANA zone to convert to (written naive), or `aware` to keep the zone on the value.",
    )


_COUNTRY_FORMS = ("iso2", "iso3", "name")


class PythonHook(Model):
    """A `python` rule found by its entry point instead of a dotted path."""

    entry_point: str = Field(
        min_length=1,
        description="Name of an entry point in the group `mapsync.hooks` of an installed package.",
    )


class CountryRule(Model):
    """Country translation with options (`country: iso2` is short for `{to: iso2}`)."""

    to: Literal["iso2", "iso3", "name"] = Field(description="ISO 3166 `iso2`, `iso3` or the short `name`.")
    autocorrect: bool = Field(
        False,
        description=(
            'Correct a near miss ("Germnay") when exactly one country is close enough '
            "(`cutoff`); each correction is counted and reported. Off: a near miss is a rejection."
        ),
    )
    cutoff: float = Field(
        0.85, ge=0.6, le=1.0, description="For `autocorrect`: the least similarity (0.6–1) of a near miss."
    )


class FieldRule(Model):
    """How one destination field gets its value. Rules apply in this order: source (`from`,
    `value` or `template`), `on_null`/`default`, `trim`, `case`, `split`, `map`/`map_from`,
    `country`, `lookup`, `cast` (with `format`), `timezone`, `python`, the checks `required`,
    `pattern`, `min`, `max`, `enum`, then `truncate`; then the destination's own limits
    (length, NOT NULL, numeric precision) are checked."""

    from_: str | None = Field(
        None, alias="from", description="Source column to copy (rename when names differ)."
    )
    value: Any = Field(None, description="A constant written to every record (instead of `from`).")
    default: Any = Field(
        None,
        description=(
            "Used when the source value is NULL, missing or empty text (counted). A field with a "
            "`default` and no `on_null` of its own always uses it."
        ),
    )
    map: dict[str, Any] | None = Field(
        None,
        description=(
            "Value map `{source: destination}`; keys compare as text. What an unlisted value "
            "does is `on_unknown`."
        ),
    )
    on_unknown: Literal["reject", "default", "keep"] = Field(
        "reject",
        description=(
            "For `map`: `reject` (the record becomes an error naming the value), `default` "
            "(use `map_default`), or `keep` (pass the value through). `default` and `keep` "
            "are still counted and listed."
        ),
    )
    map_default: Any = Field(None, description="Value used for unmapped values when `on_unknown: default`.")
    country: Literal["iso2", "iso3", "name"] | CountryRule | None = Field(
        None,
        description=(
            "Translate free-text country names to ISO 3166 `iso2`, `iso3` or the short `name`, or "
            "`{to: iso2, autocorrect: true}` to correct near misses. A spelling it cannot place "
            "is a rejection."
        ),
    )
    cast: Literal["str", "int", "decimal", "float", "bool", "date", "datetime"] | None = Field(
        None,
        description=(
            "Convert the value's type; `decimal` is exact (no float rounding); a value that "
            "does not convert is a rejection."
        ),
    )
    scale: int | None = Field(
        None, ge=0, le=30, description="For `cast: decimal`: digits after the point (exact, half-up)."
    )
    truncate: int | Literal["auto"] | None = Field(
        None,
        description=(
            "Cut text to this many characters, or `auto`: to the destination column's length read "
            "from its catalog. Each cut is counted and reported."
        ),
    )
    template: str | None = Field(
        None,
        description=(
            'Build the value from source columns: `"{first_name} {last_name}"` (instead of `from`); '
            "a NULL column is empty text."
        ),
    )
    trim: bool = Field(False, description="Strip white space at both ends (an empty result is NULL).")
    case: Literal["upper", "lower", "title"] | None = Field(None, description="Change the letter case.")
    split: SplitRule | None = Field(None, description="Take one part of a delimited value.")
    map_from: MapSource | None = Field(
        None,
        description="A value map from a CSV file or a table, like `map` (both may be given; `map` wins).",
    )
    lookup: LookupRule | None = Field(None, description="Translate the value through another table.")
    format: str | None = Field(
        None, description="For `cast: date|datetime`: the strptime format of text values, e.g. `%d.%m.%Y`."
    )
    timezone: TimezoneRule | None = Field(
        None,
        description=(
            "Zone of naive times and the zone to convert to. A time skipped by a daylight-saving "
            "change is a record error; a repeated one is taken as the earlier."
        ),
    )
    python: str | PythonHook | None = Field(
        None,
        description=(
            "Your own rule: `package.module:function`, or an installed entry point of the group "
            "`mapsync.hooks` (`{entry_point: name}`, short `ep:name`); loaded once, called as "
            "`function(value, row)` (NULL too); it returns the new value or raises ValueError (a "
            "record error, as is any other exception)."
        ),
    )
    on_null: Literal["send", "omit", "default", "reject"] | None = Field(
        None,
        description=(
            "What a NULL source value does: `send` NULL, `omit` the field from the write (the "
            "destination keeps its value), use `default`, or `reject` the record. Default: the "
            "sync's `on_null`."
        ),
    )
    required: bool = Field(False, description="A NULL or empty value is a record error.")
    pattern: str | None = Field(None, description="A regular expression the text must match in full.")
    min: Any = Field(None, description="Smallest allowed value (numbers, dates).")
    max: Any = Field(None, description="Largest allowed value (numbers, dates).")
    enum: list[Any] | None = Field(None, description="The allowed values.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"from": data} if isinstance(data, str) else data

    @field_validator("country", "python", mode="wrap")
    @classmethod
    def _short_or_long(cls, value: Any, handler: Any, info: ValidationInfo) -> Any:
        """`country: iso2` or `country: {to: iso2, …}` (likewise `python`): one message, not one
        per form, when the value is wrong."""
        if isinstance(value, dict):
            return (CountryRule if info.field_name == "country" else PythonHook).model_validate(value)
        if info.field_name == "country" and value is not None and value not in _COUNTRY_FORMS:
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": "'iso2', 'iso3' or 'name'"}
            )
        if info.field_name == "python" and value is not None and not isinstance(value, str):
            raise PydanticCustomError(
                "python_type", "give `package.module:function`, `ep:name` or `{entry_point: name}`"
            )
        return handler(value)

    @field_validator("truncate")
    @classmethod
    def _positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"should be greater than 0 (got {value}), or `auto`")
        return value

    @model_validator(mode="after")
    def _source(self) -> FieldRule:
        sources = [k for k in ("from_", "value", "template") if k in self.model_fields_set]
        if len(sources) > 1:
            raise ValueError("give one of `from`, `value` or `template`")
        if not sources and self.default is None:
            raise ValueError("give `from` (a source column), `value`, `template` or `default`")
        if self.on_null == "default" and self.default is None:
            raise ValueError("`on_null: default` needs `default`")
        if self.format is not None and self.cast not in ("date", "datetime"):
            raise ValueError("`format` goes with `cast: date` or `cast: datetime`")
        if (
            self.on_unknown == "default"
            and (self.map is not None or self.map_from is not None)
            and "map_default" not in self.model_fields_set
        ):
            raise ValueError("`on_unknown: default` needs `map_default`")
        if self.scale is not None and self.cast != "decimal":
            raise ValueError("`scale` goes with `cast: decimal`")
        return self
