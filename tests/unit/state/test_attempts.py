"""Which attempts a batch leaves (`attempts.of_batch`): a seed's deliveries none, rejections always,
the mapped record as payload of a refused one, every text through the redaction."""

from __future__ import annotations

from mapsync import records
from mapsync.state import attempts


def _mapped(key: int, name: str) -> records.Mapped:
    values = {"id": key, "name": name}
    return records.Mapped("upsert", (key,), (key,), 1, values, {}, records.content_hash(values))


def test_of_batch_records_deliveries_unless_a_seed_and_rejections_always() -> None:
    sent = [_mapped(1, "a"), _mapped(2, "pw=s3cret")]
    delivered = [
        records.Delivered((1,), 1, sent[0].hash, "d1"),
        records.Delivered((3,), 1, "deleted", None, "delete"),
    ]
    refused = [
        records.Rejection((2,), "refused: s3cret", "name", "check"),
        records.Rejection((4,), "unknown country", "country", "country"),  # rejected by the mapping
    ]
    hide = lambda text: text.replace("s3cret", "***")  # noqa: E731
    got = attempts.of_batch(delivered, refused, sent, deliveries=True, redact=hide)
    assert [(a.key, a.outcome) for a in got] == [
        ((1,), "delivered"),
        ((3,), "deleted"),
        ((2,), "rejected"),
        ((4,), "rejected"),
    ]
    assert got[0].hash == sent[0].hash and got[0].dest_id == "d1" and got[0].payload is None
    two = got[2]
    assert two.message == "refused: *** (field name, check)" and two.hash == sent[1].hash
    assert two.payload is not None and "s3cret" not in two.payload and '"name":"pw=***"' in two.payload
    assert got[3].payload is None and got[3].message == "unknown country (field country, country)"
    seed = attempts.of_batch(delivered, refused, sent, deliveries=False, redact=hide)
    assert [a.outcome for a in seed] == ["rejected", "rejected"]


def test_the_stored_row_keeps_a_payload_only_for_a_refusal() -> None:
    kept = attempts.row_of("s", 1, attempts.Attempt((1,), "delivered", 1, "h", None, None, "{}"), "t")
    assert kept["payload"] is None and kept["hash"] == "h" and kept["key"] == "[1]"
    refused = attempts.row_of("s", 1, attempts.Attempt((1,), "failed", None, None, None, "m", "{}"), "t")
    assert refused["payload"] == "{}" and refused["version"] is None
