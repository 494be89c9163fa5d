"""The session bounds are part of the replicated state: a snapshot records them and a
restored state keeps them, whatever the restoring node's configuration says."""

from __future__ import annotations

import msgspec

from grenex.codec import encode_json
from grenex.replica import ReplicaState
from grenex.replica.sessions import Sessions


def _state(per_client: int, total: int) -> ReplicaState:
    st = ReplicaState(sessions=Sessions(per_client, total))
    st.apply_command(1, 1, encode_json({"type": "add_market", "market": "M", "tick": 1, "lot": 1}))
    for i in range(5):
        cmd = {
            "type": "place",
            "client": "a",
            "id": f"o{i}",
            "market": "M",
            "side": "buy",
            "qty": "1",
            "price": str(10 + i),
        }
        st.apply_command(2 + i, 1, encode_json(cmd))
    return st


def test_restored_state_keeps_the_recorded_bounds() -> None:
    st = _state(3, 100)
    blob = st.snapshot()
    back = ReplicaState.restore(blob, outcomes_per_client_max=4096, outcomes_max=131_072)
    assert back.sessions.outcomes_per_client_max == 3
    assert back.sessions.outcomes_max == 100
    assert back.snapshot() == blob  # and the same bytes, so the same state hash


def test_different_bounds_are_different_states() -> None:
    assert _state(3, 100).state_hash() != _state(4, 100).state_hash()


def test_version_1_snapshots_take_the_configured_bounds() -> None:
    blob = _state(3, 100).snapshot()
    fields = msgspec.msgpack.decode(blob)
    v1 = msgspec.msgpack.encode([1, *fields[1:6]])
    back = ReplicaState.restore(v1, outcomes_per_client_max=7, outcomes_max=70)
    assert back.sessions.outcomes_per_client_max == 7 and back.sessions.outcomes_max == 70
