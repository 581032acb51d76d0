"""The columnar step: one batch held as Arrow columns (a seed's, or a watermark run's) mapped,
hashed, written and recorded column-wise, with no Python object per row (docs/performance.md,
"The columnar seed").

A sync gets a `Plan` when its rows can travel this way: a SQL table source without child
tables, a SQL destination with an Arrow form for every written column
(`SqlDestination.arrow_targets`) and no key probe, and `delivery.columnar` on. The seed reader
then hands over Arrow record batches (`capture.base.seed_batches`, `arrow_batch.py`), a
watermark run its rows made Arrow (`capture.base.read_batch`), and `Engine._step` gives each to
`step` here, which follows the per-record step exactly:

1. The batch's keys: a NULL key, a key twice in the batch or in the previous one: the whole
   batch goes back to the per-record step (which rejects the duplicates, naming them).
2. `vector_map`: every field rule as a pyarrow.compute kernel, and a mask of the rows whose every
   value the kernels placed exactly as the per-record mapping would. The other rows (a value map
   miss, an over-long text, a text that is no time, …) take the per-record mapping, so each
   rejection still names key, field and reason. A batch schema the kernels do not cover goes
   back whole.
3. `row_hashes`: the content hash of each mapped row, the per-record path's own (v1: blake2b of
   the canonical JSON), built column-wise; so a ledger entry from either path compares equal.
4. The key ledger (not read by a fresh seed): rows whose hash it holds are skipped, their
   version moved, as `run_steps.against_ledger` does.
5. `Engine.finish_batch` writes the per-record rows, then (inside the same breaker window) the
   columnar rows: into PostgreSQL by binary COPY (`connectors/arrow_copy.py`), into MariaDB and
   SQLite as rows through the per-record write's own upsert (only the mapping, hashing and
   digest are column-wise there); a write the database refuses, or a value without a binary
   form, is written per record instead, which isolates the row at fault.
   The drift digest of each written row comes from `drift_columns`; the state commit stores the
   ledger rows of the columnar rows in one executemany (`records.DeliveredColumns`). The commit
   order is unchanged: destination confirmed, then the state commit.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from mapsync import delivery, records, run_steps, transforms
from mapsync.columns import ColumnInfo
from mapsync.lease_watch import LeaseWatch
from mapsync.ports import ColumnarDestination, ColumnarSource, Destination, Source
from mapsync.records import RunKind
from mapsync.run_scope import RunScope
from mapsync.run_types import ColumnarWrite, Parts
from mapsync.sheet import models
from mapsync.state.ports import Store
from mapsync.state.store import Counts

if TYPE_CHECKING:  # pyarrow and the modules built on it load with the first columnar plan
    import pyarrow as pa

    from mapsync import vector_map


class Engine(Protocol):
    """What the columnar step uses of the Engine (engine.py), which calls it."""

    store: Store
    watch: LeaseWatch

    def sort_out(
        self, scope: RunScope, parts: Parts, mapped: list[records.Mapped], counts: Counts, *, force: bool
    ) -> tuple[list[records.Mapped], list[records.Delivered], list[records.Rejection]]: ...

    def finish_batch(
        self,
        scope: RunScope,
        parts: Parts,
        batch: records.Batch,
        send: list[records.Mapped],
        seen: list[records.Delivered],
        rejected: list[records.Rejection],
        tally: transforms.Tally,
        counts: Counts,
        columnar: ColumnarWrite | None = None,
    ) -> None: ...


@dataclasses.dataclass
class Plan:
    """A sync's columnar plan: its vector mapping for each batch schema met (None: that schema
    has none, its batches take the per-record step)."""

    cfg: models.SyncConfig
    columns: dict[str, ColumnInfo]  # the destination's catalog
    key: list[str]  # the source key columns
    version_column: str | None
    mappings: dict[pa.Schema, vector_map.VectorMapping | None] = dataclasses.field(default_factory=dict)

    def mapping_for(self, schema: pa.Schema) -> vector_map.VectorMapping | None:
        from mapsync import vector_map

        if schema not in self.mappings:
            types = {field.name: field.type for field in schema}
            self.mappings[schema] = vector_map.compile_vector(self.cfg, self.columns, types)
        return self.mappings[schema]


def plan(
    cfg: models.SyncConfig, source: Source, dest: Destination, version_column: str | None
) -> Plan | None:
    """The sync's plan, or None when its batches cannot travel as columns (see the module)."""
    if not (cfg.delivery.columnar and source.capabilities.columnar_read and dest.capabilities.columnar_write):
        return None
    if cfg.children or source.children or cfg.from_.table is None:
        return None
    probe = dest.key_probe if dest.capabilities.key_probe else None
    if probe is not None and probe.active:
        return None
    reader, writer = cast(ColumnarSource, source), cast(ColumnarDestination, dest)
    # (arrow_targets rules out child tables, exports and fallbacks before it loads pyarrow)
    if writer.arrow_targets(list(dict.fromkeys([*cfg.key.to, *cfg.fields]))) is None:
        return None
    import pyarrow as pa

    from mapsync import arrow_batch, vector_map

    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:  # the system allocator gives freed batches back
        pa.set_memory_pool(pa.system_memory_pool())
    types = arrow_batch.types_of(reader.info, reader.columns)
    if types is None or vector_map.compile_vector(cfg, dest.columns, types) is None:
        return None  # a rule without a column form: Arrow batches would only come back
    return Plan(cfg, dict(dest.columns), list(cfg.key.from_), version_column)


