"""Pure glue between consensus and the engine: one replica, its driver step, exactly-once.

Start at :class:`Replica` (the driver protocol is in its module docstring), :class:`Applied`
(what a committed command produced), :class:`Proposals` (matching outcomes to proposers), and
``auth`` (SPEC §8: accounts, nonces and exactly-once, membership).
"""

from grenex.replica.replica import Applied, Proposals, Replica, ReplicaConfig
from grenex.replica.state import (
    SNAPSHOT_VERSION,
    Outcome,
    ReplicaError,
    ReplicaSnapshotError,
    ReplicaState,
    Verifier,
)

__all__ = [
    "SNAPSHOT_VERSION",
    "Applied",
    "Outcome",
    "Proposals",
    "Replica",
    "ReplicaConfig",
    "ReplicaError",
    "ReplicaSnapshotError",
    "ReplicaState",
    "Verifier",
]
