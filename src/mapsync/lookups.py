"""Translations that read other data: `lookup` (batched per batch, cached) and `map_from` (read once).

A `Resolver` belongs to one compiled `Mapping`, which hands it to the `lookup` and `map` rules
as it compiles them (`transforms.WITH_RESOLVER`; no context variable): `map_from` is read there,
once, and each `lookup` gets a `Lookup` whose cache lives with the mapping. The engine reuses a
sync's compiled mapping across runs, so at the start of each run `Resolver.begin()` empties the
lookup caches (a value added to a lookup table is seen by the next run) and `Resolver.changed()`
tells whether a `map_from` input changed since it was read (a file's mtime, size or inode; a
table's entries), and the engine then compiles the mapping afresh.

`Mapping.prepare(batch)` runs the lookup fields in collect mode (each lookup step notes its
input value and stops), then fetches every value not cached yet with one `WHERE key IN (...)`
query per lookup (per 1,000 values), and returns the context `apply` takes (it names the
resolver whose cache it filled). `apply` then only reads the cache: no query ever runs per
record.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mapsync import casts, db_errors, errors, rules
from mapsync.errors import RecordRejected
from mapsync.sheet import map_files, models

CHUNK = 1000  # values per IN (...) list
CACHE_LIMIT = 100_000  # entries kept per lookup for the run (least recently used go first)

_MISSING = object()
_AMBIGUOUS = object()

_KINDS = {int: "int", str: "str"}


class _Collected(Exception):
    """A lookup step in collect mode: the value is noted, the rest of the field is skipped."""


class Lookup:
    """One `lookup` rule: the checked table and the run's cache of key → value."""

    def __init__(self, db: Any, rule: models.LookupRule, field: str) -> None:
        where = f"field `{field}`: lookup"
        table = db.table(rule.table, where)
        for column in (rule.key, rule.value):
            if column not in table.c:
                raise errors.ConfigError(
                    f"{where}: no column {column!r} in table {rule.table!r} of connection {rule.connection}"
                )
        self.db, self.rule, self.field = db, rule, field
        self.key_col, self.value_col = table.c[rule.key], table.c[rule.value]
        try:
            self.kind: str | None = _KINDS.get(self.key_col.type.python_type)
        except NotImplementedError:
            self.kind = None
        self.table = table
        self.cache: dict[Any, Any] = {}
        self.pending: set[Any] = set()
        self.wanted: set[Any] = set()
        self.queries = 0  # statements run against the lookup table (for tests and reports)

    def norm(self, value: Any) -> Any:
        """The value as the key column holds it; one that cannot be such a key is a miss."""
        if self.kind is None:
            return value
        try:
            return casts.convert(value, self.kind)
        except (ValueError, ArithmeticError, TypeError):
            return _MISSING

    def want(self, value: Any) -> None:
        key = self.norm(value)
        if key is _MISSING:
            return
        self.wanted.add(key)
        if key in self.cache:
            self.cache[key] = self.cache.pop(key)  # recently used: evicted last
        else:
            self.pending.add(key)

    def fetch(self) -> None:
        """One query per 1,000 values not cached yet; misses are cached too."""
        todo = list(self.pending)
        self.pending.clear()
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            found: dict[Any, Any] = {}
            stmt = sa.select(self.key_col, self.value_col).where(self.key_col.in_(chunk))
            try:
                with self.db.engine.connect() as conn:
                    self.queries += 1
                    for key, value in conn.execute(stmt):
                        found[key] = _AMBIGUOUS if key in found else value
            except sa.exc.DBAPIError as exc:
                where = f"lookup of `{self.field}` in {self.rule.connection}.{self.rule.table}"
                raise db_errors.classified(where, exc, "source") from None
            for key in chunk:
                self.cache[key] = found.get(key, _MISSING)
        self._evict()
        self.wanted.clear()

    def _evict(self) -> None:
        while len(self.cache) > CACHE_LIMIT:
            oldest = next(iter(self.cache))
            if oldest in self.wanted:  # needed by this batch: keep it, however large the batch
                break
            del self.cache[oldest]

    def get(self, value: Any) -> Any:
        key = self.norm(value)
        return _MISSING if key is _MISSING else self.cache.get(key, _MISSING)


