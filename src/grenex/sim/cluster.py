"""The deterministic simulation: real consensus, replica, gateway and engine code under faults.

Theory of operation
-------------------
One seed makes one ``random.Random``; every knob (cluster size, loss, duplication, delays,
fault rates, snapshot interval and delay, the gateway's bounds and deadlines, client count and
patience) and every event (which packet is lost, which node crashes when, what each client
orders) is drawn from it, so ``--seed N`` replays a run exactly.  There is no wall clock: time
is the simulation tick, and each node ticks with its own small probability of skipping a tick
(clock drift).

Each simulated node runs what a real node runs, unchanged: a :class:`~grenex.replica.Replica`,
its :class:`~grenex.replica.gateway.Gateway` and the shared
:class:`~grenex.replica.driver.Driver` turn; only the I/O around them is simulated.  Per tick:
deliver due packets (consensus messages, forwards and their answers, client requests and
replies), then one driver turn per live node — ticks, messages, ``gateway.pump``, and per Ready
stage → flush (inline, on the :class:`SimDisk`, which may crash the node right there:
mid-persist) → send → apply → the gateway matches outcomes — then ship the gateway's outputs,
then let clients retry or start new commands.

The order path, as on a real cluster:

* a client submits a command to **any** node (drawn at random, sticky while it answers); the
  node's gateway proposes it if it leads, else **forwards** it in a batch to the leader it
  knows.  Forwards and their answers (``At``/``NotLeader``/``Declined``) travel as typed
  :mod:`grenex.codec.peer` messages (encoded, signed, decoded) over the same faulty network:
  lost, duplicated, delayed, reordered, partitioned; an answer may be slow
  (``fwd_answer_delay``) and reaches whichever incarnation of the forwarder runs by then (the
  gateway's batch numbers, unique across restarts, must keep them apart); a forward to a node
  that is down is refused at once (``forward_failed``: surely not delivered);
* every command is a SPEC §8 signed envelope.  Clients hold deterministic keys
  (:class:`~grenex.codec.signer.Keyring` with a fixed salt; the genesis names the founding
  voters, without certificates: the simulator is pure).  Each account registers first, then
  places, cancels and amends with counter nonces (:class:`~grenex.codec.signer.Signer`); now
  and then an account rotates its key and trades on with the new one, and sends an envelope
  signed by a key it rotated away (which must be refused ``bad_signature``, before the log or
  as a logged ``rejected`` event).  The operator opens the markets.  A retry resends the
  *same envelope bytes*: exactly-once is the account's nonce window;
* the receiving node runs §8 checks 1–5 against its applied state, as the node's client API
  does: a failure is answered INVALID (``ERR_GRENEX_BAD_REQUEST``), a duplicate with the first
  outcome; the leader runs them again before it appends (the gateway's ``precheck``).  Every
  replica verifies through one shared :class:`~grenex.replica.verdicts.Verdicts` (a pure
  function, so sharing it across nodes changes no decision; it saves re-verifying);
* outcomes are the gateway's: APPLIED (from the node's *own* apply, with index, term and
  events), REFUSED or BUSY (never proposed through that attempt), INVALID (failed a §8 check
  before the log) and UNKNOWN (a forward never answered, an entry overwritten by a new leader,
  a deadline, a leader that found it executed before): on anything but APPLIED the client
  sends the *same* envelope again elsewhere; after ``ATTEMPTS_MAX`` it gives up and the
  command's fate stays unknown (never for a ``register`` or ``rotate_key``: the account's key
  must stay known to its client);
* snapshots are :class:`~grenex.replica.driver.DeferredSnapshots`: serialised at a point and
  stored a seeded number of turns later while more entries apply (the forked child's
  interleaving); abandoned when the node crashes; every snapshot's state hash is held against
  the other replicas' at the same index.

Two phases, like TigerBeetle's VOPR:

* **safety** (``ticks``): faults are injected while clients keep ordering — packet loss,
  duplication and reordering, symmetric and one-way partitions, clogged links released one by
  one, crashes (some in the middle of persisting a Ready, losing unsynced writes) and restarts,
  new learners joining (catching up by snapshot), promotions, removals and leadership
  transfers.
* **liveness**: the network heals, crashed nodes restart, faults stop; within
  ``liveness_ticks_max`` the cluster must elect a leader, bring every member to the same
  applied index, finish the clients' outstanding commands and acknowledge one more.

Checkers (``checker.py``) watch from outside throughout — every *acknowledged* command
(APPLIED, or answered from the window as a duplicate) must be the entry at the index and term
it was acknowledged with, with the model's first outcome of its ``(client, nonce)``; every
pre-log refusal and duplicate must be the model's verdict at the checking node's applied index;
at the end every account's key is the one its client believes; the first broken guarantee
stops the run with :class:`SimFailure`.
"""

from __future__ import annotations

import hashlib
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grenex.codec import encode_json
from grenex.codec.envelope import KeyRotated, Registered
from grenex.codec.genesis import Genesis, parse_genesis
from grenex.codec.keys import SecretKey
from grenex.codec.peer import (
    Forward as PeerForward,
)
from grenex.codec.peer import (
    FwdAt,
    FwdDeclined,
    FwdNotLeader,
    PeerWireError,
    decode_peer_reply,
    decode_peer_request,
    encode_peer_reply,
    encode_peer_request,
)
from grenex.codec.raft import decode_message, encode_message
from grenex.codec.signer import Keyring, Signer
from grenex.codec.stamp import unstamp
from grenex.consensus import (
    Config,
    ConsensusError,
    EntryKind,
    InvalidConfChangeError,
    Message,
    Role,
    bootstrap,
)
from grenex.engine import Rejected
from grenex.replica import Applied, Replica, ReplicaConfig
from grenex.replica.auth import Duplicate, Reject
from grenex.replica.driver import DeferredSnapshots, Driver
from grenex.replica.gateway import (
    Fate,
    Forward,
    ForwardAnswer,
    ForwardReply,
    Gateway,
    GatewayLimits,
    reply_from_wire,
    reply_to_wire,
)
from grenex.replica.verdicts import Verdicts
from grenex.sim.checker import Acked, EnvInfo, SimFailure, Watch
from grenex.sim.disk import DiskCrash, SimDisk
from grenex.sim.network import Network

__all__ = ["KEYRING_SALT", "Knobs", "Result", "Simulation", "run_seed", "sim_genesis"]

