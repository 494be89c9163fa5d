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

``python -m grenex.sim.scenarios`` runs both variants and prints the outcome.
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
from grenex.consensus import Config, Message, Role, bootstrap
from grenex.consensus.rejoin import Readmissions
from grenex.replica import Replica, ReplicaConfig
from grenex.sim.checker import Acked, EnvInfo, SimFailure, Watch
from grenex.sim.cluster import KEYRING_SALT, sim_genesis
from grenex.sim.disk import SimDisk
from grenex.sim.network import Network

__all__ = ["ScenarioResult", "lost_disk_voter"]

ELECTION_TIMEOUT_TICKS = 12
IDS = ("a", "b", "c")


@dataclass
class ScenarioResult:
    acknowledged: int  # commands acknowledged before the crash
    leaders_while_a_down: list[str] = field(default_factory=list)
    readmitted: bool = False
    log: list[str] = field(default_factory=list)


class _World:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.net = Network(random.Random(1))
        self.keyring = Keyring(KEYRING_SALT)
        self.genesis = sim_genesis(self.keyring, list(IDS))
        self.signer = Signer(self.genesis.cluster_id, self.keyring)
        self.watch = Watch(self.genesis)
        self.now = 0
        self.disks: dict[str, SimDisk] = {}
        self.nodes: dict[str, Replica | None] = {}
        self.say = say

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
        seed = IDS.index(nid) * 1000 + self.now
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
        for nid in IDS:
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
        for nid in IDS:
            rep = self.nodes.get(nid)
            if rep is not None:
                rep.tick()
        for nid in IDS:
            rep = self.nodes.get(nid)
            if rep is None or not rep.has_ready():
                continue

            def send(m: Message, src: str = nid) -> None:
                net.send(src, m.dst, encode_message(m))

            applied = rep.handle_ready(send)
            if rep.raft.role == Role.LEADER:
                self.watch.record_leader(rep.raft.term, nid)
            for a in applied:
                self.watch.record_applied(
                    nid,
                    a.index,
                    a.term,
                    a.kind,
                    a.data,
                    a.time,
                    a.events,
                    a.duplicate,
                    a.outcome_seq,
                    a.outcome_time,
                    a.results_json,
                )

    def run_until(self, cond: Callable[[], bool], ticks_max: int, what: str) -> None:
        for _ in range(ticks_max):
            if cond():
                return
            self.step()
        raise SimFailure(f"scenario: {what} not reached within {ticks_max} ticks")

    def cut(self, nid: str, on: bool) -> None:
        for other in IDS:
            if other != nid:
                for link in ((nid, other), (other, nid)):
                    if on:
                        self.net.cut.add(link)
                    else:
                        self.net.cut.discard(link)


def lost_disk_voter(rejoin_rule: bool = True, verbose: bool = False) -> ScenarioResult:
    """The interleaving of issue 10, item 9 (see the module docstring).  Raises
    :class:`SimFailure` when a guarantee breaks."""
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        if verbose:
            print(text)

    w = _World(say)
    for nid in IDS:
        w.disks[nid] = SimDisk()
        bootstrap(w.disks[nid], list(IDS))
        w.start(nid)
    w.r("a").raft.campaign()
    w.run_until(lambda: w.leader() == "a", 200, "a leads")
    acked: list[Acked] = []

    def command(cmd: dict[str, Any]) -> None:
        data = w.envelope(cmd)
        index, term = w.r("a").propose(data)
        w.run_until(lambda: w.r("a").applied_index >= index, 200, f"{index} applied on a")
        entry = w.watch.log[index]
        assert entry[0] == term, "the leader did not change"
        events = list(w.watch.model.outcomes[index][0])
        who = f"#{len(acked) + 1}"
        acked.append(Acked(who, data, index, term, False, index, None, events, None))

    command({"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
    w.run_until(lambda: all(w.r(n).applied_index >= acked[-1][2] for n in IDS), 200, "all apply")
    w.cut("c", True)
    say(f"t={w.now} c is cut off")
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
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
