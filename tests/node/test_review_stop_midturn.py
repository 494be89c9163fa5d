"""Review: a durable leader stopped while a turn's flush runs answers a proposed forward
"declined, nothing happened".

``DriverService._turn`` feeds the forwarded batch to the gateway, whose ``pump`` proposes it,
then awaits the flush in a worker thread (``--data-dir``).  ``DriverService.stop`` cancels the
driver task right there: the gateway's answer (``At``) is never dispatched, and ``stop`` answers
every pending forward ``FwdDeclined("the leader is stopping", busy=False)``.  The forwarder's
gateway turns that into ``REFUSED``: "nothing was done: send the command again" — but the
entries are in the leader's log (and being written to its disk by the thread that goes on
running), so a later leader may commit them.  The honest answer is "unknown".

The test drives one single-voter leader's ``DriverService`` directly; its storage's ``sync``
blocks until the test lets it go, so ``stop`` lands inside the flush deterministically.
"""

from __future__ import annotations

import asyncio
import random
import threading

from grenex.codec.genesis import parse_genesis
from grenex.codec.peer import FwdDeclined
from grenex.codec.signer import Keyring, Signer
from grenex.codec.stamp import unstamp
from grenex.consensus import Config, EntryKind, MemoryStorage, Role, bootstrap
from grenex.grenache.testing import async_wait_for
from grenex.node.driving import DriverService
from grenex.node.io import FakeIO
from grenex.node.peers import PeerLimits, Peers
from grenex.replica import Replica, ReplicaConfig
from grenex.replica.driver import InlineSnapshots
from grenex.replica.gateway import Gateway


class _BlockingStorage(MemoryStorage):
    """``sync`` blocks (in the flush thread) once armed, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.left = threading.Event()

    def sync(self) -> None:
        if self.armed:
            self.entered.set()
            self.release.wait(10.0)
            self.left.set()


def _leader(st: _BlockingStorage) -> Replica:
    bootstrap(st, ["a"])
    r = Replica(
        ReplicaConfig(
            Config("a", election_timeout_ticks=4, heartbeat_interval_ticks=1),
            genesis=GENESIS,
            auto_snapshot=False,
        ),
        st,
        random.Random(1),
    )
    for _ in range(20):
        r.tick()
        r.handle_ready(lambda m: None)
        if r.raft.role == Role.LEADER:
            return r
    raise AssertionError("a lone voter leads")


KEYS = Keyring("midturn")
GENESIS = parse_genesis(KEYS.genesis("main", ["a"]))
CMD = Signer(GENESIS.cluster_id, KEYS).command(
    {"type": "add_market", "client": KEYS.operator, "market": "M", "tick": "1", "lot": "1"}
)


def _service(st: _BlockingStorage) -> tuple[DriverService, Peers]:
    replica = _leader(st)
    io = FakeIO()
    link = io.link(["http://grape-1"], 1_000)
    peers = Peers(
        "a",
        "main",
        io.rpc_client(link, 1_000),
        PeerLimits(1 << 20, 1 << 20, 4, 1_000, 1_000),
        lambda peer, snap: None,
        lambda peer: None,
    )
    driver = DriverService(
        node_id="a",
        io=io,
        replica=replica,
        gateway=Gateway("a"),
        snapshots=InlineSnapshots(replica),
        peers=peers,
        tick_ms=50,
        durable=True,
        inbox_messages_max=64,
        forward_timeout_ms=1_000,
        on_applied=lambda applied: None,
    )
    driver.start()
    return driver, peers


async def test_review_a_forward_proposed_before_stop_is_not_declined() -> None:
    st = _BlockingStorage()
    driver, peers = _service(st)
    replica = driver.replica
    try:
        st.armed = True
        answer = driver.forwarded("b", 7, [CMD])
        await async_wait_for(st.entered.is_set, 5.0, message="the flush started")
        # the batch is in the leader's log: proposed, being made durable
        proposed = [
            e
            for e in replica.raft.log.entries(1, replica.raft.log.last_index() + 1, 1 << 30, 100)
            or []
            if e.kind == EntryKind.NORMAL and unstamp(e.data)[1] == CMD
        ]
        assert len(proposed) == 1
        await driver.stop()
        assert answer.done()
        reply = answer.exception() or answer.result()
        # "declined, not busy" tells the forwarder nothing happened: it did
        assert not (isinstance(reply, FwdDeclined) and not reply.busy), reply
    finally:
        st.release.set()
        await async_wait_for(st.left.is_set, 5.0, message="the flush thread ended")
        await driver.stop()
        await peers.close()
        await asyncio.sleep(0)


async def test_review_stop_waits_for_a_flush_in_progress() -> None:
    """``Node.stop`` closes the storage right after ``DriverService.stop``: that must not
    return while a worker thread still writes and fsyncs the Ready (a closed file descriptor,
    or one the number of which was reused by then)."""
    st = _BlockingStorage()
    driver, peers = _service(st)
    try:
        st.armed = True
        driver.submit(CMD)
        await async_wait_for(st.entered.is_set, 5.0, message="the flush started")
        flushed_when_stopped: list[bool] = []
        stopping = asyncio.ensure_future(driver.stop())
        stopping.add_done_callback(lambda _: flushed_when_stopped.append(st.left.is_set()))
        # let the flush end a little later; a stop that waits for it returns after that
        asyncio.get_running_loop().call_later(0.2, st.release.set)
        await asyncio.wait_for(stopping, 5.0)
        assert flushed_when_stopped == [True]
    finally:
        st.release.set()
        await async_wait_for(st.left.is_set, 5.0, message="the flush thread ended")
        await driver.stop()
        await peers.close()
