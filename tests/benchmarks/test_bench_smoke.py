"""Smoke test of the EXB-1 benchmark code (``benchmarks/``): every code path on a tiny
generated workload, so that the benchmark cannot rot.  Nothing here is timed or asserts a
speed; it checks that the paths run and give sane, verified answers.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import engine_bench  # noqa: E402
import exb1  # noqa: E402
import peers  # noqa: E402

MEASURED = 2_000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gzip EXB-1 stream (seed 7, 2,000 measured commands) with its expected hashes,
    computed by the naive reference engine when it is there (else by grenex)."""
    d = tmp_path_factory.mktemp("exb1")
    path = d / "tiny.jsonl.gz"
    with gzip.open(path, "wb") as out:
        exb1.write_stream(out, seed=7, measured=MEASURED)
    w = engine_bench.load_workload(path)
    ref = engine_bench.load_reference()
    if ref is not None:
        expected = engine_bench.digests(ref.ReferenceEngine(), w.commands)
    else:
        from grenex.engine import Engine

        expected = engine_bench.digests(Engine(), w.commands)
    expected["setup_lines"] = w.setup_lines
    (d / "tiny.expected.json").write_text(json.dumps(expected))
    return path


def test_generator_mix_and_feedback() -> None:
    gen = exb1.Exb1Generator(seed=11)
    cmds = list(gen.commands(MEASURED))
    assert len(cmds) == gen.mix["setup"] + MEASURED == gen.seq
    assert cmds[0]["type"] == "add_market"
    assert gen.mix["setup"] == exb1.SETUP_RESTING + 1  # setup places never cross
    kinds = ("gtc", "ioc", "cancel", "amend_qty", "amend_price")
    assert sum(gen.mix[k] for k in kinds) == MEASURED
    assert all(gen.mix[k] > 0 for k in (*kinds, "trades", "gtc_marketable"))
    assert gen.mix["rejected"] == 0  # cancels and amends only name live orders
    assert exb1.LIVE_LOW - 1 <= gen.live <= exb1.LIVE_HIGH + 1
    assert gen.live == gen.engine.resting_orders
    ids = [c["id"] for c in cmds if c["type"] == "place"]
    assert len(ids) == len(set(ids))


def test_generator_streams_the_same_bytes() -> None:
    a, b = io.BytesIO(), io.BytesIO()
    exb1.write_stream(a, seed=5, measured=300)
    exb1.write_stream(b, seed=5, measured=300)
    assert a.getvalue() == b.getvalue()
    assert a.getvalue().count(b"\n") == exb1.SETUP_RESTING + 1 + 300


def test_generator_reproduces_the_canonical_prefix() -> None:
    if not engine_bench.DEFAULT_FILE.exists():
        pytest.skip("shared/bench/exb1.jsonl.gz is not here")
    n = exb1.SETUP_RESTING + 1 + MEASURED
    with gzip.open(engine_bench.DEFAULT_FILE, "rb") as f:
        want = b"".join(f.readline() for _ in range(n))
    got = io.BytesIO()
    exb1.write_stream(got, seed=exb1.CANONICAL_SEED, measured=MEASURED)
    assert got.getvalue() == want


def test_peers_translate_and_agree(tiny: Path) -> None:
    w = engine_bench.load_workload(tiny)
    keys: dict[tuple[str, str], int] = {}
    ops_setup, skipped_setup = peers.translate(w.commands[: w.setup_lines], keys)
    ops, skipped = peers.translate(w.commands[w.setup_lines :], keys)
    assert skipped_setup == skipped == 0
    assert len(ops_setup) == w.setup_lines - 1 and len(ops) == MEASURED
    results = []
    for factory in (peers.BareBook, peers.PyOrderBook):
        book = factory()
        book.play(ops_setup)
        assert book.resting() == exb1.SETUP_RESTING
        book.play(ops)
        results.append((book.trades, book.misses, book.resting()))
    bare = peers.BareBook()
    bare.play(ops_setup + ops)
    bare.check()
    # the same semantics (no self-trade prevention) give the same trades
    assert results[0] == results[1]
    assert results[0][0] > 0


def test_benchmark_main_runs_every_path(tiny: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "report.json"
    text = io.StringIO()
    argv = ["--file", str(tiny), "--runs", "1", "--json", str(out_json)]
    argv += ["--reference-commands", "300", "--memory-orders", "3000", "--no-optional-peers"]
    argv += ["--flat", "--flat-lines", "4000"]
    assert engine_bench.main(argv, stdout=text) == 0
    rep = json.loads(out_json.read_text())
    assert rep["verify"]["ok"], rep["verify"]
    assert rep["verify"]["got"]["trades"] > 0
    assert rep["machine"]["engine_core_file"]
    p = rep["peers"]
    assert p["commands"] == MEASURED and p["grenex"]["median"] > 0
    assert {"pyorderbook", "bare dict+deque"} <= set(p["peers"])
    for q in p["peers"].values():
        assert q["rate"]["median"] > 0 and q["grenex_over_peer"]["median"] > 0
    if engine_bench.load_reference() is not None:
        assert rep["reference"]["books_agree"]
    lat = rep["latency"]
    assert 0 < lat["engine"]["p50"] <= lat["engine"]["p99.9"] <= lat["engine"]["max"]
    assert lat["replay_line"]["p50"] > 0
    assert rep["replay_inprocess"]["lines"] == exb1.SETUP_RESTING + 1 + MEASURED
    assert rep["replay_subprocess"]["lines_per_second"]["median"] > 0
    assert rep["replay_subprocess"]["peak_rss_mb"]["median"] > 0
    mem = rep["memory"]
    assert mem["orders"] == 3000
    assert mem["tracemalloc"]["traced_bytes_per_order"] > 0
    assert mem["tracemalloc"]["top_sites"]
    flat = rep["flat"]
    assert flat["lines"] == 4000 and flat["peak_rss_mb"] > 0
    assert "EXB-1" in text.getvalue()


def test_benchmark_refuses_a_wrong_engine(tiny: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.expected.json"
    expected = json.loads(tiny.with_name("tiny.expected.json").read_text())
    expected["trade_tape_sha256"] = "0" * 64
    bad.write_text(json.dumps(expected))
    argv = ["--file", str(tiny), "--expected", str(bad), "--runs", "1"]
    assert engine_bench.main(argv, stdout=io.StringIO()) == 2
