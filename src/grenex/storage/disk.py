"""Durable consensus storage: an append-only log of checksummed records, plus snapshot files.

Theory of operation
-------------------
A directory holds:

* ``wal-<seq:016x>.log`` — log segments, written strictly by appending.  Each starts with the
  8-byte magic ``GXWAL001`` and then holds records::

      u32 length | u32 crc32(type + payload) | u8 type | payload      (little endian)

  ``ENTRIES``: ``u64 first_index, u32 count`` then per entry ``u64 term, u8 kind, u32 size,
  data``.  An ENTRIES record whose first index is at or below the current last index
  *truncates* the log there first (conflict truncation needs no record of its own).
  ``HARD_STATE``: ``u64 term, u64 commit, u16 vote size, vote``; the last one wins.
  ``SNAPSHOT``: ``u64 index, u64 term`` — the application stored a snapshot at that position;
  the log is kept if it holds that entry with that term (it still serves lagging followers),
  otherwise discarded.  ``INSTALL``: ``u64 index, u64 term`` — a follower installed a
  snapshot from the leader: the log is discarded and restarts after ``index``.
* ``snap-<index:020d>-<term:020d>.snap`` — the latest snapshot, ``GXSNAP01 | u32 crc32 |
  u64 size | payload`` with ``payload = u64 index, u64 term, conf, data``.  Written atomically:
  temporary file, fsync, rename, fsync of the directory; older ones are then deleted.

Durability: writes are buffered in memory and reach the file only in :meth:`sync`, as one
``write`` and one ``fdatasync`` for the whole batch, so a Ready of many entries costs one
fsync.  Nothing is durable before ``sync`` returns.

Opening replays the segments in order into an in-memory :class:`MemoryStorage` (which then
serves every read).  A bad record (short, wrong length, wrong checksum) in the *last* segment
is a torn write when no valid record follows it: the file is cut there (and fsynced) —
those bytes were never synced, so never acknowledged.  A bad record followed by valid ones,
or in an earlier segment, is corruption of synced data: :class:`CorruptStorageError`, unless
``truncate_corrupt_tail`` is set (an operator's explicit decision to lose that tail).

Compaction: when the active segment exceeds ``segment_bytes_max`` a new one is started (its
first record re-states the hard state), and ``compact(i)`` deletes the oldest segments whose
entries all lie at or below ``i``.  Replaying the remaining segments yields the same log above
``i`` (deleted records only held entries at or below ``i``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from grenex.consensus import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Snapshot,
)

__all__ = ["CorruptStorageError", "DiskStorage", "StorageError"]

WAL_MAGIC: Final = b"GXWAL001"
SNAP_MAGIC: Final = b"GXSNAP01"

REC_ENTRIES: Final = 1
REC_HARD_STATE: Final = 2
REC_SNAPSHOT: Final = 3
REC_INSTALL: Final = 4

_HDR: Final = struct.Struct("<IIB")  # length (type + payload), crc32, type
_HDR_SIZE: Final = 8  # length + crc; the type byte is counted in length
_ENTS_HEAD: Final = struct.Struct("<QI")
_ENT: Final = struct.Struct("<QBI")
_HS: Final = struct.Struct("<QQH")
_SNAPREC: Final = struct.Struct("<QQ")
_SNAPFILE_HEAD: Final = struct.Struct("<IQ")
_U16: Final = struct.Struct("<H")
_RECORD_MAX_BYTES: Final = 1 << 31


class StorageError(Exception):
    """Root of the operational errors raised by grenex.storage."""


class CorruptStorageError(StorageError):
    """The files hold damaged *synced* data; refusing to guess."""


def _record(rtype: int, payload: bytes) -> bytes:
    body = bytes((rtype,)) + payload
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


def _encode_entries(entries: Sequence[Entry]) -> bytes:
    parts = [_ENTS_HEAD.pack(entries[0].index, len(entries))]
    pack = _ENT.pack
    for e in entries:
        parts.append(pack(e.term, e.kind, len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def _decode_entries(p: bytes) -> list[Entry]:
    first, count = _ENTS_HEAD.unpack_from(p, 0)
    pos = _ENTS_HEAD.size
    out = []
    unpack = _ENT.unpack_from
    for i in range(count):
        term, kind, size = unpack(p, pos)
        pos += _ENT.size
        out.append(Entry(first + i, term, kind, p[pos : pos + size]))
        pos += size
    if pos != len(p):
        raise CorruptStorageError("entries record has trailing bytes")
    return out


def _encode_hs(hs: HardState) -> bytes:
    vote = hs.vote.encode() if hs.vote is not None else b""
    return _HS.pack(hs.term, hs.commit, len(vote)) + vote


def _decode_hs(p: bytes) -> HardState:
    term, commit, n = _HS.unpack_from(p, 0)
    vote = p[_HS.size : _HS.size + n].decode() if n else None
    return HardState(term, vote, commit)


def _encode_ids(ids: Sequence[str]) -> bytes:
    out = [_U16.pack(len(ids))]
    for i in ids:
        b = i.encode()
        out.append(_U16.pack(len(b)) + b)
    return b"".join(out)


def _decode_ids(p: bytes, pos: int) -> tuple[tuple[str, ...], int]:
    (n,) = _U16.unpack_from(p, pos)
    pos += 2
    ids = []
    for _ in range(n):
        (k,) = _U16.unpack_from(p, pos)
        pos += 2
        ids.append(p[pos : pos + k].decode())
        pos += k
    return tuple(ids), pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _datasync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


class _Segment:
    __slots__ = ("max_index", "path", "seq")

    def __init__(self, seq: int, path: Path) -> None:
        self.seq = seq
        self.path = path
        self.max_index = 0  # highest entry index written in it


class DiskStorage:
    """The consensus :class:`~grenex.consensus.Storage` on disk; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_bytes_max: int = 64 << 20,
        truncate_corrupt_tail: bool = False,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.segment_bytes_max = segment_bytes_max
        self.truncate_corrupt_tail = truncate_corrupt_tail
        self.repaired_bytes = 0  # bytes cut from a torn tail on open
        self.syncs = 0
        self._buf = bytearray()
        self._segments: list[_Segment] = []
        self._fd = -1
        self._size = 0
        self._mem = self._load()

    # -- opening ------------------------------------------------------------------------------

    def _load(self) -> MemoryStorage:
        for tmp in sorted(self.path.glob(".tmp-*")):
            tmp.unlink()
        snap = self._load_snapshot()
        segs = sorted(self.path.glob("wal-*.log"))
        for p in segs:
            self._segments.append(_Segment(int(p.name[4:20], 16), p))
        hard = EMPTY_HARD_STATE
        ents: list[Entry] = []  # contiguous, or empty
        base = 0  # when empty: the index the next entry must follow (after a reset)
        for i, seg in enumerate(self._segments):
            last = i == len(self._segments) - 1
            for rtype, payload in self._records(seg.path, last):
                if rtype == REC_ENTRIES:
                    new = _decode_entries(payload)
                    if not new:
                        continue
                    seg.max_index = max(seg.max_index, new[-1].index)
                    f = new[0].index
                    if ents and ents[0].index <= f <= ents[-1].index + 1:
                        del ents[f - ents[0].index :]
                        ents.extend(new)
                    elif not ents or f < ents[0].index:
                        if not ents and base and f != base + 1:
                            raise CorruptStorageError(f"entries at {f} after a reset at {base}")
                        # (the log may start mid-way: older segments were compacted away)
                        ents = new
                    else:
                        raise CorruptStorageError(f"gap in log: {ents[-1].index} then {f}")
                    base = 0
                elif rtype == REC_HARD_STATE:
                    hard = _decode_hs(payload)
                elif rtype == REC_SNAPSHOT:
                    index, term = _SNAPREC.unpack(payload)
                    ents, base = _apply_snapshot_rule(ents, index, term)
                elif rtype == REC_INSTALL:
                    index, _term = _SNAPREC.unpack(payload)
                    ents, base = [], index
                else:
                    raise CorruptStorageError(f"unknown record type {rtype} in {seg.path.name}")
        ents, _ = _apply_snapshot_rule(ents, snap.index, snap.term)
        if ents and ents[0].index > snap.index + 1:
            raise CorruptStorageError(
                f"log starts at {ents[0].index} but the snapshot ends at {snap.index}"
            )
        if not ents or ents[0].index > snap.index:
            parts = [Entry(snap.index, snap.term, 0, b""), *ents]
        elif ents[0].index == 1:
            # the whole log retained below the snapshot: the dummy is the one before index 1
            # (term 0), as it was before the restart — entry 1 stays readable (export)
            parts = [Entry(0, 0, 0, b""), *ents]
        else:
            parts = ents  # entries retained below the snapshot: the first is the dummy
        if hard.commit < snap.index:
            hard = HardState(hard.term, hard.vote, snap.index)
        last_index = parts[-1].index
        if hard.commit > last_index:
            raise CorruptStorageError(f"commit {hard.commit} beyond the log's end {last_index}")
        mem = MemoryStorage.from_parts(hard, snap, parts)
        self._open_active(hard)
        return mem

    def _records(self, path: Path, last: bool) -> list[tuple[int, bytes]]:
        data = path.read_bytes()
        if data[:8] != WAL_MAGIC:
            if last and len(data) < 8 and WAL_MAGIC.startswith(data):
                # torn while creating the segment
                self._cut(path, 0, len(data))
                path.write_bytes(WAL_MAGIC)
                return []
            raise CorruptStorageError(f"{path.name}: not a grenex log segment")
        out = []
        pos = 8
        n = len(data)
        while pos < n:
            rec = _parse(data, pos)
            if rec is None:
                if not last:
                    raise CorruptStorageError(f"{path.name}: bad record at offset {pos}")
                if _valid_record_after(data, pos + 1) and not self.truncate_corrupt_tail:
                    raise CorruptStorageError(
                        f"{path.name}: bad record at offset {pos} followed by valid ones"
                        " (damaged synced data, not a torn write)"
                    )
                self._cut(path, pos, n - pos)
                break
            rtype, payload, end = rec
            out.append((rtype, payload))
            pos = end
        return out

    def _cut(self, path: Path, offset: int, nbytes: int) -> None:
        with path.open("r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
        self.repaired_bytes += nbytes

    def _load_snapshot(self) -> Snapshot:
        files = sorted(self.path.glob("snap-*.snap"), reverse=True)
        for p in files:
            snap = _read_snapshot_file(p)
            if snap is not None:
                return snap
        if files:
            raise CorruptStorageError("every snapshot file is damaged")
        return Snapshot(0, 0, ConfState(), b"")

    def _open_active(self, hard: HardState) -> None:
        if not self._segments:
            self._new_segment(1, hard)
            return
        seg = self._segments[-1]
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def _new_segment(self, seq: int, hard: HardState) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self.path / f"wal-{seq:016x}.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        head = WAL_MAGIC + (_record(REC_HARD_STATE, _encode_hs(hard)) if seq > 1 else b"")
        os.write(fd, head)
        _datasync(fd)
        _fsync_dir(self.path)
        self._fd = fd
        self._size = len(head)
        self._segments.append(_Segment(seq, path))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- read side ----------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._mem.initial_state()

    def first_index(self) -> int:
        return self._mem.first_index()

    def last_index(self) -> int:
        return self._mem.last_index()

    def term(self, index: int) -> int:
        return self._mem.term(index)

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        return self._mem.entries(lo, hi, bytes_max)

    def snapshot(self) -> Snapshot:
        return self._mem.snapshot()

    def hard_state(self) -> HardState:
        return self._mem.hard_state()

    # -- write side ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        self._mem.append(entries)
        self._buf += _record(REC_ENTRIES, _encode_entries(entries))
        seg = self._segments[-1]
        seg.max_index = max(seg.max_index, entries[-1].index)

    def set_hard_state(self, hs: HardState) -> None:
        self._mem.set_hard_state(hs)
        self._buf += _record(REC_HARD_STATE, _encode_hs(hs))

    def apply_snapshot(self, snap: Snapshot) -> None:
        """A follower's install: the snapshot file is durable when this returns; the log reset
        is durable at the next ``sync``."""
        self._write_snapshot_file(snap)
        self._mem.apply_snapshot(snap)
        self._buf += _record(REC_INSTALL, _SNAPREC.pack(snap.index, snap.term))

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        snap = Snapshot(index, self._mem.term(index), conf, data)
        self._write_snapshot_file(snap)
        self._mem.create_snapshot(index, conf, data)
        self._buf += _record(REC_SNAPSHOT, _SNAPREC.pack(snap.index, snap.term))
        return snap

    def compact(self, index: int) -> None:
        index = min(index, self._mem.snapshot().index)
        self._mem.compact(index)
        # Delete the oldest segments holding nothing above ``index`` (never the active one).
        deleted = False
        while len(self._segments) > 1 and self._segments[0].max_index <= index:
            seg = self._segments.pop(0)
            seg.path.unlink()
            deleted = True
        if deleted:
            _fsync_dir(self.path)

    def sync(self) -> None:
        if self._buf:
            buf = memoryview(bytes(self._buf))
            self._buf.clear()
            while buf:
                n = os.write(self._fd, buf)
                buf = buf[n:]
                self._size += n
        _datasync(self._fd)
        self.syncs += 1
        if self._size >= self.segment_bytes_max:
            self._new_segment(self._segments[-1].seq + 1, self._mem.hard_state())

    # -- snapshots ----------------------------------------------------------------------------

    def _write_snapshot_file(self, snap: Snapshot) -> None:
        payload = b"".join(
            (
                _SNAPREC.pack(snap.index, snap.term),
                _encode_ids(snap.conf.voters),
                _encode_ids(snap.conf.learners),
                snap.data,
            )
        )
        body = SNAP_MAGIC + _SNAPFILE_HEAD.pack(zlib.crc32(payload), len(payload)) + payload
        name = f"snap-{snap.index:020d}-{snap.term:020d}.snap"
        tmp = self.path / f".tmp-{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path / name)
        _fsync_dir(self.path)
        for old in sorted(self.path.glob("snap-*.snap")):
            if old.name != name:
                old.unlink()


def _parse(data: bytes, pos: int) -> tuple[int, bytes, int] | None:
    """(type, payload, end) of the record at ``pos``, or None if it is not a valid record."""
    if pos + _HDR_SIZE + 1 > len(data):
        return None
    length, crc = struct.unpack_from("<II", data, pos)
    end = pos + _HDR_SIZE + length
    if length < 1 or length > _RECORD_MAX_BYTES or end > len(data):
        return None
    body = data[pos + _HDR_SIZE : end]
    if zlib.crc32(body) != crc:
        return None
    if body[0] not in (REC_ENTRIES, REC_HARD_STATE, REC_SNAPSHOT, REC_INSTALL):
        return None
    try:
        if body[0] == REC_ENTRIES:
            _decode_entries(body[1:])
        elif body[0] == REC_HARD_STATE:
            _decode_hs(body[1:])
        else:
            _SNAPREC.unpack(body[1:])
    except (struct.error, UnicodeDecodeError, CorruptStorageError):
        return None
    return body[0], body[1:], end


def _valid_record_after(data: bytes, start: int) -> bool:
    """Is there any valid record starting somewhere after ``start``?  (Torn-write test.)"""
    n = len(data)
    for pos in range(start, n - _HDR_SIZE):
        length = int.from_bytes(data[pos : pos + 4], "little")
        if 1 <= length <= n - pos - _HDR_SIZE and _parse(data, pos) is not None:
            return True
    return False


def _apply_snapshot_rule(ents: list[Entry], index: int, term: int) -> tuple[list[Entry], int]:
    """Raft's rule for a stored snapshot at (index, term): keep a log that holds that entry,
    discard one that does not.  Returns (entries, reset base or 0)."""
    if index == 0:
        return ents, 0
    if ents and ents[0].index <= index <= ents[-1].index:
        if ents[index - ents[0].index].term == term:
            return ents, 0
        return [], index
    if ents and ents[0].index > index:
        # The log starts after it: written later than this (older) snapshot, or its
        # segments before were compacted away.  Nothing to contradict.
        return ents, 0
    return [], index


def _read_snapshot_file(p: Path) -> Snapshot | None:
    data = p.read_bytes()
    head = len(SNAP_MAGIC) + _SNAPFILE_HEAD.size
    if len(data) < head or data[: len(SNAP_MAGIC)] != SNAP_MAGIC:
        return None
    crc, size = _SNAPFILE_HEAD.unpack_from(data, len(SNAP_MAGIC))
    payload = data[head:]
    if len(payload) != size or zlib.crc32(payload) != crc:
        return None
    index, term = _SNAPREC.unpack_from(payload, 0)
    voters, pos = _decode_ids(payload, _SNAPREC.size)
    learners, pos = _decode_ids(payload, pos)
    return Snapshot(index, term, ConfState(voters, learners), payload[pos:])
