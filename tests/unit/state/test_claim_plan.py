"""`plan` (state/workers.py): what one worker releases and claims at its beat, from the claims and
the live workers' sync sets. Pure: no store, no clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mapsync.state.claim_plan import plan

TWELVE = [f"s{i:02d}" for i in range(12)]


def apply(me: str, claims: dict[str, str], release: list[str], claim: list[str]) -> None:
    """What a beat does with `plan`'s answer (the store's claim insert skips a sync taken)."""
    for sync in release:
        assert claims.pop(sync) == me
    for sync in claim:
        claims.setdefault(sync, me)


def step(me: str, claims: dict[str, str], live: dict[str, set[str]]) -> None:
    release, claim = plan(me, live[me], claims, live, set())
    apply(me, claims, release, claim)


def rounds(live: dict[str, set[str]], claims: dict[str, str], n: int = 4) -> dict[str, str]:
    """Each live worker beats in turn, `n` rounds."""
    for _ in range(n):
        for me in live:
            step(me, claims, live)
    return claims


def held(claims: dict[str, str], worker: str) -> set[str]:
    return {s for s, w in claims.items() if w == worker}


def share(me: str, live: dict[str, set[str]]) -> int:
    """The share `plan` documents: ceil(my syncs / live workers that may run one of them)."""
    peers = [w for w, syncs in live.items() if w == me or syncs & live[me]]
    return math.ceil(len(live[me]) / len(peers))


def only(me: str, live: dict[str, set[str]]) -> set[str]:
    return {s for s in live[me] if not any(s in syncs for w, syncs in live.items() if w != me)}


# ----------------------------------------------------------------------------- examples


def test_one_worker_alone_claims_every_sync() -> None:
    live = {"a": set(TWELVE)}
    assert plan("a", TWELVE, {}, live, set()) == ([], TWELVE)


@pytest.mark.parametrize(("workers", "each"), [(2, 6), (3, 4)])
def test_twelve_syncs_split_evenly(workers: int, each: int) -> None:
    live = {f"w{i}": set(TWELVE) for i in range(workers)}
    claims = rounds(live, {})
    assert sorted(claims) == TWELVE
    assert [len(held(claims, w)) for w in live] == [each] * workers


def test_a_joining_worker_gets_the_surplus_released_to_it() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE)}
    claims = dict.fromkeys(TWELVE, "a")
    release, claim = plan("a", TWELVE, claims, live, set())
    assert len(release) == 6 and claim == []
    assert plan("b", TWELVE, claims, live, set()) == ([], [])  # nothing free yet
    apply("a", claims, release, claim)
    release_b, claim_b = plan("b", TWELVE, claims, live, set())
    assert release_b == [] and sorted(claim_b) == sorted(release)


def test_three_workers_after_two_each_holder_gives_the_newcomer_two() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE), "c": set(TWELVE)}
    claims = {s: ("a" if i < 6 else "b") for i, s in enumerate(TWELVE)}
    step("a", claims, live)
    assert len(held(claims, "a")) == 4 and len(claims) == 10
    step("b", claims, live)  # c has claimed nothing yet: b frees two more for it
    assert len(held(claims, "b")) == 4 and len(claims) == 8
    step("c", claims, live)
    assert [len(held(claims, w)) for w in "abc"] == [4, 4, 4]


def test_surplus_goes_only_to_a_worker_that_may_run_it() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE[:3])}
    claims = dict.fromkeys(TWELVE, "a")
    release, _ = plan("a", TWELVE, claims, live, set())
    assert release and set(release) <= live["b"]


def test_no_surplus_is_released_when_no_other_worker_may_run_it() -> None:
    live = {"a": set(TWELVE), "b": {"other"}}
    claims = dict.fromkeys(TWELVE, "a")
    assert plan("a", TWELVE, claims, live, set()) == ([], [])


def test_busy_syncs_are_never_released() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE)}
    claims = dict.fromkeys(TWELVE, "a")
    busy = set(TWELVE[:9])
    release, claim = plan("a", TWELVE, claims, live, busy)
    assert sorted(release) == TWELVE[9:] and claim == []  # 3 idle: all go, and a keeps 9 > 6
    everything_busy, _ = plan("a", TWELVE, claims, live, set(TWELVE))
    assert everything_busy == []


def test_a_sync_only_me_may_run_is_claimed_beyond_the_share() -> None:
    shared = TWELVE[:4]
    live = {"a": {*shared, "mine1", "mine2"}, "b": set(shared)}
    claims = {"s00": "a", "s01": "a", "s02": "a", "s03": "b"}  # shared: 4, a share of 2 each
    release, claim = plan("a", sorted(live["a"]), claims, live, set())
    assert claim == ["mine1", "mine2"]  # its own, outside the share
    assert release == ["s00"]  # the shared ones balanced: 2 and 2


def test_a_shared_sync_is_not_claimed_beyond_the_share() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE)}
    claims = {s: "a" for s in TWELVE[:6]}
    assert plan("a", TWELVE, claims, live, set()) == ([], [])  # six free ones, but a is at 6
    assert sorted(plan("b", TWELVE, claims, live, set())[1]) == TWELVE[6:]


def test_heterogeneous_sets_each_worker_holds_only_what_it_may_run() -> None:
    live = {"a": set(TWELVE[:8]), "b": set(TWELVE[4:])}  # s04..s07 shared; four only a's, four only b's
    claims = rounds(live, {})
    assert sorted(claims) == TWELVE
    assert held(claims, "b") >= set(TWELVE[8:]) and held(claims, "a") >= set(TWELVE[:4])
    for sync, worker in claims.items():
        assert sync in live[worker]
    for worker in live:
        assert len(held(claims, worker)) <= share(worker, live) + len(only(worker, live))


def test_nothing_is_claimed_twice_and_a_release_is_only_mine() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE)}
    claims = {"s00": "b", "s01": "a", "s02": "a"}
    release, claim = plan("a", [*TWELVE, *TWELVE], claims, live, set())  # `wanted` twice over
    assert len(claim) == len(set(claim))
    assert not set(claim) & set(claims)
    assert set(release) <= held(claims, "a") and not set(release) & set(claim)


@pytest.mark.parametrize("busy", [set(), {"s00", "s11"}])
def test_a_second_plan_after_applying_the_first_changes_nothing(busy: set[str]) -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE), "c": set(TWELVE)}
    claims = {s: "a" for s in TWELVE[:10]}
    release, claim = plan("a", TWELVE, claims, live, busy)
    assert len(release) == 6 and claim == [] and not set(release) & busy
    apply("a", claims, release, claim)
    assert plan("a", TWELVE, claims, live, busy) == ([], [])
    fresh = {"s00": "b"}  # and claiming: a takes its 4 of the 11 free, then stops
    release, claim = plan("a", TWELVE, fresh, live, set())
    assert release == [] and len(claim) == 4
    apply("a", fresh, release, claim)
    assert plan("a", TWELVE, fresh, live, set()) == ([], [])


# ----------------------------------------------------------------------------- mixed --sync sets

# Found by these tests on the first `plan` (issue 14): each held before the fix only by luck or not at all.


def test_a_surplus_released_to_a_worker_is_claimed_by_someone() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE[:2])}
    claims = rounds(live, dict.fromkeys(TWELVE, "a"))
    assert sorted(claims) == TWELVE


def test_every_sync_is_claimed_when_the_shares_add_up_to_too_few() -> None:
    s = {f"s{i}" for i in range(4)}
    t = {f"t{i}" for i in range(8)}
    live = {"a": set(s), "b": s | t, "c": set(t)}  # shares 2 + 4 + 4 = 10 < 12
    claims = rounds(live, {})
    assert sorted(claims) == sorted(s | t)


def test_every_sync_is_claimed_with_one_full_worker_and_two_partial_ones() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE[6:]), "c": set(TWELVE[6:])}
    claims = rounds(live, {})
    assert sorted(claims) == TWELVE


def test_a_second_plan_before_the_taker_claims_releases_nothing_more() -> None:
    live = {"a": set(TWELVE), "b": set(TWELVE), "c": set(TWELVE[:5])}  # a's share ceil(12/3) = 4
    claims = {s: "a" for s in TWELVE[:10]}
    release, claim = plan("a", TWELVE, claims, live, {"s00"})
    assert release == ["s01", "s02", "s03", "s04"]  # b's room (4, two kept for s10, s11) and c's
    apply("a", claims, release, claim)
    assert plan("a", TWELVE, claims, live, {"s00"}) == ([], [])  # b has not claimed yet: no more


# ----------------------------------------------------------------------------- properties

SYNCS = [f"s{i}" for i in range(10)]
WORKERS = ["w0", "w1", "w2", "w3"]


@st.composite
def worlds(draw: st.DrawFn, same: bool) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Live workers and their sync sets (the same set for all when `same`), and claims as a
    store may hold them before a beat: by live workers, of syncs they may run, any number each."""
    n = draw(st.integers(1, len(WORKERS)))
    if same:
        common = set(draw(st.lists(st.sampled_from(SYNCS), min_size=1, unique=True)))
        live = {w: set(common) for w in WORKERS[:n]}
    else:
        live = {w: set(draw(st.lists(st.sampled_from(SYNCS), min_size=1, unique=True))) for w in WORKERS[:n]}
    claims: dict[str, str] = {}
    for sync in sorted(set().union(*live.values())):
        holder = draw(st.sampled_from([None, *sorted(w for w in live if sync in live[w])]))
        if holder is not None:
            claims[sync] = holder
    return live, claims


