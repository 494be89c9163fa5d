"""The compiled engine (mypyc, see ``grenex.engine.native``) is the pure engine, only faster.

Proves: when setup built the compiled core for the current sources, ``grenex.engine`` loads
it; ``GRENEX_PURE=1`` loads the source module; and the two builds write byte-identical
``grenex replay`` output (events and final books) for a random stream full of edge cases and
for the canonical EXB-1 file when it is present.  A stale build (other sources) is ignored.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from grenex.engine import native

EXB1 = Path(__file__).resolve().parents[2] / "shared" / "bench" / "exb1.jsonl.gz"


def _core_file(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import grenex.engine.core as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def _replay(path: Path, pure: bool) -> bytes:
    env = dict(os.environ)
    env.pop("GRENEX_PURE", None)
    if pure:
        env["GRENEX_PURE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "grenex", "replay", str(path), "--book"],
        capture_output=True,
        env=env,
        timeout=300,
        check=True,
    )
    return proc.stdout


def _random_stream(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = [
        json.dumps({"type": "add_market", "market": "A", "tick": "0.5", "lot": "0.01"}),
        json.dumps({"type": "add_market", "market": "B", "tick": "1", "lot": "1"}),
    ]
    ids: list[tuple[str, str]] = []
    for i in range(n):
        client = rng.choice(["c1", "c2", "c3"])
        r = rng.random()
        if r < 0.55 or not ids:
            oid = f"o{i}" if rng.random() > 0.02 else "o1"
            ids.append((client, oid))
            cmd: dict[str, object] = {
                "type": "place",
                "client": client,
                "id": oid,
                "market": rng.choice(["A", "B", "B", "C"]),
                "side": rng.choice(["buy", "sell", "sell", "hold"]),
                "qty": rng.choice(["1", "2", "0.5", "3", 5, "0", "1e1"]),
                "price": rng.choice([None, "100", "99.5", "101", 100, "100.25", "-1"]),
                "tif": rng.choice([None, None, "GTC", "IOC", "FOK", "DAY"]),
                "post_only": rng.choice([None, None, True, False, "yes"]),
                "stp": rng.choice([None, "cancel_maker", "cancel_taker", "cancel_both", 1]),
            }
        elif r < 0.8:
            c, oid = rng.choice(ids)
            cmd = {"type": "cancel", "client": c, "id": oid}
        elif r < 0.97:
            c, oid = rng.choice(ids)
            cmd = {"type": "amend", "client": c, "id": oid}
            if rng.random() < 0.7:
                cmd["qty"] = rng.choice(["1", "4", "0.5", "0"])
            if rng.random() < 0.5:
                cmd["price"] = rng.choice(["99", "100.5", "102", "1.25"])
        else:
            out.append(rng.choice(["garbage", "[]", '{"type":"nope"}', ""]))
            continue
        out.append(json.dumps(cmd))
    return out


def test_a_fresh_build_is_loaded_and_purity_can_be_forced() -> None:
    env = dict(os.environ)
    env.pop("GRENEX_PURE", None)
    if not native.built_path().is_file():
        pytest.skip("no compiled engine here (no C compiler at setup): only the pure build runs")
    assert _core_file(env) == str(native.built_path())
    env["GRENEX_PURE"] = "1"
    assert _core_file(env).endswith("core.py")


def test_a_stale_build_is_ignored(tmp_path: Path) -> None:
    """A build for other sources sits under another id and is never picked up."""
    env = dict(os.environ)
    env.pop("GRENEX_PURE", None)
    env["GRENEX_NATIVE_DIR"] = str(tmp_path)
    (tmp_path / "0123456789abcdef01234567").mkdir()
    assert _core_file(env).endswith("core.py")


def test_both_builds_write_identical_output(tmp_path: Path) -> None:
    if not native.built_path().is_file():
        pytest.skip("no compiled engine here")
    path = tmp_path / "random.jsonl"
    path.write_text("\n".join(_random_stream(11, 6000)))
    compiled, pure = _replay(path, pure=False), _replay(path, pure=True)
    assert compiled.count(b"\n") > 6000
    assert compiled == pure


def test_both_builds_agree_on_exb1() -> None:
    if not EXB1.is_file():
        pytest.skip("../shared/bench/exb1.jsonl.gz not present")
    if not native.built_path().is_file():
        pytest.skip("no compiled engine here")
    assert _replay(EXB1, pure=False) == _replay(EXB1, pure=True)
