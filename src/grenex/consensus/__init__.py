"""Pure sans-IO Raft: the consensus core, its storage interface, and in-memory storage.

Stdlib only; randomness is injected (a ``random.Random``); time is ``tick()``.  Start at
:class:`Raft` and :class:`Ready` (the contract between the core and its driver).
"""

from grenex.consensus.progress import Progress, ProgressState
from grenex.consensus.raft import Config, Raft, Ready, Role, Status
from grenex.consensus.storage import MemoryStorage, Storage, bootstrap, entry_size
from grenex.consensus.types import (
    EMPTY_HARD_STATE,
    CompactedError,
    ConfChange,
    ConfChangeOp,
    ConfState,
    ConsensusError,
    Entry,
    EntryKind,
    HardState,
    InvalidConfChangeError,
    Message,
    MessageType,
    NotLeader,
    ProposalDroppedError,
    Snapshot,
    SnapshotUnavailableError,
    UnavailableError,
    decode_conf_change,
    encode_conf_change,
)

__all__ = [
    "EMPTY_HARD_STATE",
    "CompactedError",
    "ConfChange",
    "ConfChangeOp",
    "ConfState",
    "Config",
    "ConsensusError",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidConfChangeError",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeader",
    "Progress",
    "ProgressState",
    "ProposalDroppedError",
    "Raft",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotUnavailableError",
    "Status",
    "Storage",
    "UnavailableError",
    "bootstrap",
    "decode_conf_change",
    "encode_conf_change",
    "entry_size",
]