class Resolver:
    """The lookups and external maps of one compiled mapping."""

    def __init__(self, connect: Callable[[str], Any] | None, folder: Path | None) -> None:
        self.connect = connect
        self.folder = folder or Path.cwd()
        self.lookups: list[Lookup] = []
        self.collecting = False
        self._maps: dict[Any, dict[str, Any]] = {}
        # how each map was read: a file's stamp (mtime, size, inode), or a table's source and field
        self._read: dict[Any, tuple[Any, ...] | None] = {}
        self._tables: dict[Any, tuple[models.MapSource, str]] = {}
        self._file_source: dict[Any, models.MapSource] = {}

    def begin(self) -> None:
        """Start of a run: the lookup caches are the run's own (read afresh, as a new mapping's)."""
        for lookup in self.lookups:
            lookup.cache.clear()
            lookup.pending.clear()
            lookup.wanted.clear()

    def changed(self) -> bool:
        """Whether a `map_from` input differs from what the mapping was compiled with: a file
        whose stamp changed (or that is gone), a table whose entries differ (read again: one
        query per table map). A table that can no longer be read raises its ConfigError here."""
        for ident, stamp in self._read.items():
            if self._stamp(self._file_source[ident]) != stamp:
                return True
        return any(
            self._table_map(source, field) != self._maps[ident]
            for ident, (source, field) in self._tables.items()
        )

    def _stamp(self, source: models.MapSource) -> tuple[Any, ...] | None:
        full, why = map_files.locate(source, self.folder)
        if why is not None:
            return None
        try:
            info = os.stat(full)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def database(self, name: str, what: str) -> Any:
        if self.connect is None:
            raise errors.ConfigError(f"{what} needs connection {name}, and no connections are open here")
        try:
            return self.connect(name)
        except KeyError:
            raise errors.ConfigError(f"{what}: unknown connection {name!r}") from None

    def prepare(self, work: Iterable[tuple[Callable[[Any, Any], Any], Any]]) -> None:
        """Run each (lookup field function, row) in collect mode, then fetch what is missing."""
        if not self.lookups:
            return
        scratch = rules.Tally()
        self.collecting = True
        try:
            for fn, row in work:
                try:
                    fn(row, scratch)
                except Exception:  # collected, or an earlier rule's error: apply reports that
                    continue
        finally:
            self.collecting = False
        for lookup in self.lookups:
            lookup.fetch()

    def lookup(self, rule: models.LookupRule, field: str) -> Lookup:
        """The lookup of (connection, table, key, value): fields that share it share one query."""
        for known in self.lookups:
            if (known.rule.connection, known.rule.table, known.rule.key, known.rule.value) == (
                rule.connection,
                rule.table,
                rule.key,
                rule.value,
            ):
                return known
        found = Lookup(self.database(rule.connection, f"field `{field}`: lookup"), rule, field)
        self.lookups.append(found)
        return found

    def load_map(self, source: models.MapSource, field: str) -> dict[str, Any]:
        ident = source.file or (source.connection, source.table, source.from_, source.to)
        if ident not in self._maps:
            if source.file is not None:
                stamp = self._stamp(source)  # before the read: a change while reading shows next run
                path, data = map_files.read(source, self.folder, f"field `{field}`: map_from")
                self._maps[ident] = read_csv_map(path, data)
                self._read[ident], self._file_source[ident] = stamp, source
            else:
                self._maps[ident] = self._table_map(source, field)
                self._tables[ident] = (source, field)
        return self._maps[ident]

    def _table_map(self, source: models.MapSource, field: str) -> dict[str, Any]:
        assert source.connection and source.table and source.from_ and source.to
        where = f"field `{field}`: map_from"
        db = self.database(source.connection, where)
        table = db.table(source.table, where)
        for column in (source.from_, source.to):
            if column not in table.c:
                raise errors.ConfigError(
                    f"{where}: no column {column!r} in table {source.table!r} "
                    f"of connection {source.connection}"
                )
        out: dict[str, Any] = {}
        stmt = sa.select(table.c[source.from_], table.c[source.to])
        with db.engine.connect() as conn:
            for key, value in conn.execute(stmt):
                if key is None:
                    continue
                text = str(key)
                if text in out and out[text] != value:
                    raise errors.ConfigError(
                        f"{where}: {source.connection}.{source.table} maps {rules.show(text)} "
                        f"to both {rules.show(out[text])} and {rules.show(value)}"
                    )
                out[text] = value
        return out


def read_csv_map(path: Path, data: bytes) -> dict[str, str]:
    """A two-column CSV (header, then source,destination) read from `path` (its bytes already
    read, bounded, by map_files.read); ConfigError names file and line."""
    handle = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    out: dict[str, str] = {}
    lines: dict[str, int] = {}
    with handle:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise errors.ConfigError(
                    f"{path}:1: the map file is empty (expected a header: source,destination)"
                )
            if len(header) != 2:
                raise errors.ConfigError(
                    f"{path}:{reader.line_num}: the header has {len(header)} columns, expected 2 "
                    "(source,destination)"
                )
            for row in reader:
                line = reader.line_num
                if not row or row == [""]:
                    continue
                if len(row) != 2:
                    raise errors.ConfigError(
                        f"{path}:{line}: {len(row)} columns, expected 2 (source,destination)"
                    )
                src, dst = row
                if src in out and out[src] != dst:
                    raise errors.ConfigError(
                        f"{path}:{line}: {rules.show(src)} maps to {rules.show(dst)} here but to "
                        f"{rules.show(out[src])} on line {lines[src]}"
                    )
                out[src] = dst
                lines.setdefault(src, line)
        except csv.Error as exc:
            raise errors.ConfigError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
        except UnicodeDecodeError:
            raise errors.ConfigError(f"{path}:{reader.line_num + 1}: not UTF-8 text") from None
    return out


# --------------------------------------------------------------------------- the rules' halves


def load_map(source: models.MapSource, field: str, resolver: Resolver | None) -> dict[str, Any]:
    """The entries of `map_from` (read once, while the mapping compiles); without the mapping's
    resolver only a file relative to the working directory can be read."""
    return (resolver or Resolver(None, None)).load_map(source, field)


def compile_lookup(spec: models.FieldRule, field: str, resolver: Resolver | None) -> rules.Step | None:
    if spec.lookup is None:
        return None
    rule = spec.lookup
    if resolver is None:
        raise errors.ConfigError(f"field `{field}`: `lookup` needs the engine's connections")
    lookup = resolver.lookup(rule, field)
    policy, where = rule.on_missing, f"{rule.connection}.{rule.table}.{rule.key}"

    def step(value: Any, tally: rules.Tally) -> Any:
        if value is None:
            return None
        if resolver.collecting:
            lookup.want(value)
            raise _Collected
        found = lookup.get(value)
        if found is _AMBIGUOUS:
            raise RecordRejected(
                f"value {rules.show(value)} of `{field}` matches several rows of {where}",
                field,
                "lookup",
                value,
            )
        if found is not _MISSING:
            return found
        if policy == "null":
            return None
        if policy == "keep":
            tally.kept[field] += 1
            return value
        raise RecordRejected(
            f"value {rules.show(value)} of `{field}` is not in {where}", field, "lookup", value
        )

    return step
