"""The founding decision of an empty founding voter (node/founding.py), without sockets.

Proves: a history anywhere (a commit beyond the founding entries, or a voter rejoining) means
rejoin, even with others silent; founding needs *every* other founding voter's answer, each new
or holding only the founding entries; silence means wait; probe answers round-trip.
"""

from __future__ import annotations

import random

from grenex.codec.peer import JoinReply, ProbeReply
from grenex.consensus import Config, MemoryStorage, Raft, bootstrap
from grenex.node.founding import (
    FOUNDED,
    PROBING,
    REJOINING,
    PeerState,
    Verdict,
    decide,
    peer_state,
    probe_answer,
)

V = ("a", "b", "c")


def test_history_anywhere_means_rejoin_even_if_others_are_silent() -> None:
    d = decide("b", V, {"a": None, "c": PeerState(FOUNDED, 6, 6, "c")})
    assert d.verdict == Verdict.REJOIN and d.leader == "c" and "c" in d.reason
    d = decide("b", V, {"a": PeerState(REJOINING), "c": None})
    assert d.verdict == Verdict.REJOIN


def test_found_only_when_every_other_voter_answered_new_or_founding_only() -> None:
    assert decide("b", V, {"a": PeerState(PROBING), "c": PeerState(PROBING)}).verdict == (
        Verdict.FOUND
    )
    only_founding = PeerState(FOUNDED, 3, 4)  # the founding entries (+ an uncommitted no-op)
    assert decide("b", V, {"a": only_founding, "c": PeerState(PROBING)}).verdict == Verdict.FOUND


def test_silence_means_wait_never_found_on_partial_knowledge() -> None:
    d = decide("b", V, {"a": None, "c": PeerState(FOUNDED, 3, 3)})
    assert d.verdict == Verdict.WAIT and "a" in d.reason
    assert decide("b", V, {}).verdict == Verdict.WAIT
    assert decide("a", ("a",), {}).verdict == Verdict.FOUND  # a single voter asks nobody


def test_probe_answers_round_trip() -> None:
    st = MemoryStorage()
    bootstrap(st, list(V))
    raft = Raft(Config(id="a"), st, random.Random(1))
    assert peer_state(probe_answer(FOUNDED, raft)) == PeerState(FOUNDED, 3, 3, None)
    assert peer_state(probe_answer(PROBING, raft)) == PeerState(PROBING)
    assert peer_state(probe_answer(REJOINING, raft)).state == REJOINING  # type: ignore[union-attr]
    assert peer_state(JoinReply(True, False)) is None
    assert peer_state(ProbeReply(True, -1, 0)) is None
