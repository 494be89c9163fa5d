"""Founding: a listed voter that starts with empty storage asks before it bootstraps.

Theory of operation
-------------------
``bootstrap`` writes the founding entries (one ADD_VOTER per voter, committed).  Done blindly
by a voter that *lost* its log (an in-memory node restarted, a lost disk), it makes a voter
that acknowledged entries and then forgot them: it votes for a candidate without them, and
acknowledged commands vanish (issue 10, item 9: 19 of 20 acknowledged orders gone).  So a node
given ``--voters`` whose storage is empty first **probes** the other founding voters over the
peer service (``codec.peer.Probe``), each answering its state (``ProbeReply``, see
:func:`probe_answer`): probing (empty, asking too), founded (with its commit and last index)
or rejoining.
:func:`decide` then says:

* **REJOIN** if any answer shows a history: founded with a commit index beyond the founding
  entries (``commit > len(voters)``), or rejoining itself.  The node does not bootstrap; its
  consensus core runs in rejoin mode (``Config.rejoin_tag``: it never votes nor campaigns,
  see ``consensus/raft.py``), receives the log as the leader sends it, and asks the leader to
  re-admit it (``codec.peer.Rejoin``, about once a second) until it is a voter again: the
  leader demotes it with a REJOIN entry, waits until its match index reaches the commit index
  of the request, and promotes it (``consensus/rejoin.py``, run by the leader's driver).
* **FOUND** if *every* other founding voter answered, each probing or founded with nothing
  beyond the founding entries: a brand-new cluster; bootstrap as before.
* **WAIT** otherwise: some did not answer.  Never found on partial knowledge: ask again
  every ``PROBE_INTERVAL_S``, logging who is missing.

While probing, the node's core is a placeholder over the still-empty storage and consensus
messages are refused (dropped, :meth:`Founding.accepts_raft`), so nothing is written before the
decision; the driver's turn hook (:meth:`Founding.turn`) then builds the real core: bootstrapped,
or in rejoin mode.  The same hook runs the leader's side (``consensus.rejoin.Readmissions``).
The decision logic is pure (:func:`decide`, :func:`peer_state`, :func:`probe_answer`); the
asyncio part is the probe/rejoin loop in :meth:`Founding.run`.

A voter that cannot know (the others are gone too) waits: with in-memory logs, a majority of
voters restarted is a lost cluster, and nothing here pretends otherwise.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from grenex.codec.peer import PeerReply, Probe, ProbeReply, Rejoin, RejoinReply
from grenex.consensus import Raft, Role, bootstrap
from grenex.consensus.rejoin import NOT_MEMBER, Readmissions
from grenex.node.peers import AskError, Peers
from grenex.replica import Replica

__all__ = [
    "FOUNDED",
    "PROBING",
    "REJOINING",
    "Decision",
    "Founding",
    "PeerState",
    "Verdict",
    "decide",
    "peer_state",
    "probe_answer",
]

log = logging.getLogger("grenex.node.founding")

PROBING = "probing"  # empty storage, asking the others (or about to)
FOUNDED = "founded"  # has a log (bootstrapped, restarted with its log, or a member)
REJOINING = "rejoining"  # lost its log; waits to be re-admitted

PROBE_INTERVAL_S = 0.5  # between two probe rounds
REJOIN_INTERVAL_S = 1.0  # between two rejoin requests
ANSWER_TIMEOUT_MS = 1_000  # per probe or rejoin request


@dataclass(frozen=True, slots=True)
class PeerState:
    """One founding voter's answer to a probe."""

    state: str  # PROBING | FOUNDED | REJOINING
    commit: int = 0
    last: int = 0
    leader: str | None = None


class Verdict(enum.Enum):
    FOUND = "found"
    REJOIN = "rejoin"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    leader: str | None = None  # a leader some answer named (where to ask to rejoin)


def probe_answer(state: str, raft: Raft) -> ProbeReply:
    """What a node answers to a :class:`Probe`."""
    st = raft.status()
    if state == PROBING:
        return ProbeReply(False, 0, 0)
    return ProbeReply(
        state == FOUNDED, st.commit, st.last_index, rejoining=state == REJOINING, leader=st.leader
    )


def peer_state(reply: PeerReply) -> PeerState | None:
    """A probe answer as a :class:`PeerState`, or None when it is not one (no answer)."""
    if not isinstance(reply, ProbeReply) or reply.commit < 0 or reply.last_index < 0:
        return None
    if reply.rejoining:
        state = REJOINING
    else:
        state = FOUNDED if reply.founded else PROBING
    return PeerState(state, reply.commit, reply.last_index, reply.leader)


def decide(me: str, voters: Sequence[str], answers: Mapping[str, PeerState | None]) -> Decision:
    """Found, rejoin or wait, from the other founding voters' answers (None: no answer)."""
    founding_entries = len(voters)
    others = sorted(v for v in voters if v != me)
    leader = next(
        (a.leader for v in others if (a := answers.get(v)) is not None and a.leader), None
    )
    for v in others:
        a = answers.get(v)
        if a is None:
            continue
        if a.state == FOUNDED and a.commit > founding_entries:
            why = f"{v} has committed up to {a.commit} (beyond the {founding_entries} founding)"
            return Decision(Verdict.REJOIN, why, leader)
        if a.state == REJOINING:
            return Decision(Verdict.REJOIN, f"{v} lost its log too: the cluster has a past", leader)
    missing = [v for v in others if answers.get(v) is None]
    if missing:
        return Decision(Verdict.WAIT, f"no answer from {', '.join(missing)}", leader)
    return Decision(Verdict.FOUND, "every founding voter is new or holds only the founding")


