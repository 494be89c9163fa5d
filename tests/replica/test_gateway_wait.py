"""A command's wait for a leader is its own: one that reaches a node that has known no leader
for a long time still waits ``leader_wait_ticks`` before it is refused (before, it was refused
at the next tick — found by the in-process leader-kill test: a learner that had not yet heard
of the new leader refused the first order sent to it)."""

from __future__ import annotations

import random

from grenex.consensus import Config, MemoryStorage, bootstrap
from grenex.replica import Replica, ReplicaConfig
from grenex.replica.gateway import Fate, Gateway, GatewayLimits, Outcome


def _lonely_follower() -> Replica:
    st = MemoryStorage()
    bootstrap(st, ["a", "b", "c"])  # b and c never answer: no leader, ever
    return Replica(
        ReplicaConfig(Config("a", election_timeout_ticks=1000, heartbeat_interval_ticks=1)),
        st,
        random.Random(1),
    )


def test_each_command_waits_its_own_leader_wait() -> None:
    r = _lonely_follower()
    gw: Gateway[str] = Gateway("a", GatewayLimits(leader_wait_ticks=10))
    for _ in range(100):  # long without a leader
        gw.pump(r)
        gw.tick()
    gw.submit("late", b"{}")
    for _ in range(9):
        gw.pump(r)
        gw.tick()
        assert gw.take() == []  # still waiting for a leader
    gw.pump(r)
    gw.tick()
    [out] = gw.take()
    assert isinstance(out, Outcome) and out.token == "late" and out.fate == Fate.REFUSED
