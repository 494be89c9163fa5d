"""Snapshots serialised in a forked child (grenex.node.snapshotter).

Proves, on a single-voter replica driven in this process: a due snapshot is serialised by a
child and stored between steps at the point it was taken, byte for byte what the state was
then, even though more entries were applied while the child ran (the child's copy-on-write
image); the log is compacted below it; nothing is started while one runs or when none is due;
without fork, after a child failed, or after one ran over its time (killed), the snapshot is
taken in the foreground; ``close`` kills a running child and reaps it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal

import pytest

from grenex.codec.genesis import parse_genesis
from grenex.codec.signer import Keyring, Signer
from grenex.consensus import Config, MemoryStorage, Message, bootstrap
from grenex.node.snapshotter import BackgroundSnapshots
from grenex.replica import Replica, ReplicaConfig, ReplicaState

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

KEYS = Keyring("snapshotter")
GENESIS = parse_genesis(KEYS.genesis("main", ["a"]))
SIGNER = Signer(GENESIS.cluster_id, KEYS)  # counter nonces: the same envelopes every run


def place(i: int) -> bytes:
    side = "buy" if i % 2 else "sell"
    return SIGNER.command(
        {
            "type": "place",
            "client": "c",
            "id": f"o{i}",
            "market": "M",
            "side": side,
            "qty": "1",
            "price": str(100 + i % 5),
        }
    )


def single_voter(interval: int) -> Replica:
    st = MemoryStorage()
    bootstrap(st, ["a"])
    cfg = ReplicaConfig(
        Config(id="a"),
        genesis=GENESIS,
        snapshot_interval_entries=interval,
        compaction_retain_entries=2,
        auto_snapshot=False,
    )
    r = Replica(cfg, st, random.Random(1))
    drive(r)  # apply the bootstrap membership
    r.raft.campaign()
    drive(r)
    market = {"type": "add_market", "client": KEYS.operator, "market": "M", "tick": "1", "lot": "1"}
    r.propose(SIGNER.command(market))
    r.propose(SIGNER.register("c"))
    drive(r)
    return r


def drive(r: Replica) -> None:
    sent: list[Message] = []
    r.handle_ready(sent.append)
    assert not sent  # a single voter talks to nobody


def apply_places(r: Replica, start: int, n: int) -> None:
    for i in range(start, start + n):
        r.propose(place(i))
    drive(r)


def busy(snaps: BackgroundSnapshots) -> bool:
    return snaps.running  # a call, so that mypy does not narrow it between steps


async def wait_for(cond: object, timeout_s: float = 20.0) -> None:
    assert callable(cond)
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


async def test_a_due_snapshot_is_serialised_by_a_child_at_its_point() -> None:
    r = single_voter(interval=50)
    wake = asyncio.Event()
    snaps = BackgroundSnapshots(r, wake)
    apply_places(r, 0, 10)
    snaps.step()
    assert not busy(snaps)  # not due yet
    apply_places(r, 10, 60)
    point_index = r.applied_index
    expected = r.state.snapshot()
    snaps.step()
    assert busy(snaps)
    apply_places(r, 70, 30)  # the node goes on applying while the child serialises
    snaps.step()  # one at a time: nothing new starts
    await wait_for(lambda: not busy(snaps))
    assert wake.is_set()
    assert r.storage.snapshot().index == 0  # stored only at the next step, by the driver
    snaps.step()
    stored = r.storage.snapshot()
    assert stored.index == point_index and stored.data == expected
    assert r.storage.first_index() == point_index - 2 + 1  # compacted, 2 entries kept
    assert snaps.taken_in_background == 1 and snaps.failures == 0
    assert r.applied_index > point_index


async def test_without_fork_the_snapshot_is_taken_in_the_foreground() -> None:
    r = single_voter(interval=20)
    snaps = BackgroundSnapshots(r, asyncio.Event(), fork=False)
    apply_places(r, 0, 30)
    snaps.step()
    assert not busy(snaps)
    assert r.storage.snapshot().index == r.applied_index
    assert r.storage.snapshot().data == r.state.snapshot()


async def test_close_kills_a_running_child() -> None:
    r = single_voter(interval=20)
    apply_places(r, 0, 3_000)  # enough state that serialising takes a moment
    snaps = BackgroundSnapshots(r, asyncio.Event())
    snaps.step()
    pid = snaps._pid
    assert pid is not None and busy(snaps)
    await snaps.close()
    assert not busy(snaps) and snaps.failures == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped


async def test_a_failed_child_falls_back_to_the_foreground(monkeypatch: pytest.MonkeyPatch) -> None:
    r = single_voter(interval=20)
    apply_places(r, 0, 30)
    node_pid = os.getpid()
    real = ReplicaState.snapshot

    def fails_in_a_child(self: ReplicaState) -> bytes:
        if os.getpid() != node_pid:
            raise RuntimeError("the child cannot serialise")
        return real(self)

    monkeypatch.setattr(ReplicaState, "snapshot", fails_in_a_child)
    snaps = BackgroundSnapshots(r, asyncio.Event())
    snaps.step()
    assert busy(snaps)
    await wait_for(lambda: not busy(snaps))
    assert snaps.failures == 1 and not snaps.fork
    assert r.storage.snapshot().index == 0  # nothing stored from the failed child
    snaps.step()  # still due: taken in the foreground now
    assert r.storage.snapshot().index == r.applied_index
    assert r.storage.snapshot().data == real(r.state)


async def test_a_child_over_its_time_is_killed_and_the_foreground_takes_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = single_voter(interval=20)
    apply_places(r, 0, 30)
    node_pid = os.getpid()
    real = ReplicaState.snapshot

    def hangs_in_a_child(self: ReplicaState) -> bytes:
        if os.getpid() != node_pid:
            signal.pause()  # a child that never finishes (until killed)
        return real(self)

    monkeypatch.setattr(ReplicaState, "snapshot", hangs_in_a_child)
    snaps = BackgroundSnapshots(r, asyncio.Event(), child_timeout_s=0.3)
    snaps.step()
    pid = snaps._pid
    assert pid is not None and busy(snaps)
    await wait_for(lambda: not busy(snaps))
    assert snaps.failures == 1 and not snaps.fork
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped
    snaps.step()
    assert r.storage.snapshot().index == r.applied_index
