"""Membership chores of a node: joining a running cluster, and keeping every member's peer
name warm in the Grape link.

* :meth:`Membership.join` — until this node is a member: find the leader (any node's
  ``status``) and ask it to add this node as a learner (``Join``), every ``join_retry_ms``.
* :meth:`Membership.keep_peers_fresh` — a driver turn hook: whenever the membership changes,
  the link keeps every other member's ``peer:<id>`` name looked up in the background, so a
  vote or the first forward to a new leader never waits on a DHT lookup (which takes seconds
  while any host of the DHT is unreachable: found in the fault lab).
"""

from __future__ import annotations

import logging

from grenex.codec.api import service_names
from grenex.codec.peer import Join, JoinReply
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.node.config import NodeConfig
from grenex.node.io import NodeIO
from grenex.node.peers import AskError, Peers
from grenex.replica import Replica

__all__ = ["Membership"]

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
        self._fresh: list[str] = []  # the members whose peer names the link keeps fresh
        self._conf: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    async def join(self, replica: Replica) -> None:
        """Until this node is a member: ask the leader to add it as a learner."""
        cfg = self.cfg
        while cfg.node_id not in replica.raft.conf_state().members():
            leader = await self._find_leader()
            if leader is not None:
                try:
                    reply = await self.peers.ask(leader, Join(cfg.node_id), cfg.command_timeout_ms)
                    if isinstance(reply, JoinReply) and not reply.ok:
                        log.info("join: %s", reply.why)
                except AskError as e:
                    log.info("join: %s", e)
            await self.io.sleep(cfg.join_retry_ms / 1000)
        log.info("%s is a member", cfg.node_id)

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
