"""A command's wait for a leader is its own: one that reaches a node that has known no leader
for a long time still waits ``leader_wait_ticks`` before it is refused (before, it was refused
at the next tick — found by the in-process leader-kill test: a learner that had not yet heard
of the new leader refused the first order sent to it)."""

from __future__ import annotations

import random

from grenex.consensus import Config, MemoryStorage, Role, bootstrap
from grenex.replica import Replica, ReplicaConfig
from grenex.replica.gateway import At, Fate, Forward, Gateway, GatewayLimits, Outcome

from .signed import GENESIS


def _lonely_follower() -> Replica:
    st = MemoryStorage()
    bootstrap(st, ["a", "b", "c"])  # b and c never answer: no leader, ever
    return Replica(
        ReplicaConfig(
            Config("a", election_timeout_ticks=1000, heartbeat_interval_ticks=1), GENESIS
        ),
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


class _View:
    """What ``Gateway.pump`` reads of a follower's replica: its role and its leader."""

    def __init__(self, lead: str | None) -> None:
        self.raft = self
        self.role = Role.FOLLOWER
        self.lead = lead


def test_forwards_to_an_old_leader_are_unknown_as_soon_as_another_leads() -> None:
    """Found by the fault lab: after the leader was cut off, commands forwarded to it waited
    for their deadline (seconds without acknowledgements although a new leader was elected)."""
    gw: Gateway[str] = Gateway("f", GatewayLimits(forward_timeout_ticks=1_000))
    gw.submit("x", b"{}")
    gw.pump(_View("old"))  # type: ignore[arg-type]
    [fwd] = gw.take()
    assert isinstance(fwd, Forward) and fwd.to == "old"
    gw.pump(_View(None))  # type: ignore[arg-type]  # an election: no leader known yet
    assert gw.take() == []
    gw.pump(_View("new"))  # type: ignore[arg-type]
    [out] = gw.take()
    assert isinstance(out, Outcome) and out.token == "x" and out.fate == Fate.UNKNOWN
    gw.forward_replied(fwd.batch, At(5, 1))  # the old leader's late answer changes nothing
    assert gw.take() == []