ELECTION_TIMEOUT_TICKS = 12
HEARTBEAT_INTERVAL_TICKS = 2
# the clients' keys and the genesis: deterministic, from a fixed salt (SPEC §8; test use only)
KEYRING_SALT = "grenex-sim"
CLUSTER = "sim"
# the simulated wall clock: ms since the epoch at tick 0, and per tick (each node adds a skew)
EPOCH_MS = 1_700_000_000_000
TICK_MS = 10
CLOCK_SKEW_MS_MAX = 40
# per account: rotate the key at most this often, and now and then send an envelope signed by
# the key rotated away
ROTATIONS_MAX = 3
ROTATE_RATE = 0.02
OLD_KEY_RATE = 0.03
# Forwards travel as peer messages signed with a cluster secret, as on a real cluster.
PEER_SECRET = b"grenex-sim-peer-secret"

# A client's command at a node: (client, op seq, attempt).
Token = tuple[str, int, int]


@dataclass
class Knobs:
    """Everything a seed decides about the run, drawn once at the start."""

    voters: int
    learners: int
    clients: int
    loss: float
    duplication: float
    delay_max_ticks: int
    crash_rate: float  # per tick
    partition_rate: float
    clog_rate: float
    membership_rate: float
    transfer_rate: float
    mid_persist_crash: float  # share of crashes that happen inside persist
    snapshot_interval_entries: int
    compaction_retain_entries: int
    entries_per_message_max: int
    inflight_messages_max: int
    tick_skip_max: float
    # the gateway's bounds and deadlines (ticks), and the clients' patience
    command_timeout_ticks: int
    leader_wait_ticks: int
    forward_timeout_ticks: int
    forward_batch_commands_max: int
    forwards_inflight_max: int
    forwarded_batches_max: int
    submitted_max: int
    recent_entries_max: int
    client_timeout_ticks: int
    # deferred snapshots: the bytes are stored 1..this many turns after their point
    snapshot_delay_turns_max: int
    # a forward's answer (an RPC reply) may be slow: up to this many extra ticks, so the
    # forwarder may apply the entry before it learns where its commands went
    fwd_answer_delay_max_ticks: int
    # a leader tells a new commit index at once only to the members waiting for it, the
    # others at their next append, or the node's next turn (the node: a few ms later)
    defer_commit_notices: bool = False

    def gateway_limits(self) -> GatewayLimits:
        return GatewayLimits(
            submitted_max=self.submitted_max,
            command_timeout_ticks=self.command_timeout_ticks,
            leader_wait_ticks=self.leader_wait_ticks,
            forward_batch_commands_max=self.forward_batch_commands_max,
            forwards_inflight_max=self.forwards_inflight_max,
            forward_timeout_ticks=self.forward_timeout_ticks,
            forwarded_batches_max=self.forwarded_batches_max,
            recent_entries_max=self.recent_entries_max,
        )

    @classmethod
    def quiet(cls, voters: int = 3) -> Knobs:
        """No faults, no random clients, roomy bounds: for scripted scenarios."""
        return cls(
            voters=voters,
            learners=0,
            clients=0,
            loss=0.0,
            duplication=0.0,
            delay_max_ticks=1,
            crash_rate=0.0,
            partition_rate=0.0,
            clog_rate=0.0,
            membership_rate=0.0,
            transfer_rate=0.0,
            mid_persist_crash=0.0,
            snapshot_interval_entries=1000,
            compaction_retain_entries=16,
            entries_per_message_max=128,
            inflight_messages_max=16,
            tick_skip_max=0.0,
            command_timeout_ticks=100,
            leader_wait_ticks=60,
            forward_timeout_ticks=60,
            forward_batch_commands_max=64,
            forwards_inflight_max=4,
            forwarded_batches_max=64,
            submitted_max=20_000,
            recent_entries_max=65_536,
            client_timeout_ticks=120,
            snapshot_delay_turns_max=1,
            fwd_answer_delay_max_ticks=0,
        )

    @classmethod
    def draw(cls, rng: random.Random) -> Knobs:
        return cls(
            voters=rng.choice((3, 3, 5)),
            learners=rng.randrange(3),
            clients=rng.randrange(2, 7),
            loss=rng.choice((0.0, 0.01, 0.05, 0.1, 0.2)),
            duplication=rng.choice((0.0, 0.01, 0.05)),
            delay_max_ticks=rng.randrange(1, 5),
            crash_rate=rng.choice((0.0, 0.002, 0.005, 0.01, 0.03)),
            partition_rate=rng.choice((0.0, 0.005, 0.01, 0.02)),
            clog_rate=rng.choice((0.0, 0.005, 0.02)),
            membership_rate=rng.choice((0.0, 0.005, 0.01, 0.02)),
            transfer_rate=rng.choice((0.0, 0.002, 0.005)),
            mid_persist_crash=rng.choice((0.0, 0.5, 1.0)),
            snapshot_interval_entries=rng.choice((16, 32, 64, 1000)),
            compaction_retain_entries=rng.choice((0, 4, 16)),
            entries_per_message_max=rng.choice((3, 16, 128)),
            inflight_messages_max=rng.choice((1, 4, 16)),
            tick_skip_max=rng.choice((0.0, 0.05, 0.2)),
            command_timeout_ticks=rng.choice((25, 50, 100)),
            leader_wait_ticks=rng.choice((10, 30, 60)),
            forward_timeout_ticks=rng.choice((8, 20, 60)),
            forward_batch_commands_max=rng.choice((1, 3, 64)),
            forwards_inflight_max=rng.choice((1, 2, 4)),
            forwarded_batches_max=rng.choice((1, 4, 64)),
            submitted_max=rng.choice((2, 8, 20_000)),
            recent_entries_max=rng.choice((2, 16, 65_536)),
            client_timeout_ticks=rng.choice((30, 60, 120)),
            snapshot_delay_turns_max=rng.choice((1, 4, 20)),
            fwd_answer_delay_max_ticks=rng.choice((0, 0, 8, 30)),
            defer_commit_notices=rng.random() < 0.75,
        )


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Op:
    """One client envelope and its fate: ok (acknowledged: applied, or a duplicate answered
    with the first outcome), invalid (refused by a §8 check before the log, for good), unknown
    (gave up, or its nonce went stale: it may or may not have executed), or pending.

    ``kind``: ``register``, ``rotate`` (to key generation ``gen``), ``order``, ``market`` (the
    operator's add_market) or ``old_key`` (signed by a key rotated away: must never execute)."""

    client: str
    seq: int
    data: bytes
    started: int
    kind: str = "order"
    gen: int = 0
    attempts: int = 0
    status: str = "pending"
    answer: Acked | None = None
    why: str = ""
    acked_by: str = ""


@dataclass
class Client:
    name: str
    ids: list[str] = field(default_factory=list)
    op: Op | None = None
    next_op_tick: int = 0
    deadline: int = 0
    target: str | None = None
    n_ops: int = 0
    registered: bool = False
    gen: int = 0  # the key generation the account holds (0: the first key)


