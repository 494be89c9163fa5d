"""Replica snapshots serialised in a forked child, so the driver never stalls on them.

Why: a snapshot is the whole state — books, session table, every used order id (kept forever)
— and serialising it took ~0.13 s after 300,000 orders and ~0.4 s after 600,000, growing with
history. Done on the driver task, every node stopped applying and answering for that long each
``snapshot_interval_entries``; under an open-loop load the queues filled meanwhile and commands
were refused.

Theory of operation (Redis's background save): when a snapshot is due, the driver — between
steps, so nothing is half-applied and no persist is running — captures the point
(``Replica.snapshot_point``: applied index and membership) and forks. The child holds a
copy-on-write image of the state at exactly that point; it closes every inherited descriptor
but its pipe (it must not keep the node's sockets or log files open), restores default signal
handling (a Ctrl-C to the process group must not reach the node's handlers through the shared
wakeup pipe), asks the kernel to kill it if the node dies, serialises, writes the bytes to the
pipe and exits. The node reads the pipe in a thread and reaps the child; the driver then stores
the snapshot and compacts (``Replica.store_snapshot``), again between steps. Entries applied
meanwhile stay in the log above the snapshot, as after any snapshot.

At most one child runs at a time. If forking or the child fails, or the child is still at it
after ``child_timeout_s`` (it is then killed), the node logs it and takes snapshots
synchronously from then on, so the log stays bounded either way. Memory: the child
shares the node's pages and copies those it touches (reference counts), at most the size of
the state, for the time of one serialisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import warnings
from typing import Final

from grenex.consensus import ConfState
from grenex.replica import Replica, ReplicaState
from grenex.replica.driver import Snapshots

__all__ = ["BackgroundSnapshots"]

log = logging.getLogger("grenex.node.snapshot")

_PR_SET_PDEATHSIG: Final = 1
_READ_CHUNK: Final = 1 << 20


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the child ends by itself soon anyway
        pass
    if os.getppid() != parent:  # the node died before prctl took effect
        os._exit(1)


def _child(state: ReplicaState, w: int, parent: int) -> None:
    """In the forked child: serialise ``state`` into ``w`` and exit. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(parent)
        gc.disable()  # a collection would touch (and copy) every page of the image
        os.closerange(3, w)
        os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))
        view = memoryview(state.snapshot())
        while view:
            view = view[os.write(w, view) :]
        code = 0
    finally:
        os._exit(code)


def _read_all(r: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(r, _READ_CHUNK):
            chunks.append(chunk)
    finally:
        os.close(r)
    return b"".join(chunks)


class BackgroundSnapshots(Snapshots):
    """One node's snapshot taking (the forked implementation of the snapshot protocol of
    ``grenex.replica.driver``); the driver calls :meth:`step` between turns."""

    def __init__(
        self,
        replica: Replica,
        wake: asyncio.Event,
        *,
        fork: bool = True,
        child_timeout_s: float = 300.0,
    ) -> None:
        super().__init__(replica)
        self.wake = wake
        self.fork = fork and hasattr(os, "fork")
        # a child still serialising after this is killed (and the foreground used from then
        # on): a stuck child must not stop snapshots, and so compaction, for good
        self.child_timeout_s = child_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._pid: int | None = None
        self._done: tuple[tuple[int, ConfState], bytes] | None = None
        self.taken_in_background = 0
        self.failures = 0
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None

    def _running(self) -> bool:
        return self._task is not None

    def _finished(self) -> tuple[tuple[int, ConfState], bytes] | None:
        done, self._done = self._done, None
        if done is not None:
            self.taken_in_background += 1
        return done

    def _start(self, point: tuple[int, ConfState]) -> None:
        replica = self.replica
        if not self.fork:
            self._foreground(point)
            return
        try:
            r, w = os.pipe()
        except OSError as e:
            self._foreground(point, f"no pipe: {e}")
            return
        parent = os.getpid()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork in a process with threads: the child here only
                # serialises and writes to its pipe, it takes no lock another thread may hold
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            self._foreground(point, f"fork failed: {e}")
            return
        if pid == 0:
            _child(replica.state, w, parent)
        os.close(w)
        self._pid = pid
        self._task = asyncio.create_task(self._collect(pid, r, point), name="snapshot")

    def _foreground(self, point: tuple[int, ConfState], why: str = "") -> None:
        if why:
            log.warning("snapshot in the foreground (%s)", why)
        data = self.replica.state.snapshot()
        self._record(point[0], data)
        if self.replica.store_snapshot(point, data):
            self.stored += 1

    async def _collect(self, pid: int, r: int, point: tuple[int, ConfState]) -> None:
        reader = asyncio.ensure_future(asyncio.to_thread(_read_all, r))
        try:
            late = False
            try:
                data = await asyncio.wait_for(asyncio.shield(reader), self.child_timeout_s)
            except TimeoutError:
                late = True
                self._kill()
                data = await reader  # the pipe ends with the child
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
            self._pid = None
            if late:
                raise OSError(f"snapshot child ran over {self.child_timeout_s:g} s; killed")
            if os.waitstatus_to_exitcode(status) != 0 or not data:
                raise OSError(f"snapshot child exited with status {status}")
            self._done = (point, data)
        except OSError as e:
            if not self._closing:
                self.failures += 1
                log.warning("background snapshot failed (%s); next ones in the foreground", e)
                self.fork = False
        finally:
            self._task = None
            self.wake.set()

    def _kill(self) -> None:
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)

    async def close(self) -> None:
        """Stop a running child and wait for its reader."""
        self._closing = True
        self._kill()
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
