"""The leader's time stamp (SPEC §6): max(its clock, the previous entry's time).

A one-voter replica leads at once; its gateway proposes with a given clock.  Proves: each
applied command carries its entry's time; a clock that goes back does not make times go back;
a new gateway (a new leadership, which remembers nothing) reads the newest time back from its
log; entries without a stamp read as time None; the command bytes reach the engine unstamped.
"""

from __future__ import annotations

import random

from grenex.codec.stamp import stamp, unstamp
from grenex.consensus import Config, MemoryStorage, Role, bootstrap
from grenex.replica import Applied, Replica, ReplicaConfig
from grenex.replica.driver import Driver, InlineSnapshots
from grenex.replica.gateway import Fate, Gateway, Outcome

from .signed import GENESIS, OP, Accounts


def _leader() -> Replica:
    st = MemoryStorage()
    bootstrap(st, ["a"])
    r = Replica(
        ReplicaConfig(Config("a", election_timeout_ticks=4, heartbeat_interval_ticks=1), GENESIS),
        st,
        random.Random(1),
    )
    for _ in range(20):
        r.tick()
        r.handle_ready(lambda m: None)
        if r.raft.role == Role.LEADER:
            return r
    raise AssertionError("a lone voter leads")


def _run(r: Replica, gw: Gateway[int], now_ms: int, *cmds: bytes) -> list[Applied]:
    for i, c in enumerate(cmds):
        gw.submit(i, c)
    drv: Driver[int] = Driver(r, gw, InlineSnapshots(r), lambda m: None)
    for rd in drv.turn(0, [], [], now_ms):
        r.flush(rd)
    out = []
    for o in gw.take():
        assert isinstance(o, Outcome) and o.fate == Fate.APPLIED, o
        assert o.applied is not None
        out.append(o.applied)
    return out


ACCOUNTS = Accounts()
MARKET = ACCOUNTS.add_market()


def _place(oid: str) -> bytes:
    return ACCOUNTS.place(OP, oid, price="5")


def test_times_are_the_leaders_clock_and_never_go_back() -> None:
    r = _leader()
    gw: Gateway[int] = Gateway("a")
    [m] = _run(r, gw, 5_000, MARKET)
    assert m.time == 5_000 and m.data == MARKET  # the engine saw the command, not the stamp
    [p1] = _run(r, gw, 4_000, _place("o1"))  # the clock went back
    assert p1.time == 5_000
    [p2] = _run(r, gw, 6_000, _place("o2"))
    assert p2.time == 6_000
    assert [type(e).__name__ for e in p2.events][:1] == ["Accepted"]


def test_a_new_leadership_reads_the_newest_time_from_the_log() -> None:
    r = _leader()
    _run(r, Gateway("a"), 9_000, MARKET)
    [p] = _run(r, Gateway("a"), 10, _place("o1"))  # knows nothing but the log
    assert p.time == 9_000


def test_unstamped_entries_have_no_time() -> None:
    assert unstamp(b'{"type":"x"}') == (None, b'{"type":"x"}')
    assert unstamp(stamp(7, b"{}")) == (7, b"{}")
    r = _leader()
    r.raft.propose(MARKET)  # proposed without the gateway: no stamp
    applied = r.handle_ready(lambda m: None)
    assert [a.time for a in applied if a.data == MARKET] == [None]