ATTEMPTS_MAX = 30

MARKETS = (("M", "1", "1"), ("N", "0.5", "0.01"))


# -- nodes ------------------------------------------------------------------------------------


class SimNode:
    """One simulated node: the replica, its gateway and its driver (what the node runs), the
    deferred snapshots standing in for its forked child, and the consensus messages that
    arrived since its last turn.  ``incarnation`` counts starts (the gateway's batch numbers
    start at ``incarnation << 32``, so they never repeat across restarts)."""

    def __init__(self, nid: str, disk: SimDisk, tick_skip: float, skew_ms: int = 0) -> None:
        self.id = nid
        self.disk = disk
        self.tick_skip = tick_skip
        self.skew_ms = skew_ms  # this node's wall clock runs that far ahead
        self.replica: Replica | None = None
        self.gateway: Gateway[Token] | None = None
        self.driver: Driver[Token] | None = None
        self.snaps: DeferredSnapshots | None = None
        self.inbox: list[Message] = []
        self.incarnation = 0
        self.hash_seen: tuple[int, str] | None = None
        self.retired = False
        self.restart_at = 0
        self.crashes = 0
        self.installed_seen = 0
        self.commit_upto = 0  # the commit notices its last turn deferred (Driver.turn)

    @property
    def up(self) -> bool:
        return self.replica is not None


@dataclass
class Result:
    seed: int
    ok: bool
    failure: str = ""
    ticks: int = 0
    converged_after: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    status_lines: list[str] = field(default_factory=list)


