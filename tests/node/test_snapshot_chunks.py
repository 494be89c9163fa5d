"""Snapshots travel in pieces (issue 11: small bodies for ordinary peer requests, snapshots sent
separately): a learner admitted after the log was compacted catches up from a snapshot that
the leader sends as ``SnapChunk`` pieces of at most ``--peer-chunk-bytes``, each its own small
peer request; the learner assembles them in order, checks the SHA-256 and installs the state.
And the receiving side refuses pieces out of bounds, out of order, or of a changed transfer."""

from __future__ import annotations

import hashlib

import pytest

from grenex.codec.api import BadRequest, Busy
from grenex.codec.peer import SnapChunk
from grenex.devnet import LocalCluster
from grenex.node.peer_api import Assemblies

pytestmark = pytest.mark.timeout(180)


def pieces(data: bytes, size: int, src: str = "n1", transfer: int = 1) -> list[SnapChunk]:
    d = hashlib.sha256(data).digest()
    return [
        SnapChunk(src, transfer, i, len(data), d, data[i : i + size])
        for i in range(0, len(data), size)
    ]


def test_assembly_in_order_completes_once_with_its_digest() -> None:
    asm = Assemblies(1 << 20, 2, 60.0, lambda: 0.0)
    data = bytes(range(256)) * 40
    got = [asm.take(p) for p in pieces(data, 1000)]
    assert [a.done for a, _ in got] == [False] * 10 + [True]
    assert got[-1][1] == data and all(w is None for _, w in got[:-1])
    assert asm.completed == 1


def test_assembly_refuses_gaps_changes_and_oversize() -> None:
    asm = Assemblies(10_000, 1, 60.0, lambda: 0.0)
    data = b"x" * 5000
    ps = pieces(data, 1000)
    asm.take(ps[0])
    ack, whole = asm.take(ps[2])  # a gap: start again
    assert ack.restart and whole is None
    bad = pieces(b"y" * 5000, 1000)[0]
    assert asm.take(ps[0])[0].received == 1000
    assert asm.take(SnapChunk("n1", 1, 1000, 5000, bad.digest, b"z" * 1000))[0].restart
    with pytest.raises(BadRequest):
        asm.take(SnapChunk("n1", 2, 0, 20_000, bad.digest, b"z"))  # beyond bytes_max
    wrong = SnapChunk("n1", 3, 0, 3, hashlib.sha256(b"abd").digest(), b"abc")
    ack, whole = asm.take(wrong)  # complete but not what the digest says
    assert ack.restart and whole is None
    asm.take(pieces(data, 1000, src="n2")[0])
    with pytest.raises(Busy):  # one transfer at a time (transfers_max=1)
        asm.take(pieces(data, 1000, src="n3")[0])


async def test_a_learner_catches_up_from_a_snapshot_sent_in_pieces(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # with signature checks in threads (not the default): log entries verified as they arrive
    args: tuple[str, ...] = ("--snapshot-interval", "50", "--compaction-retain", "5")
    args += ("--peer-chunk-bytes", "4096", "--verify-threads", "2")
    async with LocalCluster(
        nodes=3, voters=3, grapes=1, node_args=args, base_dir=tmp_path_factory.mktemp("chunks")
    ) as c:
        async with c.client(node="n1") as cl:
            for i in range(4):  # resting orders: a snapshot of several pieces
                orders = [
                    {"market": "BTC-USD", "side": "buy", "qty": "0.01", "price": str(1000 + j)}
                    for j in range(100 * i, 100 * i + 100)
                ]
                results = await cl.place_many([{**o, "client": f"chunky{i}"} for o in orders])
                assert all(getattr(r, "status", None) == "resting" for r in results)
            for i in range(60):  # entries beyond a snapshot, so the log below it is compacted
                await cl.place("BTC-USD", "sell", "0.01", str(900_000 + i), client="filler")
        n4 = await c.add_node()
        st = await c.wait_converged(60)
        assert st[n4]["snapshot_transfers"] >= 1  # it came in pieces
        assert st[n4]["first_index"] > 1  # and the learner holds no log below it
        async with c.client(node=n4) as cl4:
            assert len(await cl4.orders("chunky3")) == 100