def step(engine: Engine, scope: RunScope, parts: Parts, batch: records.Batch) -> bool:
    """Run one Arrow batch of a seed or a run; False (nothing done) gives it back to the
    per-record step."""
    import pyarrow as pa

    from mapsync import arrow_batch, row_hashes
    from mapsync.connectors import drift_columns

    plan_: Plan = parts.columnar
    rows: pa.RecordBatch = batch.arrow
    # a seed or a `run` (an overlap counts the rows earlier runs missed, retries and exports
    # force keys: per record)
    if scope.kind not in (RunKind.SEED, RunKind.RUN) or batch.force or scope.forced:
        return False
    mapping = plan_.mapping_for(rows.schema)
    if mapping is None:
        return False
    key_columns = [rows.column(k) for k in plan_.key]
    if any(column.null_count for column in key_columns):
        return False
    keys: list[records.Key] = list(zip(*[column.to_pylist() for column in key_columns], strict=True))
    distinct = set(keys)
    if len(distinct) != len(keys) or (batch.read and scope.reads.previous & distinct):
        return False
    out = mapping.apply(rows)
    ok = out.ok
    good = out.table.filter(ok)
    dest = cast(ColumnarDestination, parts.dest)  # (the plan checked `columnar_write`)
    if dest.arrow_targets(good.column_names) is None:
        return False
    try:
        hashes = [h for part in _slices(good) for h in row_hashes.content_hashes(part)]
        dest_ids = row_hashes.key_texts([good.column(k) for k in parts.mapping.main.key_to])
    except TypeError:  # a mapped type the hash has no column form for
        return False
    marks = ok.to_pylist()
    counts = Counts(read=rows.num_rows)
    # the rows the kernels did not place: the per-record mapping, with its rejections
    changes: arrow_batch.ArrowChanges = batch.changes  # type: ignore[assignment]
    rest = records.Batch(changes.pick([i for i, m in enumerate(marks) if not m]), read=batch.read)
    mapped, rejected, tally = run_steps.map_batch(parts.mapping, rest, None, scope.report, counts)
    # two rows for one destination row (keys "7" and "007" into an INTEGER key): the per-record
    # delivery settles which one is written
    targets = set(dest_ids)
    if len(targets) != len(dest_ids) or any(records.key_text(m.dest_key) in targets for m in mapped):
        return False
    # from here on the batch is this step's: nothing above had an effect (map_batch counted into
    # this step's own counts and tally, and a read batch holds no delete)
    if batch.read:
        scope.reads.previous = distinct
    good_keys = [k for k, m in zip(keys, marks, strict=True) if m]
    good_key_columns = [column.filter(ok) for column in key_columns]
    version_column = rows.column(plan_.version_column).filter(ok) if plan_.version_column else None
    versions: list[Any] = (
        version_column.to_pylist() if version_column is not None else [None] * len(good_keys)
    )
    for counter, counted in (
        (tally.truncated, out.truncated),
        (tally.defaulted, out.defaulted),
        (tally.kept, out.kept),
    ):
        counter.update(counted)
    send, seen, collided = engine.sort_out(scope, parts, mapped, counts, force=False)
    send_rows, seen_rows = _against_ledger(engine, scope, good_keys, versions, hashes, counts)
    seen += seen_rows

    def write() -> tuple[int, records.DeliveredColumns | None, records.WriteResult, list[records.Mapped]]:
        chosen = [i for i, s in enumerate(send_rows) if s]
        if not chosen:
            return 0, None, records.WriteResult(), []
        every = len(chosen) == good.num_rows
        picked = pa.array(chosen, pa.int64())
        table = good if every else good.take(picked)
        sent_keys = good_keys if every else [good_keys[i] for i in chosen]
        sent_versions = versions if every else [versions[i] for i in chosen]
        sent_hashes = hashes if every else [hashes[i] for i in chosen]
        engine.watch.renew(scope.lease)
        try:
            dest.write_arrow(table, fresh=scope.fresh)
        except (delivery.Refused, ValueError):
            # a row the database refuses, or a value without a binary form: per record, which
            # finds the row at fault and writes the others
            recs = _as_records(parts, table, sent_keys, sent_versions, sent_hashes)
            return len(recs), None, parts.dest.write(recs, fresh=False), recs
        form = dest.drift_form
        drift: list[tuple[str, str] | None] = [None] * table.num_rows  # no form: the pairs are kept
        if form is not None:
            pairs = [pair for part in _slices(table) for pair in drift_columns.drift_pairs(form, part)]
            drift = [p if p is not None else _undigested(form, table, i) for i, p in enumerate(pairs)]
        source_keys = good_key_columns if every else [column.take(picked) for column in good_key_columns]
        version_texts = None  # the ledger's text of each version (state/values.encode), where plain
        if version_column is not None and _plain_json(version_column.type):
            sent = version_column if every else version_column.take(picked)
            version_texts = row_hashes.json_texts(sent, plan_.version_column or "").to_pylist()
        columns = records.DeliveredColumns(
            row_hashes.key_texts(source_keys),
            sent_versions,
            sent_hashes,
            dest_ids if every else [dest_ids[i] for i in chosen],
            drift,
            version_texts,
            sent_keys,
        )
        return table.num_rows, columns, records.WriteResult(), []

    engine.finish_batch(scope, parts, batch, send, seen, rejected + collided, tally, counts, write)
    return True


