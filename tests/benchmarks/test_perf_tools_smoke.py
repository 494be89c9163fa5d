"""Smoke test of the performance tools (``benchmarks/apply_bench.py``, ``benchmarks/phases.py``):
they run and fold what they should.  Nothing is timed here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import apply_bench  # noqa: E402
import phases  # noqa: E402


def test_apply_bench_applies_every_command() -> None:
    for batch in (1, 8):
        args = argparse.Namespace(batch=batch, envelopes=20, clients=3, runs=1)
        assert apply_bench.one_run(args, 1) > 0  # raises when any command was refused


def test_phases_fold_counts_the_first_phase_in_a_stack(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "run (x/asyncio/runners.py:1);apply (src/grenex/replica/state.py:9);"
        "verify (site-packages/nacl/bindings/crypto_sign.py:3) 3\n"
        "run (x/asyncio/runners.py:1);apply (src/grenex/engine/core.py:5) 1\n"
        "run (x/asyncio/runners.py:1) 4\n"
        "not a sample line\n"
    )
    assert phases.fold(raw) == {"asyncio": 0.5, "signature": 0.375, "engine": 0.125}
    assert phases.fold(tmp_path / "missing.txt") == {}


def test_http_server_bench_measures_both_servers(tmp_path: Path) -> None:
    """``benchmarks/http_server_bench.py`` runs its servers (front and aiohttp, plain and TLS),
    every request and frame is answered or counted, and it writes a figure for each."""
    import json
    import subprocess

    out = tmp_path / "http.json"
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "http_server_bench.py"),
            "--quick",
            "--n",
            "400",
            "--frames",
            "1000",
            "--json",
            str(out),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    results = json.loads(out.read_text())["results"]
    kinds = ("requests", "frames", "frames_paced")
    assert sorted(results) == sorted(f"{k}_{t}" for k in kinds for t in ("plain", "tls"))
    for figures in results.values():
        for server in ("front", "aiohttp"):
            assert figures[server]["per_s"] > 0 and figures[server]["server_cpu_us"] > 0
