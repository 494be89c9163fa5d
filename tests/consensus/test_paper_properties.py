"""The five guarantees of Raft's Figure 3, checked after every step of random schedules.

Each schedule (seeded, deterministic) drives a 3- or 5-voter cluster of real cores through
the script harness: random ticks, proposals, deliveries in random order, drops, duplicates and
restarts from storage.  After every step the test checks, from outside:

* Election Safety: at most one leader per term;
* Leader Append-Only: a leader never overwrites or deletes entries in its log during its term;
* Log Matching: if two logs hold an entry with the same index and term, they are identical in
  all entries up to that index;
* Leader Completeness: an entry committed in a term is in the log of every leader of a later
  term;
* State Machine Safety: no two nodes apply different entries at the same index.
"""

from __future__ import annotations

import random

import pytest

from grenex.consensus import Entry, Role

from .harness import Cluster


def _terms(c: Cluster, nid: str) -> dict[int, int]:
    return dict(c.log_terms(nid))


def _check(
    c: Cluster,
    leaders: dict[int, str],
    leader_logs: dict[tuple[str, int], dict[int, int]],
    committed: dict[int, tuple[int, int]],
    applied: dict[int, Entry],
) -> None:
    logs = {nid: _terms(c, nid) for nid in sorted(c.nodes)}
    for nid in sorted(c.nodes):
        r = c[nid]
        if r.role == Role.LEADER:
            # Election Safety
            assert leaders.setdefault(r.term, nid) == nid, (r.term, leaders[r.term], nid)
            # Leader Append-Only: what it held earlier in its term is still there, unchanged
            key = (nid, r.term)
            before = leader_logs.get(key, {})
            now = logs[nid]
            for i, t in before.items():
                if i >= r.log.first_index():
                    assert now.get(i) == t, (nid, i, t, now.get(i))
            leader_logs[key] = now
            # Leader Completeness: every entry committed in an earlier term is in this log
            for i, (t, term_when) in committed.items():
                if term_when < r.term and i >= r.log.first_index():
                    assert now.get(i) == t, (nid, "lacks committed", i, t)
        # record what this node knows committed (by the term it was committed in)
        for i in range(max(r.log.first_index(), 1), r.log.committed + 1):
            t = logs[nid][i]
            known = committed.setdefault(i, (t, r.term))
            assert known[0] == t, (nid, i, t, known)
        # State Machine Safety
        for e in c.nodes[nid].applied:
            other = applied.setdefault(e.index, e)
            assert other == e, (nid, e, other)
    # Log Matching, pairwise
    ids = sorted(c.nodes)
    for a_i, a in enumerate(ids):
        for b in ids[a_i + 1 :]:
            la, lb = logs[a], logs[b]
            common = sorted(set(la) & set(lb))
            match = [i for i in common if la[i] == lb[i]]
            if match:
                top = match[-1]
                for i in common:
                    if i <= top:
                        assert la[i] == lb[i], (a, b, i, top)


@pytest.mark.parametrize("seed", range(40))
def test_figure3_guarantees_hold_under_random_schedules(seed: int) -> None:
    rng = random.Random(seed)
    voters = [f"n{i}" for i in range(1, rng.choice((3, 5)) + 1)]
    c = Cluster(voters, seed=seed, pre_vote=rng.random() < 0.5, check_quorum=rng.random() < 0.5)
    leaders: dict[int, str] = {}
    leader_logs: dict[tuple[str, int], dict[int, int]] = {}
    committed: dict[int, tuple[int, int]] = {}
    applied: dict[int, Entry] = {}
    n = 0
    for _ in range(500):
        op = rng.random()
        if op < 0.35:
            c.tick(rng.choice(voters))
        elif op < 0.45:
            ldrs = c.leaders()
            if ldrs:
                nid = rng.choice(ldrs)
                n += 1
                c.propose(nid, b"cmd%d" % n)
        elif op < 0.9:
            if not c.outbox:
                continue
            # deliver a random subset in random order; drop or duplicate a few
            msgs = c.take(lambda m: rng.random() < 0.5)
            rng.shuffle(msgs)
            out = []
            for m in msgs:
                roll = rng.random()
                if roll < 0.1:
                    continue
                out.append(m)
                if roll > 0.95:
                    out.append(m)
            c.deliver(out)
        elif op < 0.91:
            victim = rng.choice(voters)
            c.outbox = [m for m in c.outbox if m.dst != victim]  # in flight: lost with the crash
            c.restart(victim)
        _check(c, leaders, leader_logs, committed, applied)
    # the schedule must have done something worth checking
    assert leaders and max(committed) > len(voters), (leaders, max(committed))
