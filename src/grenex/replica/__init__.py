"""Pure glue between consensus and the engine: one replica, its driver step, exactly-once.

Start at :class:`Replica` (the driver protocol is in its module docstring), :class:`Applied`
(what a committed command produced), :class:`Proposals` (matching outcomes to proposers), and
``sessions`` (the exactly-once rules and their bounds).
"""

from grenex.replica.replica import Applied, Proposals, Replica, ReplicaConfig
from grenex.replica.sessions import Outcome, Sessions, session_keys
from grenex.replica.state import (
    SNAPSHOT_VERSION,
    ReplicaError,
    ReplicaSnapshotError,
    ReplicaState,
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
    "Sessions",
    "session_keys",
]
