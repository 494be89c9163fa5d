"""Smoke test of ``benchmarks/etcd_side_by_side.py``: the skip without etcd, the summary
arithmetic, and (only where Debian's ``etcd-server`` is installed) every path of a tiny real run:
etcd put and txn, grenex single and batch, each process stopped.  Nothing here asserts a speed.
"""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import etcd_side_by_side as side  # noqa: E402


def test_without_etcd_it_says_why_and_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert side.find_etcd(None) == (None, "no etcd binary on PATH")
    for argv in ([], ["--etcd", "/nonexistent/etcd"]):
        out = io.StringIO()
        with redirect_stdout(out):
            assert side.main(argv) == 0
        line = out.getvalue().strip()
        assert line.startswith("SKIP etcd side by side:")
        assert "apt-get install etcd-server" in line
        assert len(line.splitlines()) == 1


def row(system: str, topology: str, mode: str, rate: float, cpu: float) -> dict[str, Any]:
    return {
        "system": system,
        "topology": topology,
        "mode": mode,
        "writes_per_request": 1 if mode in ("put", "single") else 32,
        "acked_per_s": rate,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "p999_ms": 3.0,
        "cpu_us_per_write_per_member": cpu,
        "client_cpu_us_per_write": 1.0,
        "errors": {},
    }


def test_medians_and_ratios() -> None:
    g = "3 voters durable"
    points = [
        row("etcd", "3 members", "put", 1000, 400),
        row("etcd", "3 members", "put", 3000, 200),
        row("etcd", "3 members", "put", 2000, 100),
        row("etcd", "3 members", "txn", 20000, 40),
        row("grenex", g, "single", 1000, 800),
        row("grenex", g, "batch", 10000, 20),
    ]
    rows = side.medians(points)
    put = next(r for r in rows if r["mode"] == "put")
    assert (
        put["runs"] == 3
        and put["acked_per_s"] == 2000
        and put["cpu_us_per_write_per_member"] == 200
    )
    rat = side.ratios(rows)[g]
    assert rat["batched_vs_put_writes"] == pytest.approx(5.0)
    assert rat["batched_vs_put_cpu"] == pytest.approx(10.0)
    assert rat["batched_vs_txn_writes"] == pytest.approx(0.5)
    assert rat["batched_vs_txn_cpu"] == pytest.approx(2.0)
    assert rat["single_vs_put_writes"] == pytest.approx(0.5)
    assert rat["single_vs_put_cpu"] == pytest.approx(0.25)


@pytest.mark.timeout(60)
def test_a_tiny_side_by_side_run(tmp_path: Path) -> None:
    binary, why = side.find_etcd(None)
    if binary is None:
        pytest.skip(f"{why} (optional: apt-get install etcd-server)")
    out_json = tmp_path / "side.json"
    argv = ["--clients", "1", "--concurrency", "2", "--duration", "1", "--batch", "4"]
    argv += ["--tmp-dir", str(tmp_path), "--json", str(out_json)]
    text = io.StringIO()
    with redirect_stdout(text):
        assert side.main(argv) == 0
    rep = json.loads(out_json.read_text())
    got = {(p["system"], p["mode"]): p for p in rep["points"]}
    assert set(got) == {("etcd", "put"), ("etcd", "txn"), ("grenex", "single"), ("grenex", "batch")}
    for p in got.values():
        assert p["acked"] > 0 and not p["errors"], p
        assert p["all_applied"], p
        assert 0 < p["p50_ms"] <= p["p99_ms"] <= p["p999_ms"]
        assert p["cpu_us_per_write_per_member"] > 0
        assert p["clients_answered"] == 1
    assert got[("etcd", "put")]["members"] == 3 == got[("grenex", "batch")]["members"]
    assert got[("etcd", "txn")]["writes_per_request"] == 4
    assert got[("etcd", "txn")]["acked"] % 4 == 0
    assert got[("grenex", "batch")]["converged"] and got[("grenex", "single")]["converged"]
    # grenex's batch point put its orders in the log (the single point's are before it)
    assert got[("grenex", "batch")]["log_entries"] >= 1
    assert set(rep["ratios"]["3 voters durable"]) >= {
        "batched_vs_put_writes",
        "batched_vs_txn_writes",
        "single_vs_put_writes",
    }
    assert rep["ratios_per_run"] == [rep["ratios"]]  # one run: its ratios are the summary's
    assert {p["run"] for p in rep["points"]} == {0}
    assert rep["machine"]["etcd"].startswith("3.")
    assert "grenex (3 voters durable) / etcd:" in text.getvalue()
    # every process the run started has been stopped
    assert not side.PROCS.procs
    assert not list(tmp_path.glob("grenex-etcd-*"))  # its data dirs are gone too


@pytest.mark.timeout(60)
async def test_etcd_members_and_both_http_clients(tmp_path: Path) -> None:
    binary, why = side.find_etcd(None)
    if binary is None:
        pytest.skip(f"{why} (optional: apt-get install etcd-server)")
    etcd = side.EtcdCluster(binary, tmp_path)
    try:
        await etcd.start()
        assert len(etcd.pids) == 3 and all(
            u.startswith("http://127.0.0.1:") for u in etcd.client_urls
        )
        for http, batch in (("fast", 1), ("aiohttp", 3)):
            argv = ["--worker", "--url", etcd.client_urls[1], "--client", f"t{http}"]
            argv += ["--http", http, "--batch", str(batch), "--concurrency", "2"]
            argv += ["--duration", "0.3"]
            res = await side.etcd_worker(side.parser().parse_args(argv))
            assert res["acked"] > 0 and res["acked"] % batch == 0 and not res["errors"], res
        assert await etcd.wait_applied(10)
    finally:
        etcd.stop()
    assert all(p.poll() is not None for p in etcd.procs)
