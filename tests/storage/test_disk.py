"""Durable storage: restart with state intact, batching, torn and corrupted files, snapshots.

Each test writes through the Storage interface into a temporary directory, damages or
reopens the files the way a crash or a bad disk would, and asserts what a reopened storage
holds.  Proves: term, vote, commit, entries and the snapshot survive a restart; one sync
covers a batch, and nothing is on disk before it; a torn tail (short record, zero fill,
checksum mismatch at the end) is cut and writing resumes; damage followed by valid records
or in an older segment is refused (CorruptStorageError) unless the operator asks to cut;
conflict truncation, a follower's snapshot install and a crash between the snapshot file and
the log record all replay correctly; segments roll and compaction deletes old ones without
changing the log above the compaction point; and, in a seeded random test, a crash that
cuts the file anywhere after the last sync always reopens to exactly the synced state.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from grenex.consensus import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Snapshot,
    bootstrap,
)
from grenex.storage import CorruptStorageError, DiskStorage

N = EntryKind.NORMAL


def ents(first: int, n: int, term: int, tag: bytes = b"e") -> list[Entry]:
    return [Entry(i, term, N, tag + b"%d" % i) for i in range(first, first + n)]


def all_entries(s: DiskStorage) -> list[Entry]:
    return s.entries(s.first_index(), s.last_index() + 1, 1 << 40)


def segment(path: Path) -> Path:
    segs = sorted(path.glob("wal-*.log"))
    return segs[-1]


def test_restart_keeps_term_vote_commit_log_and_snapshot(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    bootstrap(s, ["a", "b", "c"])
    s.append(ents(4, 5, 2))
    s.set_hard_state(HardState(2, "b", 6))
    s.sync()
    s.create_snapshot(6, ConfState(("a", "b", "c")), b"state at 6")
    s.sync()
    s.close()
    r = DiskStorage(tmp_path)
    assert r.initial_state() == (HardState(2, "b", 6), ConfState(("a", "b", "c")))
    assert r.snapshot() == Snapshot(6, 2, ConfState(("a", "b", "c")), b"state at 6")
    assert r.last_index() == 8
    assert [e.data for e in r.entries(7, 9, 1 << 20)] == [b"e7", b"e8"]
    assert r.term(6) == 2
    assert r.repaired_bytes == 0


def test_a_log_retained_below_a_snapshot_keeps_entry_1_after_a_restart(tmp_path: Path) -> None:
    # found by the fault lab: a node that took a snapshot (kept the whole log below it) and
    # restarted had lost entry 1 from its readable log (the export then failed: compacted)
    s = DiskStorage(tmp_path)
    bootstrap(s, ["a", "b", "c"])
    s.append(ents(4, 10, 2))
    s.set_hard_state(HardState(2, "b", 13))
    s.sync()
    s.create_snapshot(10, ConfState(("a", "b", "c")), b"state at 10")
    s.compact(0)  # retain everything below the snapshot
    s.sync()
    before = (s.first_index(), all_entries(s))
    s.close()
    r = DiskStorage(tmp_path)
    assert r.first_index() == 1 and (r.first_index(), all_entries(r)) == before
    assert r.snapshot().index == 10 and r.term(10) == 2 and r.last_index() == 13


def test_one_sync_per_batch_and_nothing_durable_before_it(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    size0 = segment(tmp_path).stat().st_size
    s.append(ents(1, 100, 1))
    s.set_hard_state(HardState(1, None, 0))
    assert segment(tmp_path).stat().st_size == size0  # buffered, not written
    s.sync()
    assert s.syncs == 1
    s.append(ents(101, 5, 1))  # never synced: a crash loses it
    s.close()
    r = DiskStorage(tmp_path)
    assert r.last_index() == 100


def test_conflict_truncation_is_replayed(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 10, 1))
    s.sync()
    s.append(ents(6, 2, 2, b"new"))  # replaces 6..10
    s.sync()
    s.close()
    r = DiskStorage(tmp_path)
    assert [(e.index, e.term) for e in all_entries(r)] == [(i, 1) for i in range(1, 6)] + [
        (6, 2),
        (7, 2),
    ]


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_cut_and_writing_resumes(tmp_path: Path, cut: int) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 3, 1))
    s.sync()
    s.append(ents(4, 3, 1))
    s.sync()
    s.close()
    seg = segment(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[:-cut])  # the last record was only partly written
    r = DiskStorage(tmp_path)
    assert r.last_index() == 3
    assert r.repaired_bytes > 0
    r.append(ents(4, 1, 2))
    r.sync()
    r.close()
    assert [(e.index, e.term) for e in all_entries(DiskStorage(tmp_path))] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 2),
    ]


def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 3, 1))
    s.sync()
    s.close()
    with segment(tmp_path).open("ab") as f:
        f.write(b"\0" * 4096)  # preallocated space the crash left behind
    r = DiskStorage(tmp_path)
    assert r.last_index() == 3 and r.repaired_bytes == 4096


def test_checksum_mismatch_in_the_last_record_is_a_torn_write(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 3, 1))
    s.sync()
    s.append(ents(4, 1, 1))
    s.sync()
    s.close()
    seg = segment(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    r = DiskStorage(tmp_path)
    assert r.last_index() == 3


def _flip_in_first_record(tmp_path: Path) -> None:
    seg = segment(tmp_path)
    data = bytearray(seg.read_bytes())
    data[8 + 12] ^= 0x01  # inside the first record's payload
    seg.write_bytes(bytes(data))


def test_damage_followed_by_valid_records_is_refused(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 3, 1))
    s.sync()
    s.append(ents(4, 3, 1))
    s.sync()
    s.close()
    _flip_in_first_record(tmp_path)
    with pytest.raises(CorruptStorageError, match="followed by valid"):
        DiskStorage(tmp_path)
    # an operator may choose to cut it (losing what follows)
    r = DiskStorage(tmp_path, truncate_corrupt_tail=True)
    assert r.last_index() == 0 and r.repaired_bytes > 0


def test_damage_in_an_older_segment_is_refused(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path, segment_bytes_max=200)
    for i in range(1, 40, 3):
        s.append(ents(i, 3, 1))
        s.sync()
    s.close()
    segs = sorted(tmp_path.glob("wal-*.log"))
    assert len(segs) > 2
    data = bytearray(segs[0].read_bytes())
    data[30] ^= 0x01
    segs[0].write_bytes(bytes(data))
    with pytest.raises(CorruptStorageError):
        DiskStorage(tmp_path)


def test_segments_roll_and_compaction_deletes_old_ones(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path, segment_bytes_max=300)
    for i in range(1, 61, 3):
        s.append(ents(i, 3, 1))
        s.set_hard_state(HardState(1, "a", i + 2))
        s.sync()
    before = len(list(tmp_path.glob("wal-*.log")))
    assert before > 3
    s.create_snapshot(50, ConfState(("a",)), b"s50")
    s.compact(45)
    after = len(list(tmp_path.glob("wal-*.log")))
    assert after < before
    s.close()
    r = DiskStorage(tmp_path)
    assert r.snapshot().index == 50
    assert r.first_index() <= 46  # may retain more than asked, never less
    assert [(e.index, e.term) for e in r.entries(46, 61, 1 << 20)] == [
        (i, 1) for i in range(46, 61)
    ]
    assert r.initial_state()[0] == HardState(1, "a", 60)


def test_follower_snapshot_install_discards_a_divergent_log(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 20, 1))
    s.sync()
    snap = Snapshot(10, 3, ConfState(("a", "b")), b"leader state")  # term 3 at 10: diverges
    s.apply_snapshot(snap)
    s.set_hard_state(HardState(3, None, 10))
    s.append(ents(11, 2, 3, b"after"))
    s.sync()
    s.close()
    r = DiskStorage(tmp_path)
    assert r.snapshot() == snap
    assert r.first_index() == 11
    assert [(e.index, e.term, e.data) for e in all_entries(r)] == [
        (11, 3, b"after11"),
        (12, 3, b"after12"),
    ]


def test_install_replaces_even_a_matching_log(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 20, 1))
    s.sync()
    s.apply_snapshot(Snapshot(10, 1, ConfState(("a",)), b"x"))
    s.sync()
    s.close()
    r = DiskStorage(tmp_path)
    # an install replaces the whole log, as MemoryStorage.apply_snapshot does at runtime
    assert r.snapshot().index == 10
    assert r.first_index() == 11 and r.last_index() == 10


def test_crash_between_snapshot_file_and_log_record(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.append(ents(1, 20, 1))
    s.sync()
    s.apply_snapshot(Snapshot(30, 4, ConfState(("a",)), b"from leader"))
    s.close()  # the file is durable, the log record never synced
    r = DiskStorage(tmp_path)
    assert r.snapshot().index == 30
    assert r.first_index() == 31 and r.last_index() == 30
    assert r.initial_state()[0].commit == 30


def test_leftover_temporary_snapshot_is_removed(tmp_path: Path) -> None:
    s = DiskStorage(tmp_path)
    s.close()
    (tmp_path / ".tmp-snap-00000000000000000009-00000000000000000001.snap").write_bytes(b"half")
    DiskStorage(tmp_path).close()
    assert not list(tmp_path.glob(".tmp-*"))


def test_random_crash_points_reopen_to_the_synced_state(tmp_path: Path) -> None:
    rng = random.Random(7)
    for round_ in range(25):
        d = tmp_path / f"r{round_}"
        s = DiskStorage(d, segment_bytes_max=rng.choice((256, 4096, 1 << 20)))
        model = MemoryStorage()  # what has been synced
        shadow = MemoryStorage()  # what has been written
        term = 1
        for _ in range(rng.randrange(5, 40)):
            op = rng.random()
            if op < 0.6:
                last = shadow.last_index()
                first = rng.randrange(max(shadow.hard_state().commit, 0) + 1, last + 2)
                term += rng.random() < 0.3
                batch = ents(first, rng.randrange(1, 6), term)
                s.append(batch)
                shadow.append(batch)
            elif op < 0.8:
                hs = HardState(term, rng.choice((None, "a", "b")), shadow.hard_state().commit)
                s.set_hard_state(hs)
                shadow.set_hard_state(hs)
            else:
                s.sync()
                model = shadow.clone()
        s.sync()
        model = shadow.clone()
        # now some unsynced writes, then a crash that keeps an arbitrary part of them
        lost = ents(shadow.last_index() + 1, 3, term + 1, b"lost")
        lost_hs = HardState(term + 1, "z", shadow.hard_state().commit)
        s.append(lost)
        s.set_hard_state(lost_hs)
        seg = segment(d)
        size_synced = seg.stat().st_size
        s.sync()  # writes the bytes (the crash will undo part of them) ...
        s.close()
        for newer in sorted(d.glob("wal-*.log")):
            if newer.name > seg.name:
                newer.unlink()  # a roll happens only after a successful sync
        data = seg.read_bytes()
        keep = rng.randrange(size_synced, len(data))  # ... cut at an arbitrary byte
        seg.write_bytes(data[:keep])
        r = DiskStorage(d)
        # exactly the synced state, plus possibly a prefix of the unsynced records
        got_hs = r.initial_state()[0]
        got = all_entries(r)
        want = model.all_entries()
        if got_hs == lost_hs:
            assert got == want + lost
        elif len(got) == len(want) + 3:
            assert got == want + lost and got_hs == model.hard_state()
        else:
            assert got == want and got_hs == model.hard_state()