class Founding:
    """One node's founding state, its probe/rejoin loop, and the leader's re-admissions.

    Wiring (node.py): ``turn`` as a driver turn hook; ``on_probe``/``on_rejoin`` and
    ``accepts_raft`` in the peer API; ``run`` as a task when :attr:`probing`.
    """

    def __init__(self, me: str, voters: Sequence[str], replica: Replica, probing: bool) -> None:
        self.me = me
        self.voters = tuple(voters)
        self.replica = replica
        self.state = PROBING if probing else FOUNDED
        self.tag = os.urandom(8).hex()  # this incarnation, for its REJOIN entry
        self.pending: Verdict | None = None  # decided, not yet applied by the driver
        self.readmissions = Readmissions()
        self._leader_hint: str | None = None

    @property
    def probing(self) -> bool:
        return self.state == PROBING

    def accepts_raft(self) -> bool:
        """False while probing: consensus messages are dropped until the decision."""
        return self.state != PROBING

    # -- driver side ----------------------------------------------------------------------------

    def turn(self, replica: Replica) -> None:
        """The driver's turn hook (between two Readys): carry out a decision, then the
        leader's re-admissions."""
        verdict, self.pending = self.pending, None
        if verdict is not None:
            old = replica.raft
            assert replica.storage.last_index() == 0 and not old.has_ready(), "probing wrote"
            if verdict == Verdict.FOUND:
                bootstrap(replica.storage, list(self.voters))
                replica.raft = Raft(old.config, replica.storage, old.rng)
                self.state = FOUNDED
            else:
                cfg = replace(old.config, rejoin_tag=self.tag)
                replica.raft = Raft(cfg, replica.storage, old.rng)
                self.state = REJOINING
        raft = replica.raft
        for line in self.readmissions.step(raft):
            log.warning("rejoin: %s", line)
        if self.state == REJOINING and not raft.rejoining:
            self.state = FOUNDED
            log.warning("rejoin: %s is a voter again", self.me)

    # -- peer service ---------------------------------------------------------------------------

    def on_probe(self, msg: Probe) -> ProbeReply:
        return probe_answer(self.state, self.replica.raft)

    async def on_rejoin(self, msg: Rejoin) -> RejoinReply:
        """Leader: a member that lost its log asks to be re-admitted."""
        raft = self.replica.raft
        if raft.role != Role.LEADER:
            return RejoinReply(False, f"not the leader (leader: {raft.lead})")
        if not msg.tag or " " in msg.tag or len(msg.tag) > 64 or msg.applied < 0:
            return RejoinReply(False, "a rejoin needs a tag (no spaces) and an applied index")
        state = self.readmissions.request(raft, msg.src, msg.tag, msg.marked, msg.applied)
        return RejoinReply(state != NOT_MEMBER, "", state)

    # -- the loop -------------------------------------------------------------------------------

    async def run(
        self, peers: Peers, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Probe until decided; then, if rejoining, ask the leader until re-admitted.
        ``sleep`` is the node's (a manual clock in in-process tests)."""
        others = [v for v in self.voters if v != self.me]

        async def probe_all() -> Decision:
            async def one(node: str) -> PeerState | None:
                try:
                    return peer_state(await peers.ask(node, Probe(self.me), ANSWER_TIMEOUT_MS))
                except AskError:
                    return None

            got = await asyncio.gather(*(one(v) for v in others))
            decision = decide(self.me, self.voters, dict(zip(others, got, strict=True)))
            self._leader_hint = decision.leader
            return decision

        said = ""
        while self.state == PROBING and self.pending is None:
            decision = await probe_all()
            if decision.verdict != Verdict.WAIT:
                log.warning("founding: %s (%s)", decision.verdict.value, decision.reason)
                self.pending = decision.verdict
                break
            if decision.reason != said:
                log.warning("founding: not founding yet: %s; asking again", decision.reason)
                said = decision.reason
            await sleep(PROBE_INTERVAL_S)
        while self.pending is not None:  # the driver applies it at its next turn
            await sleep(0.05)
        said = ""
        while self.state == REJOINING and self.replica.raft.rejoining:
            raft = self.replica.raft
            leader = raft.lead if raft.lead and raft.lead != self.me else self._leader_hint
            if leader is None:  # ask the founding voters again who leads
                leader = (await probe_all()).leader
            if leader is None:
                what = "no leader known: waiting for one (it needs a majority without me)"
            else:
                msg = Rejoin(self.me, True, self.tag, raft.rejoin_marked, raft.log.applied)
                try:
                    reply = await peers.ask(leader, msg, ANSWER_TIMEOUT_MS)
                    if isinstance(reply, RejoinReply):
                        what = f"asked {leader} to re-admit me: {reply.state or reply.why}"
                        if reply.state == NOT_MEMBER:
                            what += " (not a member: start this node with --join)"
                        elif not reply.ok:
                            self._leader_hint = None
                    else:
                        what = f"asked {leader} to re-admit me: unexpected {type(reply).__name__}"
                except AskError as e:
                    what = f"asked {leader} to re-admit me: {e}"
                    self._leader_hint = None
            if what != said:
                log.warning("rejoin: %s", what)
                said = what
            await sleep(REJOIN_INTERVAL_S)