def check_settled(live: dict[str, set[str]], claims: dict[str, str]) -> None:
    wanted = set().union(*live.values())
    assert set(claims) == wanted, f"unclaimed: {sorted(wanted - set(claims))}"
    for sync, worker in claims.items():
        assert worker in live and sync in live[worker]
    for worker in live:
        limit = share(worker, live) + len(only(worker, live))
        mine = held(claims, worker)
        if len(mine) > limit:  # beyond its share only what no other worker had room for
            others = [w for w in live if w != worker and live[w] & set(mine)]
            assert all(len(held(claims, w)) >= share(w, live) for w in others), (worker, sorted(mine), limit)


@given(worlds(same=True))
def test_property_same_sets_every_sync_claimed_once_within_the_shares(
    world: tuple[dict[str, set[str]], dict[str, str]],
) -> None:
    live, claims = world
    check_settled(live, rounds(live, claims, n=3))
    before = dict(claims)
    rounds(live, claims, n=1)
    assert claims == before  # settled: another round changes nothing


@example(({"a": set(TWELVE), "b": set(TWELVE[:2])}, dict.fromkeys(TWELVE, "a")))
@example(
    (
        {
            "a": {f"s{i}" for i in range(4)},
            "b": {f"s{i}" for i in range(4)} | {f"t{i}" for i in range(8)},
            "c": {f"t{i}" for i in range(8)},
        },
        {},
    )
)
@given(worlds(same=False))
def test_property_any_sets_every_sync_claimed_once_within_the_shares(
    world: tuple[dict[str, set[str]], dict[str, str]],
) -> None:
    live, claims = world
    check_settled(live, rounds(live, claims, n=4))
