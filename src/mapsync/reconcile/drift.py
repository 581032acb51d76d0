"""The drift walk: a sync's destination table against the key ledger's drift digests, without
reading either side whole.

1. The destination sums, per bucket of the destination key's hash (`drift_form.bucket`), the row
   count and a 60-bit number of the row (the first 15 hex digits of its digest: the digest's form
   holds the key columns, so it also stands for the row's dkey), in SQL (GROUP BY the bucket; exact
   integer sums on PostgreSQL and MariaDB). SQLite has no md5: its rows' text forms are streamed
   and hashed here.
2. The ledger's live entries with a digest give the same figures, streamed (`drift_scan`), while
   the destination's query runs (a thread waits for it). Live entries without one are counted
   `undigested` and their buckets left out of the comparison; the result is then `incomplete`
   (not ok: `mapsync reconcile SHEET --sync S --backfill` digests them). Entries without even a
   dkey (a ledger from before v8) could be any bucket's rows: only the buckets holding digested
   entries are read in detail, and no extra is reported.
3. Only the buckets whose figures differ are read in detail from both sides (one destination
   query `WHERE bucket IN (…)`; a ledger scan of those buckets' entries) and diffed exactly:
   changed (same dkey, other digest), missing (live in the ledger, absent from the destination),
   extra (a destination row the ledger does not hold live; its `ledger_key` when the ledger
   holds that dkey as deleted). The buckets holding a difference are read once more from both
   sides and only what both reads find is reported (a run delivering rows between the ledger read
   and the destination read makes them differ once).

A failure of the destination is a TransientError (connection lost: the next check tries again)
or a ConfigError (the query refused); one of the ledger is the store's StateError.

Rows a sync deletes by *disabling* them (`deletes.policy: disable`, `by_reason`, `fallback:
disable`) stay in the destination with `deletes.field = deletes.value`: the bucket figures leave
such rows out (the ledger holds them deleted), and the detail read does not report one whose
ledger entry is deleted. A disabled row the ledger never held is therefore not found unless its
bucket differs for another reason (noted in the result). Child tables are not compared.

The walk only reads; its memory is the two bucket arrays plus the rows of the differing buckets.
Each side's server work overlaps the other's reading: a thread waits for the destination's
bucket figures while the ledger is summed, and for its rows of the differing buckets while the
ledger's entries of those buckets are read.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import sqlalchemy as sa

from mapsync import db_errors
from mapsync.connectors.drift_form import DriftForm, bucket, hex_int_sql, md5_hex
from mapsync.connectors.sql_destination import SqlDestination
from mapsync.reconcile.results import CheckResult, Extra, Read
from mapsync.records import UNCOMPARED
from mapsync.sheet import models

PAGE = 5000  # ledger entries per page of `drift_scan`, destination rows per fetch
DISABLING = ("disable", "by_reason")
Entry = tuple[str, str | None, str | None, bool]  # (key text, dkey, digest, deleted) from drift_scan
DestRow = tuple[tuple[Any, ...], str, str, bool]  # (key values, dkey, digest, disabled)


class DriftLedger(Protocol):
    """What the walk needs of the state store (the `Ledger` port's drift scan)."""

    def drift_scan(
        self, sync: str, page: int, buckets: tuple[int, Collection[int]] | None = None
    ) -> Iterator[list[Entry]]: ...


def number(digest: str) -> int:
    """The 60-bit number of one row: the first 15 hex digits of its digest, the same as the
    destination's SQL computes (`_number_sql`). No md5 of (dkey, digest) is needed to tie the
    number to the row's key: the digest's form always holds the key columns (`DriftForm.owned`),
    so two rows with other keys have other digests. (An md5 more per row on both sides cost
    about a third of the destination's GROUP BY and most of the ledger pass.)"""
    return int(digest[:15], 16)


def walk(
    store: DriftLedger,
    sync: str,
    dest: SqlDestination,
    form: DriftForm,
    *,
    buckets: int = 4096,
    check: str | None = None,
    deletes: models.DeletesConfig | None = None,
) -> CheckResult:
    """Compare `sync`'s destination main table with its ledger; see the module's text. `deletes`:
    the sync's delete policy (rows it disables stay in the destination and are no extras)."""
    result = CheckResult(check=check or f"drift:{sync}", kind="drift", sync=sync)
    try:
        _walk(store, sync, dest, form, buckets, _disabled(dest, deletes), result)
    except sa.exc.OperationalError as exc:  # the destination is away: the next check tries again
        raise db_errors.transient(
            f"check {result.check}: connection {dest.db.name}", exc, "destination"
        ) from None
    except sa.exc.DBAPIError as exc:  # the destination refuses the walk's query (rights, a table gone)
        raise db_errors.refused(
            f"check {result.check}: the drift query on {dest.main.table.name} "
            f"in connection {dest.db.name} fails",
            exc,
        ) from None
    return result


def _walk(
    store: DriftLedger,
    sync: str,
    dest: SqlDestination,
    form: DriftForm,
    buckets: int,
    disabled: tuple[str, Any] | None,
    result: CheckResult,
) -> None:
    side = _DestSide(dest, form, buckets, disabled)
    result.read = {"dest": side.read, "ledger": Read()}
    # the destination's GROUP BY runs on its server while the ledger is read here
    with ThreadPoolExecutor(max_workers=1) as pool:
        dest_figures = pool.submit(side.figures)
        l_counts, l_sums, excluded, no_dkey = _ledger_figures(store, sync, buckets, result)
        counts, sums = dest_figures.result()
    suspects = {
        b for b in range(buckets) if b not in excluded and (counts[b], sums[b]) != (l_counts[b], l_sums[b])
    }
    live = sum(c for b, c in enumerate(l_counts) if b not in excluded)
    if no_dkey:
        # an entry without a dkey could be any bucket's row: every bucket with a destination row
        # differs. Only buckets holding digested live entries can show a changed or missing row
        # (extras are withheld below): reading the others would read the table for nothing.
        suspects = {b for b in suspects if l_counts[b]}
    if suspects:
        _diff_twice(store, sync, side, suspects, buckets, result)
    if no_dkey and (unknown := [e for e in result.extra if e.ledger_key is None]):
        # an undigested live entry's row is in some bucket, unmatched: it would look like an extra
        # (and a repair of a table mapsync owns would delete it). Withheld until the backfill.
        result.extra = [e for e in result.extra if e.ledger_key is not None]
        result.notes.append(
            f"{len(unknown)} destination rows the ledger does not match are not reported as extra: "
            f"{no_dkey} live entries have no destination key hash yet (--backfill)"
        )
    result.compared = live + len(result.extra)
    result.matched = live - len(result.changed) - len(result.missing)
    if result.undigested:  # the result is `incomplete`, never ok (CheckResult.status)
        # (rows the digest cannot describe are `UNCOMPARED`, noted above, not undigested: no
        # backfill or delivery would give them a digest, so they never make a check incomplete)
        if no_dkey and not live:
            what = "no live ledger entry has a drift digest: nothing compared"
        elif no_dkey:
            what = f"{result.undigested} live ledger entries have no drift digest: their rows not compared"
        else:
            what = (
                f"{result.undigested} live ledger entries have no drift digest: "
                f"{len(excluded)} of {buckets} buckets not compared"
            )
        result.notes.append(
            f"incomplete: {what}; run `mapsync reconcile SHEET --sync {sync} --backfill` "
            "(or their next delivery sets it)"
        )
    if side.disabled is not None:
        result.notes.append(
            f"rows with {side.disabled[0]} = {side.disabled[1]!r} (disabled by the delete policy) are "
            "compared only in buckets that differ otherwise"
        )
    result.notes.extend(form.notes)
    if dest.children:
        result.notes.append("child tables are not compared: " + ", ".join(sorted(dest.children)))


def _disabled(dest: SqlDestination, deletes: models.DeletesConfig | None) -> tuple[str, Any] | None:
    """(field, value) marking a row disabled, when the sync's deletes may disable rows."""
    if deletes is not None and deletes.field and (deletes.policy in DISABLING or deletes.fallback):
        return deletes.field, deletes.value
    if dest.fallback is not None and dest.fallback[0] is not None:
        return dest.fallback[0], dest.fallback[1]
    return None


def _ledger_figures(
    store: DriftLedger, sync: str, buckets: int, result: CheckResult
) -> tuple[list[int], list[int], set[int], int]:
    """Per bucket: count and sum of the live digested entries; the buckets holding an undigested
    live entry; how many undigested entries have no dkey (their bucket is unknown)."""
    counts, sums = [0] * buckets, [0] * buckets
    excluded: set[int] = set()
    no_dkey = 0
    uncompared = 0
    read = result.read["ledger"]
    # the hot loop (every ledger entry): `number` and `bucket` inlined
    for page in store.drift_scan(sync, PAGE):
        read.rows += len(page)
        read.bytes += sum(len(e[0]) for e in page) + 65 * len(page)
        for _, dkey, digest, deleted in page:
            if deleted:
                continue
            if digest == UNCOMPARED and dkey is not None:  # a row the digest cannot describe
                uncompared += 1
                excluded.add(bucket(dkey, buckets))
                continue
            if dkey is None or digest is None:
                result.undigested += 1
                if dkey is None:
                    no_dkey += 1
                else:
                    excluded.add(bucket(dkey, buckets))
                continue
            b = int(dkey[:8], 16) % buckets
            counts[b] += 1
            sums[b] += int(digest[:15], 16)
    if uncompared:
        result.notes.append(
            f"{uncompared} rows not compared: kept as the destination had them (`on_exists: skip`) or "
            "holding a value the drift digest cannot read; their buckets are left out"
        )
    return counts, sums, excluded, no_dkey


def _diff_twice(
    store: DriftLedger, sync: str, side: _DestSide, suspects: set[int], buckets: int, result: CheckResult
) -> None:
    """The suspect buckets diffed, then the buckets holding a difference read once more from both
    sides: a difference is reported only when both reads find it. A run that writes the
    destination and commits its ledger between the walk's ledger read and its destination read
    makes its rows look changed, missing or extra once (and, the two reads overlapping, a run
    between the destination's read and the ledger's too); the second read sees them match."""
    found = _diff(store, sync, side, suspects, buckets, result)
    if not found:
        return
    again = CheckResult(result.check, "drift", sync, read=result.read)  # (its reads are counted too)
    _diff(store, sync, side, found, buckets, again)
    changed, missing, extra = set(again.changed), set(again.missing), again.extra
    before = result.differences()
    result.changed = [c for c in result.changed if c in changed]
    result.missing = [m for m in result.missing if m in missing]
    result.extra = [e for e in result.extra if e in extra]
    if gone := before - result.differences():
        result.notes.append(
            f"{gone} difference(s) matched when read again (a run delivered them while the check ran)"
        )


def _diff(
    store: DriftLedger, sync: str, side: _DestSide, suspects: set[int], buckets: int, result: CheckResult
) -> set[int]:
    """Read the suspect buckets from both sides and classify every difference; the buckets that
    hold one."""
    live: dict[str, tuple[str, str]] = {}  # dkey -> (key text, digest)
    gone: dict[str, str] = {}  # dkey -> key text of a deleted entry
    read = result.read["ledger"]
    # the destination hashes every row to find those buckets' rows on its server meanwhile
    with ThreadPoolExecutor(max_workers=1) as pool:
        dest_rows = pool.submit(lambda: list(side.rows(sorted(suspects))))
        for page in store.drift_scan(sync, PAGE, (buckets, suspects)):  # those buckets' entries only
            read.rows += len(page)
            for key, dkey, digest, deleted in page:
                read.bytes += len(key) + 64 + 1
                if dkey is None:
                    continue
                if deleted:
                    gone.setdefault(dkey, key)
                elif digest is not None:
                    live[dkey] = (key, digest)
        rows = dest_rows.result()
    seen: set[str] = set()
    found: set[int] = set()
    for key_values, dkey, digest, disabled in rows:
        entry = live.get(dkey)
        if entry is not None:
            seen.add(dkey)
            if entry[1] != digest:
                result.changed.append(entry[0])
                found.add(bucket(dkey, buckets))
        elif dkey in gone and disabled:
            continue  # deleted by disabling it: the row stays, as the policy says
        else:
            result.extra.append(Extra(tuple(key_values), gone.get(dkey)))
            found.add(bucket(dkey, buckets))
    unseen = [(dkey, key) for dkey, (key, _) in live.items() if dkey not in seen]
    result.missing.extend(sorted(key for _, key in unseen))
    found.update(bucket(dkey, buckets) for dkey, _ in unseen)
    result.changed.sort()
    return found


class _DestSide:
    """The destination's half of the walk: bucket figures and the rows of chosen buckets."""

    def __init__(self, dest: SqlDestination, form: DriftForm, buckets: int, disabled: tuple[str, Any] | None):
        self.dest = dest
        self.form = form
        self.buckets = buckets
        self.disabled = disabled
        self.read = Read()
        self.table = dest.main.table
        name = dest.db.engine.dialect.name
        self.dialect = "mysql" if name in ("mysql", "mariadb") else name  # drift_form's dialect names
        self.dkey, self.digest, self.client_hash = form.sql(self.dialect, self._col)
        if disabled is not None:
            flag = self._col(disabled[0]) == sa.bindparam("disabled_value", disabled[1])
            self.flag: sa.ColumnElement[Any] = sa.case((flag, 1), else_=0)
        else:
            self.flag = sa.literal(0)

    def _col(self, name: str) -> sa.ColumnElement[Any]:
        return self.table.c[name]

    def figures(self) -> tuple[list[int], list[int]]:
        """Per bucket: count and sum of the 60-bit numbers of the rows not disabled."""
        counts, sums = [0] * self.buckets, [0] * self.buckets
        if self.client_hash:
            for _, dkey, digest, disabled in self._stream(None):
                if not disabled:
                    b = bucket(dkey, self.buckets)
                    counts[b] += 1
                    sums[b] += number(digest)
            return counts, sums
        b_expr = self.form.bucket_sql(self.dialect, self._col, self.buckets).label("b")
        query = sa.select(b_expr, sa.func.count().label("n"), sa.func.sum(self._number_sql()).label("s"))
        query = query.select_from(self.table)
        if self.disabled is not None:
            query = query.where(self.flag == 0)
        query = query.group_by(b_expr)
        with self.dest.db.engine.connect() as conn:
            for b, n, s in conn.execute(query):
                self.read.rows += 1
                self.read.bytes += len(str(b)) + len(str(n)) + len(str(s))
                counts[int(b)] = int(n)
                sums[int(b)] = int(s or 0)
        return counts, sums

    def _number_sql(self) -> sa.ColumnElement[Any]:
        """The 60-bit number of a row in the destination's SQL (= `number`)."""
        return hex_int_sql(self.digest, 15)

    def rows(self, suspects: Sequence[int]) -> Iterator[DestRow]:
        """(key values, dkey, digest, disabled) of every destination row in the given buckets."""
        if self.client_hash:
            wanted = set(suspects)
            for row in self._stream(None):
                if bucket(row[1], self.buckets) in wanted:
                    yield row
            return
        # one statement, however many buckets: the server hashes every row once (chunks of the
        # list would each scan the table); at most `buckets` bound values
        b_expr = self.form.bucket_sql(self.dialect, self._col, self.buckets)
        yield from self._stream(b_expr.in_(list(suspects)))

    def _stream(
        self, where: sa.ColumnElement[bool] | None
    ) -> Iterable[tuple[tuple[Any, ...], str, str, bool]]:
        key = [self._col(k) for k in self.dest.main.key]
        query = sa.select(*key, self.dkey, self.digest, self.flag).select_from(self.table)
        if where is not None:
            query = query.where(where)
        n = len(key)
        with self.dest.db.engine.connect().execution_options(
            stream_results=True, max_row_buffer=PAGE
        ) as conn:
            result = conn.execute(query)
            while batch := result.fetchmany(PAGE):
                for row in batch:
                    self.read.rows += 1
                    self.read.bytes += sum(len(str(v)) for v in row)
                    dkey, digest = row[n], row[n + 1]
                    if self.client_hash:
                        dkey, digest = md5_hex(dkey), md5_hex(digest)
                    yield tuple(row[:n]), dkey, digest, bool(row[n + 2])
