"""How the live workers split the syncs (`plan`), a pure function of who claims what: the beat of
each worker (state/workers.py, state/memory_workers.py) applies it in its transaction."""

from __future__ import annotations

import math
from collections.abc import Iterable


def shares(live: dict[str, set[str]]) -> dict[str, int]:
    """Each live worker's fair share of the syncs it shares with others: ceil(those syncs / the
    live workers, itself included, that may run one of them). A sync only one worker may run is
    its own, outside any share."""
    out = {}
    for w, syncs in live.items():
        shared = {s for s in syncs if any(s in other for v, other in live.items() if v != w)}
        peers = sum(1 for v, other in live.items() if v == w or other & shared)
        out[w] = math.ceil(len(shared) / max(1, peers))
    return out


def plan(
    me: str,
    wanted: Iterable[str],
    claims: dict[str, str],
    live: dict[str, set[str]],
    busy: set[str],
) -> tuple[list[str], list[str]]:
    """What worker `me` releases and claims: (release, claim).

    `wanted`: the syncs `me` may run; `claims`: sync → the live worker claiming it; `live`: each
    live worker → the syncs it may run (`me` is added); `busy`: syncs of `me` with a run queued
    or under way (never released). A worker's room is its share (`shares`) less the shared syncs
    it holds; a sync only `me` may run is always claimed and counts against nothing.

    - Every free shared sync (claimed by no one) is placed, the most constrained first (fewest
      workers with room that may run it), with the worker that has the most room (`me` on a
      tie): placed with `me`, it is a claim; with another, it is left to that worker's beat and
      counted against its room; with nobody (all at their share), `me` claims it if it may run
      it, beyond its share rather than leave it unrun, whatever the mix of `--sync` sets.
    - Then, while `me` holds more than its share, its surplus idle syncs are released, each to
      the worker with the most room that may run it: a release never leaves a sync that nobody
      claims again, and a release not yet claimed is counted as placed, so the next beat does
      not release again."""
    live = {**live, me: set(wanted)}
    share = shares(live)
    everything = set().union(*live.values())
    runners = {s: [w for w in live if s in live[w]] for s in everything}
    own = {s for s, ws in runners.items() if len(ws) == 1}  # one worker's alone: outside shares
    alone = {s for s in own if runners[s] == [me]}
    room = dict(share)
    for sync, w in claims.items():
        if w in room and sync not in own:
            room[w] -= 1

    def place(sync: str, exclude: str | None = None) -> str | None:
        able = [w for w in live if w != exclude and sync in live[w] and room[w] > 0]
        return max(able, key=lambda w: (room[w], w == me, w), default=None)

    claim = sorted(alone - claims.keys())
    free = list(everything - claims.keys() - own)
    free.sort(key=lambda s: (sum(1 for w in live if s in live[w] and room[w] > 0), s))
    for sync in free:
        who = place(sync)
        if who is not None:
            room[who] -= 1
        if who == me or (who is None and sync in live[me]):
            claim.append(sync)
            if who is None:
                room[me] -= 1
    release: list[str] = []
    for sync in sorted(s for s, w in claims.items() if w == me and s not in own):
        if room[me] >= 0:
            break
        if sync in busy or (other := place(sync, exclude=me)) is None:
            continue
        release.append(sync)
        room[me] += 1
        room[other] -= 1
    return release, sorted(claim)
