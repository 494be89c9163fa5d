"""Membership chores of a node: joining a running cluster, and keeping every member's peer
name warm in the Grape link.

* :meth:`Membership.join` — until this node is a member: find the leader (any node's
  ``status``) and ask it to add this node as a learner (``Join``), every ``join_retry_ms``.
* :meth:`Membership.vouch_turn` — a driver turn hook: a member that has heard no leader for
  three election timeouts (:meth:`grenex.replica.Replica.voucher_due`) may be a member restarted
  with a stale configuration whose leader was added after it (every message of that leader is
  refused by its TLS anchors and dropped by its replica).  It asks a member of its own
  configuration, the next one each time, for ``members`` over a connection pinned to that
  member; the answer's members are admitted by the TLS identity (as a joining node's are) and
  vouched for in the replica (:meth:`~grenex.replica.Replica.vouch`), until the replica's own
  configuration changes.
* :meth:`Membership.keep_peers_fresh` — a driver turn hook: whenever the membership changes,
  the link keeps every other member's ``peer:<id>`` name looked up in the background, so a
  vote or the first forward to a new leader never waits on a DHT lookup (which takes seconds
  while any host of the DHT is unreachable: found in the fault lab).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from grenex.codec.api import service_names
from grenex.codec.peer import Join, JoinReply
from grenex.codec.signer import Signer
from grenex.consensus import InvalidConfChangeError, NotLeader, ProposalDroppedError, Role
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.grenache.tls import b64url, make_self_signed
from grenex.node.config import NodeConfig
from grenex.node.identity import NodeIdentity
from grenex.node.io import NodeIO
from grenex.node.peers import AskError, Peers
from grenex.replica import Replica
from grenex.replica.replica import VOUCHED_MAX

__all__ = ["Membership", "Reconciler"]

log = logging.getLogger("grenex.node")


class Membership:
    def __init__(
        self,
        cfg: NodeConfig,
        io: NodeIO,
        link: Link | None,
        rpc: PeerRPCClient | None,
        peers: Peers | None,
        names: dict[str, str],
    ) -> None:
        assert link is not None and rpc is not None and peers is not None
        self.cfg = cfg
        self.io = io
        self.link = link
        self.rpc = rpc
        self.peers = peers
        self.names = names
        self.identity: NodeIdentity | None = None  # set by the node when it serves TLS
        self._fresh: list[str] = []  # the members whose peer names the link keeps fresh
        self._conf: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._vouch_task: asyncio.Task[None] | None = None
        self._vouch_answer: tuple[str, list[str]] | None = None  # (voucher, members)
        self.vouches = 0  # answers the replica took

    async def join(self, replica: Replica) -> None:
        """Until this node is a member of the consensus configuration.  SPEC §8: the operator
        admits a node (``admit``), or, when the genesis says ``"join": "open"``, the node
        joins itself with a ``join`` command signed by its own key (sent here, once, to any
        node's client API).  The leader then adds every admitted member as a learner
        (:class:`Reconciler`); until it has, this node asks the leader now and then (peer
        ``Join``), which helps only once the admission is applied there."""
        cfg = self.cfg
        g = cfg.genesis
        sent = False
        waited = 0
        while cfg.node_id not in replica.raft.conf_state().members():
            if self.identity is not None and g is not None:
                await self._learn_members([v.id for v in g.voters])
            if g is not None and g.join == "open" and cfg.key is not None and not sent:
                sent = await self._send_join(g.cluster_id)
            elif not sent and waited % 30 == 0:
                log.warning("%s waits to be admitted by the operator (grenex admit)", cfg.node_id)
            leader = await self._find_leader()
            if leader is not None:
                try:
                    reply = await self.peers.ask(leader, Join(cfg.node_id), cfg.command_timeout_ms)
                    if isinstance(reply, JoinReply) and not reply.ok:
                        log.info("join: %s", reply.why)
                except AskError as e:
                    log.info("join: %s", e)
            waited += 1
            await self.io.sleep(cfg.join_retry_ms / 1000)
        log.info("%s is a member", cfg.node_id)

    async def _learn_members(self, voters: list[str]) -> None:
        """The current members from a genesis voter (pinned to its certificate), so that
        voters admitted after the genesis can reach this new node before its own state
        knows them."""
        assert self.identity is not None
        for v in voters:
            if v == self.cfg.node_id:
                continue
            reply = await self._members_of(v, "join")
            if reply is not None:
                self.identity.learn(reply)
                return

    async def _members_of(self, node: str, why: str) -> object | None:
        """``node``'s ``members`` (its client API, over a connection pinned to its
        certificate), or None when it does not answer."""
        try:
            reply: object = await self.rpc.request(
                service_names(self.cfg.cluster, node)["node"],
                {"action": "members", "args": [{}]},
                timeout_ms=self.cfg.command_timeout_ms,
            )
        except GrenacheError as e:
            log.info("%s: no members from %s: %s", why, node, e)
            return None
        return reply

    async def _send_join(self, cluster_id: str) -> bool:
        """The signed ``join`` command (SPEC §8), to any node's client API."""
        cfg = self.cfg
        assert cfg.key is not None
        cmd = {
            "type": "join",
            "client": cfg.node_id,
            "node": cfg.node_id,
            "key": cfg.key.public_key,
            "cert": b64url(make_self_signed(cfg.key.seed, cfg.node_id)),
            "nonce": self.io.wall_ms() * 1000,
        }
        env = msgspec.json.decode(Signer(cluster_id, {}).command(cmd, cfg.key))
        try:
            reply = await self.rpc.request(
                self.names["nodes"],
                {"action": "join", "args": [env]},
                timeout_ms=cfg.command_timeout_ms,
            )
        except GrenacheError as e:
            log.info("join: %s", e)
            return False
        log.info("join: %s", str(reply)[:200])
        return True

    async def _find_leader(self) -> str | None:
        try:
            replies = await self.rpc.map(self.names["nodes"], {"action": "status", "args": [{}]})
        except GrenacheError as e:
            log.info("join: no status from the nodes: %s", e)
            return None
        for r in replies:
            if r.ok and isinstance(r.result, dict) and isinstance(r.result.get("leader"), str):
                leader: str = r.result["leader"]
                if leader != self.cfg.node_id:
                    return leader
        return None

    def vouch_turn(self, replica: Replica) -> None:
        """A driver turn hook (see the module docstring)."""
        answer, self._vouch_answer = self._vouch_answer, None
        if answer is not None and replica.vouch(*answer):
            self.vouches += 1
            log.info("membership: %s vouches for %s", answer[0], ",".join(answer[1]))
        if self._vouch_task is not None:
            return
        voucher = replica.voucher_due()
        if voucher is None:
            return
        log.info("membership: no leader heard for long; asking %s for the members", voucher)
        self._vouch_task = asyncio.get_running_loop().create_task(self._ask_voucher(voucher))

    async def close(self) -> None:
        task, self._vouch_task = self._vouch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _ask_voucher(self, voucher: str) -> None:
        try:
            reply = await self._members_of(voucher, "membership")
        finally:
            self._vouch_task = None
        members = reply.get("members") if isinstance(reply, dict) else None
        if not isinstance(members, list):
            return
        ids = [
            m["id"]
            for m in members[:VOUCHED_MAX]
            if isinstance(m, dict)
            and isinstance(m.get("id"), str)
            and m.get("role") in ("voter", "learner")
        ]
        if self.identity is not None:
            self.identity.learn(reply)  # their certificates: admitted and dialled, pinned
        self._vouch_answer = (voucher, ids)

    def keep_peers_fresh(self, replica: Replica) -> None:
        """A driver turn hook (see the module docstring)."""
        raft = replica.raft
        conf = (raft.voters, raft.learners)  # tuples, replaced on a membership change
        if conf == self._conf:
            return  # every turn: one tuple comparison, nothing built
        self._conf = conf
        members = sorted(conf[0]) + sorted(conf[1])
        me, cluster = self.cfg.node_id, self.cfg.cluster
        names = [service_names(cluster, m)["peer"] for m in members if m != me]
        gone = [
            service_names(cluster, m)["peer"] for m in self._fresh if m not in members and m != me
        ]
        if gone:
            self.link.stop_keeping_fresh(*gone)
        if names:
            self.link.keep_fresh(*names)
        self._fresh = members


