"""A tiny deterministic harness for interaction tests of the consensus core.

Nodes are real :class:`Raft` cores over :class:`MemoryStorage`; the "network" is a list of
messages the test delivers explicitly (one, a filtered subset, or all until quiet).  Each node
is driven exactly like production drives it: ready -> persist -> send (into the outbox) ->
apply (recorded) -> advance.  ``describe`` renders messages as short golden-style lines.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from grenex.consensus import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    Raft,
    Role,
    bootstrap,
)

_SHORT = {
    MessageType.APP: "APP",
    MessageType.APP_RESP: "APP_RESP",
    MessageType.VOTE: "VOTE",
    MessageType.VOTE_RESP: "VOTE_RESP",
    MessageType.PRE_VOTE: "PRE_VOTE",
    MessageType.PRE_VOTE_RESP: "PRE_VOTE_RESP",
    MessageType.HEARTBEAT: "HB",
    MessageType.HEARTBEAT_RESP: "HB_RESP",
    MessageType.SNAP: "SNAP",
    MessageType.TIMEOUT_NOW: "TIMEOUT_NOW",
}


def describe(m: Message) -> str:
    """One message as a short line, e.g. ``n1->n2 APP t2 prev=3/1 [4/2] commit=3``."""
    head = f"{m.src}->{m.dst} {_SHORT[m.type]} t{m.term}"
    t = m.type
    if t == MessageType.APP:
        ents = " ".join(f"{e.index}/{e.term}" for e in m.entries)
        quiet = " quiet" if m.reject else ""  # a commit notice that wants no answer
        return f"{head} prev={m.index}/{m.log_term} [{ents}] commit={m.commit}{quiet}"
    if t == MessageType.APP_RESP:
        if m.reject:
            return f"{head} reject={m.index} hint={m.reject_hint}/{m.log_term}"
        return f"{head} index={m.index}"
    if t in (MessageType.VOTE, MessageType.PRE_VOTE):
        return f"{head} last={m.index}/{m.log_term}" + (" transfer" if m.transfer else "")
    if t in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        return f"{head} {'reject' if m.reject else 'grant'}"
    if t == MessageType.HEARTBEAT:
        return f"{head} commit={m.commit}"
    if t == MessageType.SNAP:
        assert m.snapshot is not None
        return f"{head} snap={m.snapshot.index}/{m.snapshot.term}"
    return head


class Node:
    def __init__(self, raft: Raft, storage: MemoryStorage) -> None:
        self.raft = raft
        self.storage = storage
        self.applied: list[Entry] = []  # committed entries handed out, in order
        self.snapshots_installed: list[int] = []

    @property
    def id(self) -> str:
        return self.raft.id


class Cluster:
    def __init__(
        self,
        voters: Iterable[str],
        learners: Iterable[str] = (),
        *,
        seed: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_timeout_ticks: int = 10,
        **config: int,
    ) -> None:
        self.voters = sorted(voters)
        self.rng = random.Random(seed)
        self.cfg: dict[str, int | bool] = dict(
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            election_timeout_ticks=election_timeout_ticks,
            **config,
        )
        self.nodes: dict[str, Node] = {}
        self.outbox: list[Message] = []
        self.trace: list[str] = []
        for nid in self.voters:
            st = MemoryStorage()
            bootstrap(st, self.voters)
            self.nodes[nid] = self._make(nid, st)
        self.process_all()  # apply the bootstrap entries: everyone learns the voters
        for nid in sorted(learners):
            self.add_node(nid)

    def _make(self, nid: str, st: MemoryStorage) -> Node:
        cfg = Config(id=nid, **self.cfg)  # type: ignore[arg-type]
        return Node(Raft(cfg, st, random.Random(self.rng.random())), st)

    def add_node(self, nid: str) -> Node:
        """A brand-new empty node (it learns membership from the log or a snapshot)."""
        node = self._make(nid, MemoryStorage())
        self.nodes[nid] = node
        return node

    def restart(self, nid: str) -> Node:
        """Rebuild the core from its storage (all of it was synced), as after a crash."""
        old = self.nodes[nid]
        node = self._make(nid, old.storage)
        self.nodes[nid] = node
        self.process(nid)  # re-applies the committed log from the snapshot (membership too)
        return node

    def snapshot(self, nid: str, keep: int = 0) -> int:
        """The application snapshots at its applied index and compacts all but ``keep``
        entries below it; returns the snapshot index."""
        node = self.nodes[nid]
        r = node.raft
        idx = r.log.applied
        data = b"applied-to-%d" % idx
        node.storage.create_snapshot(idx, r.conf_state(), data)
        node.storage.compact(max(idx - keep, node.storage.first_index() - 1))
        return idx

    def __getitem__(self, nid: str) -> Raft:
        return self.nodes[nid].raft

    # -- driving ------------------------------------------------------------------------------

    def process(self, nid: str) -> list[Message]:
        """Handle one node's Ready the way a real driver does; returns the messages sent."""
        node = self.nodes[nid]
        r = node.raft
        sent: list[Message] = []
        while r.has_ready():
            rd = r.ready()
            st = node.storage
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                node.snapshots_installed.append(rd.snapshot.index)
            st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            st.sync()
            sent.extend(rd.messages)
            node.applied.extend(rd.committed_entries)
            r.advance(rd)
        self.outbox.extend(sent)
        self.trace.extend(describe(m) for m in sent)
        return sent

    def process_all(self) -> None:
        for nid in sorted(self.nodes):
            self.process(nid)

    def tick(self, nid: str, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].raft.tick()
        self.process(nid)

    def take(self, pred: Callable[[Message], bool] = lambda m: True) -> list[Message]:
        """Remove and return the outbox messages matching ``pred`` (to drop or deliver)."""
        keep: list[Message] = []
        taken: list[Message] = []
        for m in self.outbox:
            (taken if pred(m) else keep).append(m)
        self.outbox = keep
        return taken

    def deliver(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            if m.dst in self.nodes:
                self.nodes[m.dst].raft.step(m)
                self.process(m.dst)

    def deliver_one(self, src: str, dst: str, typ: MessageType | None = None) -> Message:
        """Deliver the first queued message from src to dst (of type typ)."""
        for i, m in enumerate(self.outbox):
            if m.src == src and m.dst == dst and (typ is None or m.type == typ):
                del self.outbox[i]
                self.deliver([m])
                return m
        raise AssertionError(f"no message {src}->{dst} {typ}: {[describe(m) for m in self.outbox]}")

    def stabilize(
        self, drop: Callable[[Message], bool] = lambda m: False, rounds_max: int = 1000
    ) -> None:
        """Deliver everything (except what ``drop`` drops) until nothing moves."""
        for _ in range(rounds_max):
            self.process_all()
            if not self.outbox:
                return
            batch = self.outbox
            self.outbox = []
            self.deliver(m for m in batch if not drop(m))
        raise AssertionError("did not stabilize")

    def elect(self, nid: str) -> None:
        self.nodes[nid].raft.campaign()
        self.stabilize()
        assert self[nid].role == Role.LEADER, self[nid].status()

    def propose(self, nid: str, data: bytes) -> tuple[int, int]:
        idx_term = self[nid].propose(data)
        self.process(nid)
        return idx_term

    # -- observing ----------------------------------------------------------------------------

    def role(self, nid: str) -> Role:
        return self.nodes[nid].raft.role

    def leaders(self) -> list[str]:
        return [nid for nid in sorted(self.nodes) if self[nid].role == Role.LEADER]

    def applied_data(self, nid: str) -> list[bytes]:
        return [e.data for e in self.nodes[nid].applied if e.kind == EntryKind.NORMAL]

    def log_terms(self, nid: str) -> list[tuple[int, int]]:
        """(index, term) of every entry in the node's log view."""
        log = self[nid].log
        out = []
        for i in range(log.first_index(), log.last_index() + 1):
            t = log.term(i)
            assert t is not None
            out.append((i, t))
        return out

    def conf(self, nid: str) -> ConfState:
        return self[nid].conf_state()