class Simulation:
    def __init__(
        self,
        seed: int,
        ticks: int = 1500,
        liveness_ticks_max: int = 1000,
        verbose: bool = False,
        log: Callable[[str], None] = print,
        knobs: Knobs | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.knobs = knobs if knobs is not None else Knobs.draw(self.rng)
        self.safety_ticks = ticks
        self.liveness_ticks_max = liveness_ticks_max
        self.verbose = verbose
        self._log = log
        k = self.knobs
        self.net = Network(random.Random(self.rng.getrandbits(64)))
        self.net.loss = k.loss
        self.net.duplication = k.duplication
        self.net.delay_max_ticks = k.delay_max_ticks
        self.now = 0
        self.phase = "safety"
        self.nodes: dict[str, SimNode] = {}
        self.next_node = 1
        self.joining: list[str] = []  # started, add_learner not yet committed
        # removal proposed, (index, term) of its entry: the node shuts down once it commits
        self.leaving: dict[str, tuple[int, int]] = {}
        self.faults: list[tuple[int, str, Callable[[], None]]] = []  # (until, what, undo)
        self.ops: list[Op] = []
        self.fwd_fates: dict[tuple[str, int], str] = {}  # (forwarder, batch) -> fate
        self.stats: dict[str, int] = {
            "crashes": 0,
            "mid_persist_crashes": 0,
            "lost_writes": 0,
            "partitions": 0,
            "clogs": 0,
            "joins": 0,
            "promotions": 0,
            "removals": 0,
            "transfers": 0,
            "snapshots_installed": 0,
            "elections": 0,
            "forwards": 0,
            "fwd_answers": 0,
            "fwd_refused": 0,
            "outcome_applied": 0,
            "outcome_refused": 0,
            "outcome_busy": 0,
            "outcome_unknown": 0,
            "outcome_invalid": 0,
            "prelog_invalid": 0,
            "prelog_duplicates": 0,
            "rotations": 0,
            "old_key_refused": 0,
            "stale_nonces": 0,
            "snapshot_hashes": 0,
            "vouch_asks": 0,
            "vouches": 0,
            "deferred_commits": 0,  # turns that sent deferred commit notices (Driver.turn)
        }
        voters = [self._new_id() for _ in range(k.voters)]
        self.keyring = Keyring(KEYRING_SALT)
        self.genesis = sim_genesis(self.keyring, voters)
        # one verdict cache per run, shared by every replica (a pure function of its key)
        self.verdicts = Verdicts(self.genesis.cluster_id)
        self.signer = Signer(self.genesis.cluster_id, self._key_of)
        self.watch = Watch(self.genesis)
        for nid in voters:
            disk = SimDisk()
            bootstrap(disk, voters)
            self._start(self._add_node(nid, disk))
        for _ in range(k.learners):
            self._join()
        self.clients = [Client(f"c{i + 1}") for i in range(k.clients)]
        self.by_name = {c.name: c for c in self.clients}
        # scripted clients (scenarios.py): replies to them are kept here, by client
        self.inboxes: dict[str, list[tuple[str, Any]]] = {}
        self.admin = Client(self.genesis.operator.client, registered=True)
        self.by_name[self.admin.name] = self.admin
        self._admin_ops = [
            {"type": "add_market", "market": m, "tick": t, "lot": lot} for m, t, lot in MARKETS
        ]

    # -- logging ------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        if self.verbose:
            self._log(f"t={self.now:5d} {text}")

    # -- nodes --------------------------------------------------------------------------------

    def _new_id(self) -> str:
        nid = f"n{self.next_node}"
        self.next_node += 1
        return nid

    def _add_node(self, nid: str, disk: SimDisk) -> SimNode:
        rng = self.rng
        node = SimNode(
            nid, disk, rng.random() * self.knobs.tick_skip_max, rng.randrange(CLOCK_SKEW_MS_MAX)
        )
        self.nodes[nid] = node
        return node

    def wall_ms(self, node: SimNode) -> int:
        """The node's wall clock (ms since the epoch): the tick, plus its skew."""
        return EPOCH_MS + self.now * TICK_MS + node.skew_ms

    # -- keys and envelopes ---------------------------------------------------------------------

    def key(self, name: str, gen: int) -> SecretKey:
        """Account ``name``'s key of generation ``gen`` (0: the one it registers)."""
        return self.keyring.key(name if gen == 0 else f"{name}/{gen}")

    def script_account(self, name: str) -> Client:
        """An account driven by a script (no random orders): its replies go to
        ``inboxes[name]``; :meth:`envelope` signs with its key generation ``gen``."""
        c = Client(name)
        self.by_name[name] = c
        self.inboxes[name] = []
        return c

    def _key_of(self, name: str) -> SecretKey:
        c = self.by_name[name]
        return self.key(name, c.gen)

    def envelope(self, client: str, cmd: dict[str, Any], key: SecretKey | None = None) -> bytes:
        """``cmd`` as ``client``'s next envelope (counter nonce), signed by ``key`` (default:
        the account's current key); registered with the watch."""
        nonce = self.signer.next_nonce(client)
        obj = dict(cmd)
        obj["client"] = client
        obj["nonce"] = nonce
        text = encode_json(obj)
        k = key if key is not None else self._key_of(client)
        data = self.signer.sign_text(client, text, k)
        digest = hashlib.sha256(text).digest()
        self.watch.register(data, EnvInfo(client, nonce, obj, digest, k.public_key))
        return data

    def _precheck(self, node: SimNode, r: Replica, data: bytes) -> Reject | Duplicate | None:
        """SPEC §8 checks 1–5 against ``r``'s applied state at the node's clock (what the
        receiving node and the leader run); every verdict goes to the watch."""
        state = r.state
        t = self.wall_ms(node)
        _env, v = state.precheck(data, t, self.verdicts)
        self.watch.record_precheck(node.id, state.index, t, data, v)
        if type(v) is Reject or type(v) is Duplicate:
            return v
        return None

    def _start(self, node: SimNode) -> None:
        k = self.knobs
        cfg = ReplicaConfig(
            raft=Config(
                id=node.id,
                election_timeout_ticks=ELECTION_TIMEOUT_TICKS,
                heartbeat_interval_ticks=HEARTBEAT_INTERVAL_TICKS,
                entries_per_message_max=k.entries_per_message_max,
                inflight_messages_max=k.inflight_messages_max,
                snapshot_retry_ticks=4 * ELECTION_TIMEOUT_TICKS,
                defer_commit_notices=k.defer_commit_notices,
            ),
            genesis=self.genesis,
            snapshot_interval_entries=k.snapshot_interval_entries,
            compaction_retain_entries=k.compaction_retain_entries,
            auto_snapshot=False,  # the driver's snapshots: deferred, like the node's child
        )
        r = Replica(cfg, node.disk, random.Random(self.rng.getrandbits(64)))
        r.verifier = self.verdicts
        node.incarnation += 1
        node.commit_upto = 0

        def precheck(data: bytes) -> str | None:  # the leader's, as the node's _precheck
            v = self._precheck(node, r, data)
            if v is None:
                return None
            return v.reason if type(v) is Reject else "duplicate"

        # batch numbers never repeat across restarts (see Gateway.first_batch)
        gw: Gateway[Token] = Gateway(
            node.id, k.gateway_limits(), first_batch=node.incarnation << 32, precheck=precheck
        )
        snaps = DeferredSnapshots(
            r, random.Random(self.rng.getrandbits(64)), k.snapshot_delay_turns_max
        )
        nid = node.id
        net = self.net
        watch = self.watch

        def send(m: Message) -> None:  # straight onto the wire, after the flush
            net.send(nid, m.dst, ("raft", encode_message(m)))

        def on_applied(applied: list[Applied]) -> None:
            for a in applied:
                watch.record_applied(nid, a)

        node.replica = r
        node.gateway = gw
        node.snaps = snaps
        node.driver = Driver(r, gw, snaps, send, on_applied)
        node.inbox = []
        node.hash_seen = None

    def _stop(self, node: SimNode) -> None:
        """The process is gone: replica, gateway (its tokens die unanswered: the clients time
        out), a snapshot child under way, messages not yet read."""
        if node.snaps is not None:
            node.snaps.abandon()
        node.replica = None
        node.gateway = None
        node.driver = None
        node.snaps = None
        node.inbox = []

    def _crash(self, node: SimNode, why: str) -> None:
        lost = node.disk.crash(self.rng)
        self.stats["lost_writes"] += lost
        self.stats["crashes"] += 1
        self._stop(node)
        node.crashes += 1
        node.restart_at = self.now + self.rng.randrange(10, 80)
        self.log(f"{node.id} crashes ({why}; {lost} unsynced writes lost)")

    def _join(self) -> None:
        nid = self._new_id()
        self._start(self._add_node(nid, SimDisk()))
        self.joining.append(nid)
        self.stats["joins"] += 1
        self.log(f"{nid} starts empty, to join as a learner")

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for nid in sorted(self.nodes):
            n = self.nodes[nid]
            r = n.replica
            if (
                r is not None
                and r.raft.role == Role.LEADER
                and (best is None or r.raft.term > _r(best).raft.term)
            ):
                best = n
        return best

    # -- the tick -----------------------------------------------------------------------------

    def step(self) -> None:
        self.now += 1
        net = self.net
        net.now = self.now
        if self.phase == "safety":
            self._inject_faults()
        self._restart_due()
        for p in net.due():
            self._deliver(p.src, p.dst, p.payload)
        rng = self.rng
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if node.replica is not None:
                skip = node.tick_skip and rng.random() < node.tick_skip
                self._drive(node, 0 if skip else 1)
        self._membership_progress()
        self._ask_vouchers()
        for c in [self.admin, *self.clients]:
            self._client_step(c)
        if self.now % 16 == 0:
            self._check_hashes()

    def _ask_vouchers(self) -> None:
        """A member that has heard no leader for long asks a member of its configuration for
        the current one (as the node asks another node's ``members`` over a pinned
        connection), one member after the other, and vouches with the answer."""
        for nid in sorted(self.nodes):
            r = self.nodes[nid].replica
            voucher = r.voucher_due() if r is not None else None
            if voucher is not None:
                self.net.send(nid, voucher, ("members?",))
                self.stats["vouch_asks"] += 1

    def _deliver(self, src: str, dst: str, payload: Any) -> None:
        kind = payload[0]
        node = self.nodes.get(dst)
        if kind in ("members?", "members"):
            if node is None or node.replica is None:
                return
            raft = node.replica.raft
            if kind == "members?":
                members = sorted(raft.voters) + sorted(raft.learners)
                self.net.send(dst, src, ("members", members))
            elif node.replica.vouch(src, payload[1]):
                self.stats["vouches"] += 1
                self.log(f"{dst} takes {src}'s word: members {','.join(payload[1])}")
            return
        if kind in ("raft", "req", "fwd", "fwd_reply", "fwd_failed"):
            if kind == "fwd":
                # A forward is one request, however many copies the network makes: refused
                # (its node is down; the forwarder learns it surely was not delivered) or
                # delivered, never both — "refused" must stay true for the forwarder.
                key = (src, payload[1])
                fate = self.fwd_fates.get(key)
                if fate == "refused":
                    return
                if node is None or node.gateway is None:
                    if fate is None and node is not None and not node.retired:
                        self.fwd_fates[key] = "refused"
                        self.net.send(dst, src, ("fwd_failed", payload[1]))
                    return
                self.fwd_fates[key] = "delivered"
            if node is None or node.gateway is None:
                return
            gw = node.gateway
            if kind == "raft":
                node.inbox.append(decode_message(payload[1]))
            elif kind == "req":  # a client's command: (client, seq, attempt) is its token
                _, seq, attempt, data = payload
                # the receiving node's §8 checks 1–5, as the client API runs them
                v = self._precheck(node, _r(node), data)
                if v is None:
                    gw.submit((src, seq, attempt), data)
                elif type(v) is Reject:
                    self.stats["prelog_invalid"] += 1
                    self.net.send(dst, src, ("invalid", seq, attempt, v.reason))
                else:
                    assert type(v) is Duplicate
                    self.stats["prelog_duplicates"] += 1
                    self.net.send(dst, src, ("dup", seq, attempt, v.seq, v.time, v.events))
            elif kind == "fwd":
                _, _batch, body = payload
                try:
                    msg = decode_peer_request(body, PEER_SECRET)
                except PeerWireError as e:  # never happens unless the codec breaks
                    raise SimFailure(f"{dst} could not decode a forward from {src}: {e}") from e
                assert isinstance(msg, PeerForward) and msg.src == src, msg
                gw.forwarded(msg.src, msg.batch, list(msg.cmds))
            elif kind == "fwd_reply":
                # Delivered to whoever runs as ``dst`` now, even a later incarnation than the
                # one that forwarded: batch numbers alone must keep answers apart.
                # As on a real cluster, where the answer rides the leader's own consensus
                # traffic to us: only the node the batch went to may answer it.
                _, batch, body = payload
                gw.forward_replied(batch, _from_wire(decode_peer_reply(body)), src)
                self.stats["fwd_answers"] += 1
            else:
                gw.forward_failed(payload[1], False, "connection refused")
                self.stats["fwd_refused"] += 1
            return
        inbox = self.inboxes.get(dst)
        if inbox is not None:  # a scripted client's (scenarios.py)
            inbox.append((src, payload))
            return
        self._handle_reply(dst, src, payload)

    def _drive(self, node: SimNode, ticks: int) -> None:
        """One driver turn, exactly the node's (``Driver.turn``); the flush inline, where the
        simulated disk may crash the node mid-persist; then the gateway's outputs onto the
        network."""
        r, driver, gw, snaps = node.replica, node.driver, node.gateway, node.snaps
        assert r is not None and driver is not None and gw is not None and snaps is not None
        nid = node.id
        msgs, node.inbox = node.inbox, []
        if node.commit_upto:
            self.stats["deferred_commits"] += 1
        turn = driver.turn(ticks, msgs, now_ms=self.wall_ms(node), commit_upto=node.commit_upto)
        try:
            for rd in turn:
                r.flush(rd)
        except DiskCrash:
            self.stats["mid_persist_crashes"] += 1
            self._crash(node, "mid-persist")
            return
        node.commit_upto = driver.commit_deferred()
        raft = r.raft
        if raft.role == Role.LEADER:
            if raft.term not in self.watch.leaders:
                self.stats["elections"] += 1
                self.log(f"{nid} leads term {raft.term}")
            self.watch.record_leader(raft.term, nid)
        if r.snapshots_installed != node.installed_seen:
            self.stats["snapshots_installed"] += r.snapshots_installed - node.installed_seen
            node.installed_seen = r.snapshots_installed
        if snaps.hash_at is not None and snaps.hash_at != node.hash_seen:
            # the deferred snapshot's hash is the state's at its point: same as every other
            # replica's at that index
            node.hash_seen = snaps.hash_at
            self.watch.record_hash(snaps.hash_at[0], nid, snaps.hash_at[1])
            self.stats["snapshot_hashes"] += 1
        self._ship(node, gw)

    def _ship(self, node: SimNode, gw: Gateway[Token]) -> None:
        """The gateway's outputs: forwards and answers as peer messages over the network,
        outcomes to the clients."""
        net = self.net
        nid = node.id
        stats = self.stats
        for out in gw.take():
            if isinstance(out, Forward):
                body = encode_peer_request(PeerForward(nid, out.batch, out.datas), PEER_SECRET)
                net.send(nid, out.to, ("fwd", out.batch, body))
                stats["forwards"] += 1
            elif isinstance(out, ForwardAnswer):
                body = encode_peer_reply(reply_to_wire(out.reply))
                slow = self.knobs.fwd_answer_delay_max_ticks
                extra = self.rng.randrange(slow + 1) if slow else 0
                net.send(nid, out.to, ("fwd_reply", out.batch, body), extra)
            else:
                client, seq, attempt = out.token
                stats[f"outcome_{out.fate.name.lower()}"] += 1
                if out.fate == Fate.APPLIED:
                    a = out.applied
                    assert a is not None
                    net.send(nid, client, ("ok", seq, attempt, a))
                else:
                    net.send(nid, client, (out.fate.name.lower(), seq, attempt, out.why))

    def _check_hashes(self) -> None:
        """Replicas at the same applied index must hold equal states."""
        by_index: dict[int, list[SimNode]] = {}
        for nid in sorted(self.nodes):
            n = self.nodes[nid]
            if n.replica is not None:
                by_index.setdefault(n.replica.applied_index, []).append(n)
        for index, group in sorted(by_index.items()):
            if len(group) < 2 and index not in self.watch.hashes:
                continue
            for n in group:
                r = _r(n)
                self.watch.record_hash(index, n.id, r.state_hash())
            _r(group[0]).state.engine.check_invariants()

    # -- faults -------------------------------------------------------------------------------

    def _inject_faults(self) -> None:
        rng = self.rng
        k = self.knobs
        now = self.now
        expired = [f for f in self.faults if f[0] <= now]
        if expired:
            self.faults = [f for f in self.faults if f[0] > now]
            for _, what, undo in expired:
                undo()
                self.log(f"heals {what}")
        ids = [nid for nid in sorted(self.nodes) if not self.nodes[nid].retired]
        if k.crash_rate and rng.random() < k.crash_rate:
            up = [nid for nid in ids if self.nodes[nid].up]
            down = len(ids) - len(up)
            if up and down < len(ids) // 2:
                node = self.nodes[rng.choice(up)]
                if rng.random() < k.mid_persist_crash:
                    node.disk.fail_next_sync = True  # dies at its next persist
                    self.log(f"{node.id} will crash at its next sync")
                else:
                    self._crash(node, "at rest")
        if k.partition_rate and rng.random() < k.partition_rate and len(ids) >= 2:
            self._partition(ids)
        if k.clog_rate and rng.random() < k.clog_rate and len(ids) >= 2:
            self._clog(ids)
        if k.membership_rate and rng.random() < k.membership_rate:
            self._membership_change()
        if k.transfer_rate and rng.random() < k.transfer_rate:
            self._transfer()

    def _partition(self, ids: list[str]) -> None:
        rng = self.rng
        net = self.net
        one_way = rng.random() < 0.3
        side = sorted(rng.sample(ids, rng.randrange(1, len(ids) // 2 + 1)))
        rest = [n for n in ids if n not in side]
        links = []
        for a in side:
            for b in rest:
                links.append((a, b))
                if not one_way:
                    links.append((b, a))
        if one_way and rng.random() < 0.5:
            links = [(b, a) for a, b in links]
        new = [link for link in links if link not in net.cut]
        for link in new:
            net.cut.add(link)

        def undo() -> None:
            for link in new:
                net.cut.discard(link)

        what = f"{'one-way ' if one_way else ''}partition {side}|{rest}"
        self.faults.append((self.now + rng.randrange(20, 120), what, undo))
        self.stats["partitions"] += 1
        self.log(what)

    def _clog(self, ids: list[str]) -> None:
        rng = self.rng
        net = self.net
        links = []
        for _ in range(rng.randrange(1, 4)):
            a, b = rng.sample(ids, 2)
            if (a, b) not in net.clogged:
                links.append((a, b))
                net.clogged.add((a, b))
        # released one by one, a few ticks apart
        t = self.now + rng.randrange(10, 80)
        for link in links:
            t += rng.randrange(1, 15)
            self.faults.append((t, f"clog {link}", _releaser(net, link)))
        self.stats["clogs"] += 1
        self.log(f"clogs {links}")

    # -- membership ---------------------------------------------------------------------------

    def _membership_change(self) -> None:
        rng = self.rng
        ldr = self.leader()
        if ldr is None:
            return
        r = _r(ldr)
        conf = r.raft.conf_state()
        choice = rng.random()
        try:
            if self.joining and choice < 0.4:
                nid = self.joining[0]
                r.add_learner(nid)
                self.log(f"{ldr.id} proposes add_learner {nid}")
            elif choice < 0.5 and len(self.nodes) < 12:
                self._join()
            elif choice < 0.75:
                promotable = [
                    n
                    for n in conf.learners
                    if n in r.raft.prs and r.raft.prs[n].match >= r.raft.log.committed
                ]
                if promotable and len(conf.voters) < 5:
                    nid = rng.choice(promotable)
                    r.promote(nid)
                    self.stats["promotions"] += 1
                    self.log(f"{ldr.id} proposes promote {nid}")
            else:
                members = list(conf.voters) + list(conf.learners)
                if len(conf.voters) > 3 or conf.learners:
                    pool = members if len(conf.voters) > 3 else list(conf.learners)
                    nid = rng.choice(pool)
                    self.leaving[nid] = r.remove(nid)
                    self.stats["removals"] += 1
                    self.log(f"{ldr.id} proposes remove {nid}")
        except (ConsensusError, InvalidConfChangeError) as e:
            self.log(f"membership change refused: {e}")

    def _transfer(self) -> None:
        ldr = self.leader()
        if ldr is None:
            return
        r = _r(ldr)
        others = [v for v in r.raft.voters if v != ldr.id]
        if others:
            to = self.rng.choice(others)
            try:
                r.transfer_leadership(to)
                self.stats["transfers"] += 1
                self.log(f"{ldr.id} transfers leadership to {to}")
            except ConsensusError as e:
                self.log(f"transfer refused: {e}")

    def _membership_progress(self) -> None:
        """Joining nodes become members; a removed node shuts down once its removal is
        committed (seen applied somewhere), as a real node does when it sees it applied."""
        for nid, (index, term) in list(self.leaving.items()):
            known = self.watch.log.get(index)
            if known is None:
                continue
            del self.leaving[nid]
            if known[0] != term:
                continue  # that proposal was lost: the node stays a member
            node = self.nodes[nid]
            if not node.retired:
                node.retired = True
                self._stop(node)
                self.log(f"{nid} was removed and shuts down")
        ldr = self.leader()
        if ldr is None or not self.joining:
            return
        conf = _r(ldr).raft.conf_state()
        for nid in list(self.joining):
            if nid in conf.voters or nid in conf.learners:
                self.joining.remove(nid)

    def _restart_due(self) -> None:
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            if not node.up and not node.retired and node.restart_at <= self.now:
                self._start(node)
                d = node.disk
                self.log(f"{nid} restarts (log {d.first_index()}..{d.last_index()})")

    # -- clients ------------------------------------------------------------------------------

    def _new_op(self, c: Client, plain: bool = False) -> Op | None:
        """The client's next envelope (``plain``: no key rotation, no old key)."""
        c.n_ops += 1
        rng = self.rng
        kind = "order"
        gen = c.gen
        if c is self.admin:
            if not self._admin_ops:
                return None
            data = self.envelope(c.name, self._admin_ops.pop(0))
            kind = "market"
        elif not c.registered:
            k = self.key(c.name, 0)
            data = self.envelope(c.name, {"type": "register", "key": k.public_key}, k)
            kind = "register"
        elif not plain and c.gen < ROTATIONS_MAX and rng.random() < ROTATE_RATE:
            gen = c.gen + 1
            data = self.envelope(
                c.name, {"type": "rotate_key", "key": self.key(c.name, gen).public_key}
            )
            kind = "rotate"
        elif not plain and c.gen > 0 and rng.random() < OLD_KEY_RATE:
            # signed by a key the account rotated away: must be refused bad_signature
            cmd = self._order(c)
            gen = rng.randrange(c.gen)
            data = self.envelope(c.name, cmd, self.key(c.name, gen))
            kind = "old_key"
        else:
            data = self.envelope(c.name, self._order(c))
        op = Op(c.name, c.n_ops, data, self.now, kind, gen)
        self.ops.append(op)
        return op

    def _order(self, c: Client) -> dict[str, Any]:
        rng = self.rng
        market, _, _ = rng.choice(MARKETS)
        roll = rng.random()
        if roll < 0.6 or not c.ids:
            oid = f"o{len(c.ids) + 1}"
            c.ids.append(oid)
            cmd: dict[str, Any] = {
                "type": "place",
                "id": oid,
                "market": market,
                "side": rng.choice(("buy", "sell")),
                "qty": str(rng.randrange(1, 6)) if market == "M" else f"0.0{rng.randrange(1, 10)}",
            }
            t = rng.random()
            if t < 0.05:
                cmd["tif"] = "IOC"  # market order
            else:
                if market == "M":
                    cmd["price"] = str(rng.randrange(95, 106))
                else:  # tick 0.5: prices 95, 95.5, ... 105, as text (never a float)
                    half = rng.randrange(190, 211)
                    cmd["price"] = f"{half // 2}.5" if half % 2 else str(half // 2)
                if t < 0.2:
                    cmd["tif"] = "IOC"
                elif t < 0.3:
                    cmd["tif"] = "FOK"
                elif t < 0.4:
                    cmd["post_only"] = True
            if rng.random() < 0.2:
                cmd["stp"] = rng.choice(("cancel_maker", "cancel_taker", "cancel_both"))
            return cmd
        oid = rng.choice(c.ids)
        if roll < 0.8:
            return {"type": "cancel", "id": oid}
        cmd = {"type": "amend", "id": oid}
        if rng.random() < 0.7:
            cmd["qty"] = str(rng.randrange(1, 6))
        if rng.random() < 0.5 or "qty" not in cmd:
            cmd["price"] = str(rng.randrange(95, 106))
        return cmd

    def _client_step(self, c: Client) -> None:
        now = self.now
        op = c.op
        if op is None:
            if now < c.next_op_tick:
                return
            if self.phase != "safety" and c is not self.admin:
                return
            op = self._new_op(c)
            if op is None:
                return
            c.op = op
            self._send_attempt(c, op)
        elif now >= c.deadline:
            self._retry(c, op, None)

    def _send_attempt(self, c: Client, op: Op) -> None:
        """To any node (the gateway forwards to the leader): the last one that answered, or
        one drawn among those that run (or, if none does, among those not retired).  Always
        the same envelope bytes."""
        op.attempts += 1
        if c.target is None or c.target not in self.nodes or self.nodes[c.target].retired:
            live = [nid for nid in sorted(self.nodes) if not self.nodes[nid].retired]
            up = [nid for nid in live if self.nodes[nid].up]
            c.target = self.rng.choice(up or live)
        c.deadline = self.now + self.knobs.client_timeout_ticks
        self.net.send(c.name, c.target, ("req", op.seq, op.attempts, op.data))

    def _retry(self, c: Client, op: Op, target: str | None) -> None:
        # an account's register and key rotations are never given up: its client must know
        # which key the account holds
        keep = op.kind in ("register", "rotate")
        if op.attempts >= ATTEMPTS_MAX and self.phase == "safety" and not keep:
            self.log(f"{c.name} gives up on #{op.seq} (outcome unknown)")
            self._settle(c, op, "unknown")
            return
        c.target = target
        self._send_attempt(c, op)

    def _settle(self, c: Client, op: Op, status: str, node: str | None = None) -> None:
        op.status = status
        c.op = None
        if node is not None:
            op.acked_by = node
            c.target = node
        c.next_op_tick = self.now + self.rng.randrange(0 if node else 1, 6)

    def _handle_reply(self, client_name: str, node: str, payload: Any) -> None:
        c = self.by_name[client_name]
        op = c.op
        kind, seq, attempt = payload[0], payload[1], payload[2]
        if op is None or op.seq != seq:
            return  # an answer to an earlier command: already settled
        if kind == "ok":  # from any attempt: the envelope was applied (or answered from it)
            a: Applied = payload[3]
            if a.data != op.data:
                raise SimFailure(
                    f"{node} acknowledged {c.name}#{seq} with another command's entry"
                    f" {a.data[:60]!r} at {a.index}"
                )
            op.answer = Acked.of(f"{c.name}#{seq}", op.data, a)
            self._acknowledged(c, op, node, a.duplicate, a.events, a.results_json)
        elif kind == "dup":  # the receiving node's window: the first outcome, before the log
            _, _, _, oseq, otime, results = payload
            op.answer = Acked(f"{c.name}#{seq}", op.data, 0, 0, True, oseq, otime, [], results)
            self._acknowledged(c, op, node, True, [], results)
        elif kind == "invalid":
            self._invalid(c, op, node, attempt, payload[3])
        elif attempt == op.attempts:  # refused, busy, unknown: the same envelope elsewhere
            self._again_soon(c)

    def _again_soon(self, c: Client) -> None:
        c.deadline = min(c.deadline, self.now + self.rng.randrange(1, 5))
        c.target = None

    def _acknowledged(
        self,
        c: Client,
        op: Op,
        node: str,
        duplicate: bool,
        events: list[Any],
        results: bytes | None,
    ) -> None:
        """What an acknowledged answer means for the account's key and registration."""
        if op.kind == "register":
            if not (duplicate or (len(events) == 1 and type(events[0]) is Registered)):
                raise SimFailure(f"{c.name}'s register answered {events!r}")
            c.registered = True
        elif op.kind == "rotate":
            if duplicate or (len(events) == 1 and type(events[0]) is KeyRotated):
                self.stats["rotations"] += 1
            elif not _refused(events, "bad_signature"):
                raise SimFailure(f"{c.name}'s rotate_key answered {events!r}")
            # bad_signature: an earlier copy of this very envelope rotated the key (only its
            # holder can sign for the account, and this is its only rotation in flight)
            c.gen = op.gen
        elif op.kind == "old_key":
            if duplicate or not _refused(events, "bad_signature"):
                raise SimFailure(f"{c.name}'s envelope signed by an old key ran: {events!r}")
            self.stats["old_key_refused"] += 1
        self._settle(c, op, "ok", node)

    def _holds(self, nid: str, c: Client, gen: int) -> bool:
        """Node ``nid``'s ``account`` read: the account holds key generation ``gen``."""
        r = self.nodes[nid].replica
        key = r.state.auth.account_key(c.name) if r is not None else None
        return key == self.key(c.name, gen).public_key

    def _invalid(self, c: Client, op: Op, node: str, attempt: int, why: str) -> None:
        """A §8 check refused the envelope before the log (the watch checked the verdict)."""
        if why in ("unknown_client", "bad_signature"):
            if op.kind == "rotate" and why == "bad_signature" and self._holds(node, c, op.gen):
                # that node's account holds the new key: an earlier copy rotated it (the
                # client asks the node, as a real one reads ``account``; a node that lags
                # behind an earlier rotation also says bad_signature)
                c.gen = op.gen
                op.why = why
                self._settle(c, op, "invalid", node)
                return
            if op.kind == "old_key" and why == "bad_signature":
                self.stats["old_key_refused"] += 1
                op.why = why
                self._settle(c, op, "invalid", node)
                return
            # a node that has not applied the account's register (or rotation) yet
            if attempt == op.attempts:
                self._again_soon(c)
            return
        op.why = why
        if why == "stale_nonce":  # it may have executed: only `order` would tell
            self.stats["stale_nonces"] += 1
            self._settle(c, op, "unknown", node)
            return
        raise SimFailure(f"{node} refused {c.name}#{op.seq} ({op.kind}): {why}")

    # -- phases -------------------------------------------------------------------------------

    def run(self) -> Result:
        try:
            for _ in range(self.safety_ticks):
                self.step()
            self._heal()
            converged = self._converge()
            self._final_checks()
        except SimFailure as e:
            return Result(self.seed, False, str(e), self.now, 0, self.stats, self.status_lines())
        except Exception as e:  # an assertion inside the code under test, or a bug
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{tb.filename.rsplit('/src/', 1)[-1]}:{tb.lineno}"
            msg = f"{type(e).__name__} in {where}: {e}"
            return Result(self.seed, False, msg, self.now, 0, self.stats, self.status_lines())
        return Result(self.seed, True, "", self.now, converged, self.stats, self.status_lines())

    def _heal(self) -> None:
        self.phase = "liveness"
        self.log("== liveness: heal the network, restart everyone, stop faults ==")
        for _, _what, undo in self.faults:
            undo()
        self.faults.clear()
        self.net.heal()
        self.net.loss = 0.0
        self.net.duplication = 0.0
        for nid in sorted(self.nodes):
            node = self.nodes[nid]
            node.disk.fail_next_sync = False
            if not node.up and not node.retired:
                node.restart_at = self.now

    def _converge(self) -> int:
        start = self.now
        probe: Op | None = None
        while self.now - start < self.liveness_ticks_max:
            self.step()
            if probe is None:
                if self._converged() and all(c.op is None for c in [self.admin, *self.clients]):
                    c = self.clients[0]
                    probe = self._new_op(c, plain=True)
                    assert probe is not None
                    c.op = probe
                    c.next_op_tick = self.now
                    self._send_attempt(c, probe)
                    self.log(f"converged; probe command #{probe.seq} from {c.name}")
            elif probe.status == "ok" and self._converged():
                return self.now - start
        what = "the probe command was not acknowledged" if probe else "no convergence"
        raise SimFailure(f"liveness: {what} within {self.liveness_ticks_max} ticks after healing")

    def _members(self) -> list[str]:
        ldr = self.leader()
        if ldr is None:
            return []
        return list(_r(ldr).raft.conf_state().members())

    def _converged(self) -> bool:
        ldr = self.leader()
        if ldr is None:
            return False
        lr = _r(ldr).raft
        if lr.log.committed != lr.log.last_index():
            return False
        for nid in self._members():
            n = self.nodes[nid]
            if n.replica is None or n.replica.applied_index != lr.log.committed:
                return False
        return True

    def _final_checks(self) -> None:
        watch = self.watch
        members = self._members()
        index = _r(self.nodes[members[0]]).applied_index
        model = watch.model
        if model.index != index:
            raise SimFailure(f"model at {model.index}, replicas at {index}")
        model.engine.check_invariants()
        want = model.engine.state_hash()
        for nid in members:
            r = _r(self.nodes[nid])
            watch.record_hash(index, nid, r.state_hash())
            r.state.engine.check_invariants()
            if r.state.engine.state_hash() != want:
                raise SimFailure(f"{nid}'s books differ from the model replaying the log")
            auth = r.state.auth
            for c in [self.admin, *self.clients]:
                key = auth.account_key(c.name)
                if key != model.key_of(c.name):
                    raise SimFailure(f"{nid} binds {c.name} to {key}; the model says otherwise")
            # its log agrees with the committed log wherever it still holds entries
            disk = self.nodes[nid].disk
            for i in range(disk.first_index(), r.raft.log.committed + 1):
                e = disk.live.entries(i, i + 1, 1 << 30)[0]
                known = watch.log.get(i)
                # the watch records what was applied: the command without the leader's stamp
                t, data = unstamp(e.data) if e.kind == EntryKind.NORMAL else (None, e.data)
                if known is not None and known != (e.term, e.kind, data, t):
                    raise SimFailure(f"{nid}'s log differs from the committed log at {i}")
        for c in self.clients:  # every client knows the key its account holds
            want_key = self.key(c.name, c.gen).public_key if c.registered else None
            if model.key_of(c.name) != want_key:
                raise SimFailure(f"{c.name} believes its key is {want_key}; the model differs")
        acked = [op.answer for op in self.ops if op.status == "ok" and op.answer is not None]
        watch.check_history(acked)
        self.stats["commands_ok"] = len(acked)
        self.stats["duplicates"] = sum(1 for o in model.outcomes.values() if o[1]) + sum(
            1 for a in acked if a.index == 0
        )
        self.stats["commands_invalid"] = sum(1 for op in self.ops if op.status == "invalid")
        self.stats["prechecks_checked"] = watch.checked_prechecks
        self.stats["retries"] = sum(op.attempts - 1 for op in self.ops)
        self.stats["commands_unknown"] = sum(1 for op in self.ops if op.status == "unknown")
        self.stats["log_index"] = index
        self.stats["hash_checks"] = watch.checked_hashes
        self.stats["packets"] = self.net.sent

    def status_lines(self) -> list[str]:
        out = []
        for nid in sorted(self.nodes, key=lambda s: int(s[1:])):
            n = self.nodes[nid]
            if n.retired:
                out.append(f"{nid}: retired")
                continue
            if n.replica is None:
                out.append(f"{nid}: DOWN (disk log {n.disk.first_index()}..{n.disk.last_index()})")
                continue
            s = n.replica.raft.status()
            conf = f"voters={','.join(s.conf.voters)}"
            if s.conf.learners:
                conf += f" learners={','.join(s.conf.learners)}"
            out.append(
                f"{nid}: {s.role.name.lower():13s} term={s.term} leader={s.leader}"
                f" commit={s.commit} applied={s.applied} log={s.first_index}..{s.last_index}"
                f" {conf} hash={n.replica.state_hash()[:10]}"
            )
        return out


def sim_genesis(keyring: Keyring, voters: list[str]) -> Genesis:
    """The simulated cluster's genesis: the keyring's operator and voter keys, no certificates
    (the simulator is pure: it never opens TLS), default limits."""
    return parse_genesis(keyring.genesis(CLUSTER, voters))


def _refused(events: list[Any], reason: str) -> bool:
    """The outcome is one ``rejected`` event with ``reason``."""
    return len(events) == 1 and type(events[0]) is Rejected and events[0].reason == reason


def _from_wire(reply: object) -> ForwardReply:
    if isinstance(reply, FwdAt | FwdNotLeader | FwdDeclined):
        return reply_from_wire(reply)
    raise SimFailure(f"a forward answered with {reply!r}")


def _releaser(net: Network, link: tuple[str, str]) -> Callable[[], None]:
    return lambda: net.release(link)


def _r(node: SimNode) -> Replica:
    r = node.replica
    assert r is not None, f"{node.id} is down"
    return r


def run_seed(seed: int, ticks: int = 1500, verbose: bool = False) -> Result:
    return Simulation(seed, ticks=ticks, verbose=verbose).run()
