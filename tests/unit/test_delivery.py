"""delivery.deliver: collapse to the last change per key, one call, bisect a refused call."""

from __future__ import annotations

import pytest

from mapsync import delivery, errors, records


def _rec(key: int, op: records.WriteOp = "upsert", name: str = "x", version: int = 1) -> records.Mapped:
    values = {"ref": key, "nm": name}
    return records.Mapped(op, (key,), (key,), version, values, {}, records.content_hash(values))


class Recorder:
    """A destination call that refuses calls holding a poisoned key and records the rest."""

    def __init__(
        self, poisoned: frozenset[int] = frozenset(), rejected: frozenset[int] = frozenset()
    ) -> None:
        self.poisoned = poisoned
        self.rejected = rejected
        self.calls: list[tuple[list[tuple[int, str]], bool]] = []

    def __call__(self, recs: list[records.Mapped], fresh: bool) -> list[records.Rejection]:
        self.calls.append(([(r.dest_key[0], r.op) for r in recs], fresh))
        if any(r.dest_key[0] in self.poisoned for r in recs):
            raise delivery.Refused("duplicate key value violates unique constraint")
        return [
            records.Rejection(r.key, "locked", None, "destination")
            for r in recs
            if r.dest_key[0] in self.rejected
        ]


def test_a_key_changed_twice_in_one_batch_is_written_once_as_it_ended() -> None:
    call = Recorder()
    batch = [_rec(1, name="a", version=1), _rec(2), _rec(1, name="b", version=2)]
    result = delivery.deliver(batch, call)
    assert call.calls == [([(2, "upsert"), (1, "upsert")], False)]
    assert [(d.key, d.version) for d in result.delivered] == [((1,), 1), ((2,), 1), ((1,), 2)]
    assert result.rejected == []


def test_a_delete_then_reinsert_ends_inserted() -> None:
    call = Recorder()
    delivery.deliver([_rec(1, "delete"), _rec(1, "upsert")], call)
    assert call.calls == [([(1, "upsert")], False)]


def test_fresh_holds_for_the_first_call_only() -> None:
    call = Recorder(poisoned=frozenset({3}))
    delivery.deliver([_rec(i) for i in range(1, 5)], call, fresh=True)
    assert [fresh for _, fresh in call.calls] == [True, False, False, False, False]


def test_a_refused_call_is_bisected_and_the_reason_kept() -> None:
    call = Recorder(poisoned=frozenset({3}))
    result = delivery.deliver([_rec(i) for i in range(1, 9)], call)
    assert [len(keys) for keys, _ in call.calls] == [8, 4, 2, 2, 1, 1, 4]  # 1 + 2·log2(8)
    assert sorted(d.key for d in result.delivered) == [(i,) for i in (1, 2, 4, 5, 6, 7, 8)]
    (bad,) = result.rejected
    assert bad.key == (3,) and bad.rule == "destination"
    assert bad.message == "destination refused the record: duplicate key value violates unique constraint"


def test_per_record_rejections_of_a_call_are_passed_on_and_the_rest_delivered() -> None:
    call = Recorder(rejected=frozenset({2}))
    result = delivery.deliver([_rec(1), _rec(2), _rec(3)], call)
    assert len(call.calls) == 1
    assert [d.key for d in result.delivered] == [(1,), (3,)]
    assert [r.key for r in result.rejected] == [(2,)]


def test_an_earlier_change_of_a_rejected_key_is_not_reported_delivered() -> None:
    call = Recorder(poisoned=frozenset({1}))
    result = delivery.deliver([_rec(1, version=1), _rec(1, version=2), _rec(2)], call)
    assert [d.key for d in result.delivered] == [(2,)]
    assert [(r.key, r.version) for r in result.rejected] == [((1,), 2)]


def test_a_systemic_failure_propagates_without_splitting() -> None:
    calls: list[int] = []

    def down(recs: list[records.Mapped], fresh: bool) -> None:
        calls.append(len(recs))
        raise errors.PermanentError("destination refuses every write: permission denied")

    with pytest.raises(errors.PermanentError, match="permission denied"):
        delivery.deliver([_rec(i) for i in range(8)], down)
    assert calls == [8]


def test_the_destination_id_is_the_destination_key() -> None:
    result = delivery.deliver([_rec(7)], Recorder())
    assert result.delivered[0].dest_id == records.key_text((7,)) == "[7]"


def test_inside_whole_a_refused_call_is_not_split() -> None:
    call = Recorder(poisoned=frozenset({3}))
    with delivery.whole():
        assert not delivery.splitting()
        result = delivery.deliver([_rec(i) for i in range(1, 9)], call)
    assert delivery.splitting()  # back to bisecting after the block
    assert [len(keys) for keys, _ in call.calls] == [8]  # one call, no bisection
    assert result.delivered == [] and [r.key for r in result.rejected] == [(i,) for i in range(1, 9)]
    assert {r.message for r in result.rejected} == {
        "destination refused the call of 8 records (not split: delivery.breaker): "
        "duplicate key value violates unique constraint"
    }
    with delivery.whole(False):  # off: as usual
        assert delivery.splitting()
