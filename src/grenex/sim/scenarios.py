"""Scripted, deterministic scenarios: one exact interleaving, the real replica and consensus code.

Where the seeded simulation (``cluster.py``) draws faults at random, a scenario replays one
interleaving that once broke a guarantee, on the same parts: :class:`~grenex.replica.Replica`
over :class:`~grenex.sim.disk.SimDisk`, messages encoded by ``grenex.codec.raft`` over the
simulated :class:`~grenex.sim.network.Network`, and the outside checker
(:class:`~grenex.sim.checker.Watch`: one leader per term, every replica applies the same entry
at an index, acknowledged commands stay in the log).

:func:`lost_disk_voter` (issue 10, item 9): voters a, b, c; a leads; c is cut off; commands are
acknowledged by a with b (a majority); a and b crash, **b losing its whole disk**; b restarts
empty; c comes back.  With the rule (``rejoin_rule=True``, what the node does: an empty voter
that finds a cluster with a history runs in rejoin mode) b refuses c's pre-votes and votes, so c
cannot lead while a is down; once a restarts from its disk, a and c elect a leader holding
every acknowledged command, the leader re-admits b (``consensus.rejoin.Readmissions``: demote,
catch up, promote), and b votes again.  Without the rule (b bootstraps anew, as nodes did) b
votes for c and c overwrites the acknowledged commands: the checker fails.

The SPEC §8 scenarios (:func:`lost_replies`, :func:`key_rotation`,
:func:`nonce_window_eviction`) drive the full node path instead — a quiet
:class:`~grenex.sim.cluster.Simulation` (receiving-node checks, gateways, drivers, replicas)
with scripted accounts whose requests go to chosen nodes — and end with the simulation's own
final checks (every replica equal to the model; every acknowledged answer the model's first
outcome).

``python -m grenex.sim.scenarios`` runs every scenario (both variants of the first) and prints
the outcome.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grenex.codec import encode_json
from grenex.codec.raft import decode_message, encode_message
from grenex.codec.signer import Keyring, Signer
from grenex.codec.stamp import stamp
from grenex.consensus import Config, Message, Role, bootstrap
from grenex.consensus.rejoin import Readmissions
from grenex.replica import Replica, ReplicaConfig
from grenex.sim.checker import Acked, EnvInfo, SimFailure, Watch
from grenex.sim.cluster import KEYRING_SALT, Knobs, Simulation, sim_genesis
from grenex.sim.disk import SimDisk
from grenex.sim.network import Network

__all__ = [
    "ScenarioResult",
    "TrustResult",
    "key_rotation",
    "lost_disk_voter",
    "lost_replies",
    "nonce_window_eviction",
    "stale_member",
    "trust_scenarios",
]

ELECTION_TIMEOUT_TICKS = 12
IDS = ("a", "b", "c")


@dataclass
class ScenarioResult:
    acknowledged: int  # commands acknowledged before the crash
    leaders_while_a_down: list[str] = field(default_factory=list)
    readmitted: bool = False
    log: list[str] = field(default_factory=list)


class _World:
    def __init__(self, say: Callable[[str], None], ids: tuple[str, ...] = IDS) -> None:
        self.ids = ids
        self.net = Network(random.Random(1))
        self.keyring = Keyring(KEYRING_SALT)
        self.genesis = sim_genesis(self.keyring, list(IDS))
        self.signer = Signer(self.genesis.cluster_id, self.keyring)
        self.watch = Watch(self.genesis)
        self.now = 0
        self.disks: dict[str, SimDisk] = {}
        self.nodes: dict[str, Replica | None] = {}
        self.say = say
        self.vouching = True  # members that hear no leader ask for the configuration
        self.acked: list[Acked] = []  # the commands acknowledged so far, in order

    def start(self, nid: str, rejoin_tag: str = "") -> None:
        cfg = ReplicaConfig(
            raft=Config(
                id=nid,
                election_timeout_ticks=ELECTION_TIMEOUT_TICKS,
                heartbeat_interval_ticks=2,
                rejoin_tag=rejoin_tag,
            ),
            genesis=self.genesis,
            snapshot_interval_entries=1000,
        )
        seed = self.ids.index(nid) * 1000 + self.now
        self.nodes[nid] = Replica(cfg, self.disks[nid], random.Random(seed))

    def envelope(self, cmd: dict[str, Any]) -> bytes:
        """``cmd`` as the operator's next envelope, registered with the watch."""
        client = self.genesis.operator.client
        obj = dict(cmd, client=client, nonce=self.signer.next_nonce(client))
        text = encode_json(obj)
        key = self.keyring.key(client)
        data = self.signer.sign_text(client, text, key)
        info = EnvInfo(client, obj["nonce"], obj, hashlib.sha256(text).digest(), key.public_key)
        self.watch.register(data, info)
        return data

    def r(self, nid: str) -> Replica:
        rep = self.nodes[nid]
        assert rep is not None, f"{nid} is down"
        return rep

    def leader(self) -> str | None:
        best: tuple[int, str] | None = None
        for nid in self.ids:
            rep = self.nodes.get(nid)
            if (
                rep is not None
                and rep.raft.role == Role.LEADER
                and (best is None or rep.raft.term > best[0])
            ):
                best = (rep.raft.term, nid)
        return best[1] if best else None

    def step(self) -> None:
        self.now += 1
        net = self.net
        net.now = self.now
        for p in net.due():
            rep = self.nodes.get(p.dst)
            if rep is not None:
                rep.step(decode_message(p.payload))
        for nid in self.ids:
            rep = self.nodes.get(nid)
            if rep is not None:
                rep.tick()
        if self.vouching:
            self._vouch()
        for nid in self.ids:
            rep = self.nodes.get(nid)
            if rep is None or not rep.has_ready():
                continue

            def send(m: Message, src: str = nid) -> None:
                net.send(src, m.dst, encode_message(m))

            applied = rep.handle_ready(send)
            if rep.raft.role == Role.LEADER:
                self.watch.record_leader(rep.raft.term, nid)
            for a in applied:
                self.watch.record_applied(nid, a)

    def found(self) -> None:
        """a, b, c bootstrapped as the voters; a campaigns and leads."""
        for nid in IDS:
            self.disks[nid] = SimDisk()
            bootstrap(self.disks[nid], list(IDS))
            self.start(nid)
        self.r("a").raft.campaign()
        self.run_until(lambda: self.leader() == "a", 200, "a leads")

    def command(self, cmd: dict[str, Any]) -> None:
        """``cmd`` proposed to the leader, run until the leader applied it (which must not
        change meanwhile), and recorded in ``acked`` as acknowledged."""
        acked = self.acked
        ldr = self.leader()
        assert ldr is not None
        data = self.envelope(cmd)
        index, term = self.r(ldr).propose(data)
        self.run_until(lambda: self.r(ldr).applied_index >= index, 200, f"{index} applied on {ldr}")
        assert self.watch.log[index][0] == term, "the leader did not change"
        events = list(self.watch.model.outcomes[index][0])
        acked.append(
            Acked(f"#{len(acked) + 1}", data, index, term, False, index, None, events, None)
        )

    def market_then_cut(self, nid: str) -> None:
        """The scenarios' opening: a market added and applied on a, b and c; then ``nid`` is
        cut off."""
        self.command({"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
        last = self.acked[-1][2]
        self.run_until(lambda: all(self.r(n).applied_index >= last for n in IDS), 200, "all apply")
        self.cut(nid, True)
        self.say(f"t={self.now} {nid} is cut off")

    def run_until(self, cond: Callable[[], bool], ticks_max: int, what: str) -> None:
        for _ in range(ticks_max):
            if cond():
                return
            self.step()
        raise SimFailure(f"scenario: {what} not reached within {ticks_max} ticks")

    def _vouch(self) -> None:
        """What the node does when it has heard no leader for long (``Replica.voucher_due``):
        ask a member of its configuration, the next one each time, for the current
        configuration, over the network as it is (a cut link gets no answer)."""
        for nid in self.ids:
            rep = self.nodes.get(nid)
            voucher = rep.voucher_due() if rep is not None else None
            if voucher is None or rep is None:
                continue
            other = self.nodes.get(voucher)
            if other is None or (nid, voucher) in self.net.cut or (voucher, nid) in self.net.cut:
                continue
            members = sorted(other.raft.voters) + sorted(other.raft.learners)
            if rep.vouch(voucher, members):
                self.say(f"t={self.now} {nid} takes {voucher}'s word: {','.join(members)}")

    def cut(self, nid: str, on: bool) -> None:
        for other in self.ids:
            if other != nid:
                for link in ((nid, other), (other, nid)):
                    if on:
                        self.net.cut.add(link)
                    else:
                        self.net.cut.discard(link)


def _narrator(verbose: bool) -> tuple[list[str], Callable[[str], None]]:
    """A scenario's log lines and the function that adds one (and prints it when verbose)."""
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        if verbose:
            print(text)

    return lines, say


def lost_disk_voter(rejoin_rule: bool = True, verbose: bool = False) -> ScenarioResult:
    """The interleaving of issue 10, item 9 (see the module docstring).  Raises
    :class:`SimFailure` when a guarantee breaks."""
    lines, say = _narrator(verbose)
    w = _World(say)
    w.found()
    acked, command = w.acked, w.command
    w.market_then_cut("c")
    for i in range(5):
        command(
            {
                "type": "place",
                "id": f"o{i}",
                "market": "M",
                "side": "buy",
                "qty": "1",
                "price": str(100 + i),
            }
        )
    say(f"t={w.now} {len(acked)} commands acknowledged by a and b; a and b crash, b's disk lost")
    w.nodes["a"] = None
    w.nodes["b"] = None
    w.disks["b"] = SimDisk()  # the whole disk is gone
    if rejoin_rule:
        w.start("b", rejoin_tag="b-2")  # what an empty voter that finds a history runs
    else:
        bootstrap(w.disks["b"], list(IDS))  # what nodes did: found anew
        w.start("b")
    w.cut("c", False)
    say(f"t={w.now} b restarts empty ({'rejoin mode' if rejoin_rule else 'bootstrapped'}); c back")
    result = ScenarioResult(len(acked), log=lines)
    for _ in range(25 * ELECTION_TIMEOUT_TICKS):
        w.step()
        ldr = w.leader()
        if ldr is not None and ldr not in result.leaders_while_a_down:
            result.leaders_while_a_down.append(ldr)
            say(f"t={w.now} {ldr} leads term {w.r(ldr).raft.term} while a is down")
            # the new leader takes a command: it lands where an acknowledged one was
            w.r(ldr).propose(w.envelope({"type": "cancel", "id": "x"}))
    if result.leaders_while_a_down:
        w.watch.check_history(acked)
        raise SimFailure("a leader was elected without the acknowledged commands")
    say(f"t={w.now} nobody leads while a is down; a restarts from its disk")
    w.start("a")
    w.run_until(lambda: w.leader() is not None, 400, "a leader after a restarts")
    readmissions = Readmissions()

    def readmitted() -> bool:
        ldr = w.leader()
        b = w.r("b").raft
        if ldr is not None and w.now % 10 == 0:  # b asks about every 10 ticks, as the node
            readmissions.request(w.r(ldr).raft, "b", "b-2", b.rejoin_marked, b.log.applied)
        if ldr is not None:
            for line in readmissions.step(w.r(ldr).raft):
                say(f"t={w.now} {ldr}: {line}")
        return not b.rejoining

    w.run_until(readmitted, 600, "b re-admitted")
    result.readmitted = True
    ldr = w.leader()
    assert ldr is not None
    w.run_until(
        lambda: all(w.r(n).applied_index == w.r(ldr).raft.log.committed for n in IDS),
        400,
        "every replica applies everything",
    )
    w.watch.check_history(acked)
    hashes = {w.r(n).state_hash() for n in IDS}
    if len(hashes) != 1:
        raise SimFailure("replicas differ after b's re-admission")
    say(f"t={w.now} b is a voter again; every acknowledged command is in the log")
    return result


def stale_member(vouching: bool = True, verbose: bool = False) -> ScenarioResult:
    """A member restarted with a stale configuration, whose leader is now a node added after
    it (found by the seeded simulation: seed 169 under quiet commit notices).  Voters a, b, c;
    c is cut off; a adds e (a learner, then a voter) and hands e the leadership; c comes back
    knowing only a, b, c and drops everything e sends ("not a member").  With vouching (what
    the node does) c asks a member it knows for the configuration, steps e's messages and
    catches up; without it c never does.  Raises :class:`SimFailure` when c does not catch
    up (or a guarantee breaks)."""
    lines, say = _narrator(verbose)
    w = _World(say, ("a", "b", "c", "e"))
    w.vouching = vouching
    w.found()
    acked, command = w.acked, w.command
    w.market_then_cut("c")
    w.disks["e"] = SimDisk()  # a new node: no configuration until the leader's first message
    w.start("e")
    w.r("a").add_learner("e")
    w.run_until(lambda: "e" in w.r("a").raft.learners, 200, "e is a learner")
    w.run_until(lambda: w.r("e").applied_index >= w.r("a").raft.log.committed, 400, "e caught up")
    w.r("a").promote("e")
    w.run_until(lambda: "e" in w.r("a").raft.voters, 200, "e is a voter")
    w.run_until(
        lambda: w.r("e").raft.log.last_index() == w.r("a").raft.log.last_index(), 200, "e matches"
    )
    w.r("a").transfer_leadership("e")
    w.run_until(lambda: w.leader() == "e", 200, "e leads")
    say(f"t={w.now} e (added while c was away) leads term {w.r('e').raft.term}")
    for i in range(3):
        command(
            {
                "type": "place",
                "id": f"o{i}",
                "market": "M",
                "side": "buy",
                "qty": "1",
                "price": str(100 + i),
            }
        )
    w.cut("c", False)
    say(f"t={w.now} c is back, knowing only {','.join(w.r('c').raft.voters)}")
    w.run_until(
        lambda: (
            w.r("c").applied_index == w.r("e").raft.log.committed and "e" in w.r("c").raft.voters
        ),
        30 * ELECTION_TIMEOUT_TICKS,
        "c catches up with e's log",
    )
    w.watch.check_history(acked)
    if len({w.r(n).state_hash() for n in ("a", "b", "c", "e")}) != 1:
        raise SimFailure("replicas differ after c caught up")
    say(f"t={w.now} c caught up: voters {','.join(w.r('c').raft.voters)}")
    return ScenarioResult(len(acked), log=lines)


def main() -> int:
    failed = 0
    for rule in (True, False):
        try:
            res = lost_disk_voter(rejoin_rule=rule)
            print(f"rejoin_rule={rule}: ok ({res.acknowledged} acknowledged, readmitted)")
            if not rule:
                failed += 1  # the old behaviour must be caught
        except SimFailure as e:
            print(f"rejoin_rule={rule}: FAILED: {e}")
            failed += rule
    for vouching in (True, False):
        try:
            res = stale_member(vouching)
            print(f"stale_member vouching={vouching}: ok ({res.acknowledged} acknowledged)")
            failed += not vouching  # without vouching the stale member must stay behind
        except SimFailure as e:
            print(f"stale_member vouching={vouching}: FAILED: {e}")
            failed += vouching
    for name, run in (
        ("lost_replies", lost_replies),
        ("key_rotation", key_rotation),
        ("nonce_window_eviction", nonce_window_eviction),
    ):
        try:
            tres = run()
            print(f"{name}: ok ({len(tres.answers)} answers, {tres.executed} executed)")
        except SimFailure as e:
            print(f"{name}: FAILED: {e}")
            failed += 1
    return 1 if failed else 0


# -- SPEC §8 on the real node path: scripted clients over a quiet simulated cluster --------------


@dataclass
class TrustResult:
    """What a §8 scenario saw: each request's answer, in order, as ``(label, kind, detail)``
    (kind ``ok``/``dup``/``invalid``; detail: the events' types, the first outcome's seq, or
    the reason)."""

    answers: list[tuple[str, str, Any]] = field(default_factory=list)
    executed: int = 0  # envelopes the model executed, over the run
    stale: int = 0  # envelopes refused stale_nonce (before the log or at apply)

    def kinds(self, label: str) -> list[tuple[str, Any]]:
        return [(k, d) for lab, k, d in self.answers if lab == label]


class _Script:
    """Drives a :class:`~grenex.sim.cluster.Simulation` (quiet knobs: no faults) by hand:
    requests from scripted accounts to chosen nodes, with the replies awaited; everything goes
    through the nodes' receiving-node checks, gateways, drivers and replicas, watched by the
    simulation's checker."""

    def __init__(self, seed: int = 7, verbose: bool = False) -> None:
        self.sim = Simulation(seed, knobs=Knobs.quiet(), verbose=verbose)
        self.result = TrustResult()
        self.acked: list[Acked] = []
        self._seq = 0
        sim = self.sim
        self.run_until(lambda: sim.leader() is not None and not sim._admin_ops, "a leader")
        self.run_until(lambda: sim.admin.op is None, "the markets")
        self.run_until(self.quiet, "every replica applies the markets")

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.sim.step()

    def run_until(self, cond: Callable[[], bool], what: str, ticks_max: int = 600) -> None:
        for _ in range(ticks_max):
            if cond():
                return
            self.sim.step()
        raise SimFailure(f"scenario: {what} not reached within {ticks_max} ticks")

    def quiet(self) -> bool:
        return self.sim._converged()

    def leader(self) -> str:
        ldr = self.sim.leader()
        assert ldr is not None
        return ldr.id

    def follower(self, k: int = 0) -> str:
        ldr = self.leader()
        return [n for n in sorted(self.sim.nodes) if n != ldr][k]

    def send(self, client: str, data: bytes, node: str) -> int:
        self._seq += 1
        self.sim.net.send(client, node, ("req", self._seq, 1, data))
        return self._seq

    def wait(self, client: str, seq: int, label: str, data: bytes) -> tuple[str, Any]:
        inbox = self.sim.inboxes[client]
        found: list[tuple[str, Any]] = []

        def arrived() -> bool:
            found.extend(p for p in inbox if p[1][1] == seq)
            return bool(found)

        self.run_until(arrived, f"the answer to {label}")
        node, payload = found[0]
        inbox[:] = [p for p in inbox if p[1][1] != seq]
        return self._record(client, label, data, node, payload)

    def _record(
        self, client: str, label: str, data: bytes, node: str, payload: Any
    ) -> tuple[str, Any]:
        kind = payload[0]
        who = f"{client}:{label}"
        if kind == "ok":
            a = payload[3]
            if a.data != data:
                raise SimFailure(f"{node} acknowledged {who} with another entry")
            self.acked.append(Acked.of(who, data, a))
            detail: Any = ("duplicate", a.outcome_seq) if a.duplicate else _types(a.events)
        elif kind == "dup":
            _, _, _, oseq, otime, results = payload
            self.acked.append(Acked(who, data, 0, 0, True, oseq, otime, [], results))
            detail = oseq
        elif kind == "invalid":
            detail = payload[3]
        else:  # refused, busy, unknown: not expected on a quiet cluster
            raise SimFailure(f"{who} answered {kind} by {node}: {payload[3]}")
        self.result.answers.append((label, kind, detail))
        return kind, detail

    def request(self, client: str, data: bytes, node: str, label: str) -> tuple[str, Any]:
        return self.wait(client, self.send(client, data, node), label, data)

    def place(self, client: str, oid: str, **kw: Any) -> bytes:
        cmd: dict[str, Any] = {"type": "place", "id": oid, "market": "M", "side": "buy"}
        cmd.update({"qty": "1", "price": "100"}, **kw)
        return self.sim.envelope(client, cmd)

    def register(self, name: str) -> None:
        c = self.sim.script_account(name)
        k = self.sim.key(name, 0)
        data = self.sim.envelope(name, {"type": "register", "key": k.public_key}, k)
        kind, detail = self.request(name, data, self.follower(), "register")
        assert (kind, detail) == ("ok", ["Registered"]), (kind, detail)
        c.registered = True

    def propose_directly(self, data: bytes) -> None:
        """Onto the leader's log without the §8 prechecks: what a leader that has not applied
        the account's latest entries yet may append (checked again at apply)."""
        ldr = self.sim.leader()
        assert ldr is not None and ldr.replica is not None
        t = self.sim.wall_ms(ldr)
        ldr.replica.raft.propose_many([stamp(t, data)])

    def applied_everywhere(self, data: bytes) -> int:
        """Wait until every replica applied the (last) entry holding ``data``; its index."""
        log = self.sim.watch.log

        def done() -> bool:
            return any(e[2] == data for e in log.values()) and self.quiet()

        self.run_until(done, "the entry applied everywhere")
        return max(i for i, e in log.items() if e[2] == data)

    def finish(self) -> TrustResult:
        """Every replica equal and held to the model; every acknowledged answer too."""
        self.run_until(self.quiet, "convergence")
        sim = self.sim
        sim._final_checks()
        sim.watch.check_history(self.acked)
        for name, c in sorted(sim.by_name.items()):
            if (
                name in sim.inboxes
                and sim.watch.model.key_of(name) != sim.key(name, c.gen).public_key
            ):
                raise SimFailure(f"{name}'s key is not the one its script holds")
        model = sim.watch.model
        self.result.executed = len(model.executions)
        self.result.stale = sum(
            1
            for evs, _dup, _f in model.outcomes.values()
            if len(evs) == 1 and getattr(evs[0], "reason", "") == "stale_nonce"
        ) + sum(1 for _l, k, d in self.result.answers if (k, d) == ("invalid", "stale_nonce"))
        return self.result


def _types(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def lost_replies(verbose: bool = False) -> TrustResult:
    """A reply is lost; the client sends the *same envelope* again, to other nodes: each answers
    from the account's window with the first outcome (``duplicate``), before the log.  A copy
    that reaches the log anyway (appended by a leader that skipped the check) runs nothing and
    answers the first outcome too."""
    s = _Script(verbose=verbose)
    s.register("u")
    p = s.place("u", "o1", qty="2")
    f = s.follower()
    s.sim.net.cut.add((f, "u"))  # the reply to u is lost
    s.send("u", p, f)
    first = s.applied_everywhere(p)
    s.sim.net.cut.discard((f, "u"))
    s.sim.inboxes["u"].clear()
    s.request("u", p, s.follower(1), "retry at another follower")
    s.request("u", p, s.leader(), "retry at the leader")
    s.request("u", p, f, "retry where it was sent")
    s.propose_directly(p)
    again = s.applied_everywhere(p)
    assert again > first
    s.request("u", s.place("u", "o2"), s.leader(), "the next order")
    res = s.finish()
    res.answers.append(("first index", "index", first))
    return res


def key_rotation(verbose: bool = False) -> TrustResult:
    """An account trades, rotates its key mid-run and trades on with the new one; an envelope
    signed by the old key is refused ``bad_signature`` before the log and, appended anyway, is
    a logged ``rejected`` event that changes nothing; a retry of an envelope the old key signed
    (it ran before the rotation) is ``bad_signature`` too: §8 checks the signer (check 3)
    before the window (check 5), so the client asks ``order`` for its fate."""
    s = _Script(verbose=verbose)
    s.register("u")
    sim = s.sim
    c = sim.by_name["u"]
    o1 = s.place("u", "o1")
    s.request("u", o1, s.follower(), "o1 with the first key")
    rot = sim.envelope("u", {"type": "rotate_key", "key": sim.key("u", 1).public_key})
    s.request("u", rot, s.follower(1), "rotate")
    c.gen = 1
    s.run_until(s.quiet, "the rotation applied everywhere")
    s.request("u", s.place("u", "o2", price="99"), s.follower(), "o2 with the new key")
    old = sim.envelope("u", _sell_order("o3"), sim.key("u", 0))
    s.request("u", old, s.follower(), "o3 with the old key")
    s.request("u", old, s.leader(), "o3 with the old key, at the leader")
    s.propose_directly(old)
    s.applied_everywhere(old)
    s.request("u", o1, s.leader(), "o1 again after the rotation")
    s.request("u", rot, s.leader(), "the rotation again")
    cancel = sim.envelope("u", {"type": "cancel", "id": "o2"})
    s.request("u", cancel, s.follower(), "cancel o2 with the new key")
    return s.finish()


def _sell_order(oid: str) -> dict[str, Any]:
    return {"type": "place", "id": oid, "market": "M", "side": "sell", "qty": "1", "price": "120"}


def nonce_window_eviction(verbose: bool = False) -> TrustResult:
    """An account keeps more than ``limits.nonces`` (64) envelopes in flight: 70 at once, spread
    over the nodes, then retried.  Its first nonces leave the window: retried, they are
    ``stale_nonce`` (they may have executed: ``order`` tells), never executed twice.  Envelopes
    sent after 64 higher nonces ran are refused ``stale_nonce`` and never run.  Another
    account's retry, all along, is still answered from its own window."""
    s = _Script(verbose=verbose)
    s.register("u")
    s.register("w")
    w1 = s.place("w", "w1", price="90")
    s.request("w", w1, s.follower(), "w1")
    nodes = sorted(s.sim.nodes)
    burst = [s.place("u", f"b{i}", price=str(80 + i % 10)) for i in range(70)]
    sent = [(s.send("u", d, nodes[i % len(nodes)]), d) for i, d in enumerate(burst)]
    for i, (seq, d) in enumerate(sent):
        s.wait("u", seq, f"b{i}", d)
    s.run_until(s.quiet, "the burst applied everywhere")
    for i in (0, 5, 6, 69):
        s.request("u", burst[i], nodes[i % len(nodes)], f"b{i} again")
    s.request("w", w1, s.leader(), "w1 again")
    late = [s.place("u", f"l{i}") for i in range(70)]
    sent = [(s.send("u", d, nodes[i % len(nodes)]), d) for i, d in enumerate(late[1:], 1)]
    for seq, d in sent:
        s.wait("u", seq, "late burst", d)
    s.run_until(s.quiet, "the late burst applied everywhere")
    s.request("u", late[0], s.follower(), "l0 after 69 higher nonces")
    s.propose_directly(late[0])  # appended anyway: rejected at apply, nothing runs
    s.applied_everywhere(late[0])
    s.request("w", w1, s.follower(1), "w1 once more")
    return s.finish()


def trust_scenarios(verbose: bool = False) -> dict[str, TrustResult]:
    return {
        "lost_replies": lost_replies(verbose),
        "key_rotation": key_rotation(verbose),
        "nonce_window_eviction": nonce_window_eviction(verbose),
    }


if __name__ == "__main__":
    raise SystemExit(main())