class Reconciler:
    """The leader's side of SPEC §8 membership: the replicated member list (``admit``,
    ``join``, ``promote``, ``remove`` applied by every replica) is the authority; the leader
    brings the consensus configuration to it with Raft conf changes, one at a time:

    * a member the list holds as a learner and the configuration lacks: added as a learner;
    * a member the list holds as a voter and the configuration as a learner: promoted once its
      log has caught up with the commit index (a voter that lacks committed entries could elect
      a leader without them), so a promotion waits while it catches up;
    * a member the list says was removed: removed from the configuration.

    A driver turn hook; it scans only when the member list, the configuration or the role
    changed, or while a change is still to make."""

    def __init__(self) -> None:
        self._seen: tuple[int, tuple[str, ...], tuple[str, ...], int] | None = None
        self.changes = 0

    def turn(self, replica: Replica) -> None:
        raft = replica.raft
        auth = replica.state.auth
        key = (auth.members_version, raft.voters, raft.learners, int(raft.role))
        if key == self._seen or raft.role != Role.LEADER:
            self._seen = key
            return
        voters, learners = raft.voters, raft.learners
        progress: dict[str, Any] | None = None
        pending = False
        for m in auth.members_all():
            try:
                if m.role == "learner" and m.id not in voters and m.id not in learners:
                    replica.add_learner(m.id)
                elif m.role == "voter" and m.id in learners:
                    if progress is None:
                        progress = raft.progress()
                    p = progress.get(m.id)
                    if p is None or p.match < raft.log.committed:
                        pending = True
                        continue
                    replica.promote(m.id)
                elif m.role == "removed" and (m.id in voters or m.id in learners):
                    replica.remove(m.id)
                else:
                    continue
            except (NotLeader, ProposalDroppedError, InvalidConfChangeError) as e:
                log.info("membership: %s waits (%s)", m.id, e)
                pending = True
                break
            self.changes += 1
            log.info("membership: %s brought to %s", m.id, m.role)
            pending = True  # one change at a time: look again next turn
            break
        self._seen = None if pending else key
