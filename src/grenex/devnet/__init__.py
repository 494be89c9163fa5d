"""grenex.devnet: a whole grenex network on one machine, for people and tests.

::

    from grenex.devnet import LocalCluster

    async with LocalCluster(nodes=5, voters=3) as c:
        leader = await c.wait_leader()

:class:`LocalCluster` starts Grapes and ``grenex node`` processes on loopback and stops every
one of them by PID.  ``grenex up`` (:mod:`grenex.devnet.up`) keeps such a network running
until Ctrl-C; ``grenex demo`` (:mod:`grenex.devnet.demo`) trades on it through
:class:`~grenex.client.GrenexClient` and proves the replicas agree.  The node is used only as
a process here: this package never imports the node's internals.
"""

from grenex.devnet.cluster import DEFAULT_MARKETS, ClusterError, LocalCluster, NodeProc

__all__ = ["DEFAULT_MARKETS", "ClusterError", "LocalCluster", "NodeProc"]