def _against_ledger(
    engine: Engine,
    scope: RunScope,
    keys: Sequence[records.Key],
    versions: Sequence[Any],
    hashes: Sequence[str],
    counts: Counts,
) -> tuple[list[bool], list[records.Delivered]]:
    """Which columnar rows to send (`run_steps.against_ledger` for upserts): all of a
    fresh seed's; else those the ledger does not hold with the same hash. A row held unchanged
    under another version is seen again (the ledger moves, the destination is not written)."""
    if scope.fresh:
        return [True] * len(keys), []
    ledger = engine.store.ledger(scope.sync, list(keys))
    send: list[bool] = []
    seen: list[records.Delivered] = []
    for key, version, hash_ in zip(keys, versions, hashes, strict=True):
        send.append(not run_steps.unchanged(ledger.get(key), key, version, hash_, counts, seen))
    return send, seen


def _as_records(
    parts: Parts,
    table: pa.Table,
    keys: Sequence[records.Key],
    versions: Sequence[Any],
    hashes: Sequence[str],
) -> list[records.Mapped]:
    """The columnar rows as mapped records, for the per-record write."""
    key_to = list(parts.mapping.main.key_to)
    return [
        records.Mapped("upsert", key, tuple([values[k] for k in key_to]), version, values, {}, hash_)
        for key, version, hash_, values in zip(keys, versions, hashes, table.to_pylist(), strict=True)
    ]


def _undigested(form: Any, table: pa.Table, i: int) -> tuple[str, str]:
    """A written row the drift form cannot read (as `SqlDestination._set_drift`): its dkey with
    no digest, or no pair at all when not even the key can be read."""
    dkey = form.dkey(table.slice(i, 1).to_pylist()[0])
    return records.NO_DRIFT if dkey is None else (dkey, records.UNCOMPARED)


def _plain_json(kind: pa.DataType) -> bool:
    """Whether `state.values.encode` of this type's values is their canonical JSON (text, ints,
    NULL): their ledger texts can then be built column-wise."""
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_int64(kind) or pa.types.is_null(kind))


SLICE = 2048  # rows per pass of the hash and the digest: their text columns stay small


def _slices(table: pa.Table) -> list[pa.Table]:
    """The table in slices of `SLICE` rows (views, no copy): the texts the content hash and the
    drift digest build for each row are held for a slice at a time, not for the whole batch."""
    return [table.slice(start, SLICE) for start in range(0, table.num_rows, SLICE)]
