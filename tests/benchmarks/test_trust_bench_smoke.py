"""Smoke test of the trust benchmarks (issue 11): ``benchmarks/sign_verify.py`` and
``benchmarks/rogue_announcer.py`` on tiny sizes, every code path, their outputs sane.  Nothing
here is timed or asserts a speed.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from grenex.codec.envelope import Envelope, decode_envelope_json
from grenex.grenache.testing import GrapeNotInstalledError, find_grape_bin
from grenex.replica.auth import Fresh, Reject, verify_envelope

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import rogue_announcer as rogue  # noqa: E402
import sign_verify as sv  # noqa: E402

OPS = ("sign", "verify", "verify_raw", "decode", "check_reuse", "check_verify")


def test_texts_are_spec_places_with_counter_nonces() -> None:
    single = [json.loads(t) for t in sv.make_texts("single", 3)]
    assert [c["nonce"] for c in single] == [1, 2, 3]
    for c in single:
        assert c["type"] == "place" and c["client"] == sv.CLIENT
        assert (c["price"], c["qty"]) == ("100.5", "1")  # decimal strings, not floats
    batch = json.loads(sv.make_texts("batch32", 2, first_nonce=7)[1])
    assert batch["nonce"] == 8 and batch["client"] == sv.CLIENT
    assert len(batch["batch"]) == 32
    assert all("client" not in c and "nonce" not in c for c in batch["batch"])
    assert len({c["id"] for c in batch["batch"]}) == 32


@pytest.mark.parametrize("shape", sv.SHAPES)
def test_valid_envelope_verifies_and_tampered_ones_do_not(shape: str) -> None:
    setup = sv.Setup.make()
    w = sv.prepare(setup, shape, 2)
    pk = setup.key.public_bytes
    env = w.envelopes[1]
    assert len(env.commands) == sv.commands_per_envelope(shape)
    assert verify_envelope(setup.cluster_id, env, pk) is True
    assert type(setup.auth.check(env, sv.TIME_MS)) is Fresh
    # another price under the same signature
    text = env.text.replace(b'"100.5"', b'"100.6"', 1)
    forged = decode_envelope_json(json.dumps({"cmd": text.decode(), "sig": env.sig}))
    assert isinstance(forged, Envelope)
    assert verify_envelope(setup.cluster_id, forged, pk) is False
    assert setup.auth.check(forged, sv.TIME_MS) == Reject("bad_signature")
    # a reused verdict is trusted only for the key it was computed for
    assert setup.auth.check(forged, sv.TIME_MS, True, b"\x01" * 32) == Reject("bad_signature")
    # the signature of another envelope
    other = decode_envelope_json(json.dumps({"cmd": env.text.decode(), "sig": w.envelopes[0].sig}))
    assert isinstance(other, Envelope)
    assert verify_envelope(setup.cluster_id, other, pk) is False
    checks = sv.self_check(setup, w)
    assert checks["valid_verifies"] and not checks["tampered_text_verifies"]


def test_sign_verify_tiny_run_and_json(tmp_path: Path) -> None:
    out = tmp_path / "sv.json"
    buf = io.StringIO()
    with redirect_stdout(buf):
        sv.main(["--n", "4", "--repeats", "1", "--json", str(out)])
    printed = buf.getvalue()
    assert "verify threads" in printed and "µs/cmd" in printed
    res = json.loads(out.read_text())
    assert (res["n"], res["repeats"]) == (4, 1)
    for shape in sv.SHAPES:
        r = res["shapes"][shape]
        per = sv.commands_per_envelope(shape)
        assert r["commands_per_envelope"] == per
        for op in OPS:
            fig = r[op]
            assert fig["envelope_us"] > 0 and fig["envelope_cpu_us"] >= 0
            assert math.isclose(fig["command_us"], fig["envelope_us"] / per, abs_tol=0.01)
        assert res["self_check"][shape]["all_check_fresh"] is True
        assert res["self_check"][shape]["tampered_sig_verifies"] is False
    assert res["shapes"]["batch32"]["text_bytes"] > 20 * res["shapes"]["single"]["text_bytes"]
    t = res["threads"]
    assert t["envelopes"] == 16 and t["speedup"] > 0
    assert t["one_thread_per_s"] > 0 and t["two_threads_per_s"] > 0


def _need_grape() -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (the Grape is npm grenache-grape)")
    try:
        find_grape_bin()
    except GrapeNotInstalledError as e:
        pytest.skip(str(e))


@pytest.mark.timeout(60)
def test_rogue_announcer_tiny_run(tmp_path: Path) -> None:
    _need_grape()
    out = tmp_path / "rogue.json"
    buf = io.StringIO()
    argv = ["--requests", "20", "--rounds", "2", "--inflight", "8"]
    argv += ["--window-ms", "100", "--window-s", "0.3", "--json", str(out)]
    with redirect_stdout(buf):
        rogue.main(argv)
    assert "failed hs/client" in buf.getvalue()
    res = json.loads(out.read_text())
    s = res["summary"]
    for ph in ("alone", "contested", "alone_inflight", "contested_inflight"):
        assert s[ph]["all_answered_by_honest"] is True  # every request answered, by honest
        for r in res["rounds"][ph]:
            assert r["answered"] == r["honest_answered"] == 20
            # what the client counted is what the impostor saw
            assert r["failed_handshakes"] == r["impostor_hellos"]
    for ph in ("alone", "alone_inflight"):
        assert s[ph]["failed_handshakes_per_client"] == [0, 0]
        assert s[ph]["impostor_hellos_per_client"] == [0, 0]
    # sequential: exactly one failed handshake per client, then the impostor is never dialled
    assert s["contested"]["failed_handshakes_per_client"] == [1, 1]
    for r in res["rounds"]["contested"]:
        assert len(r["hits"]) == 1
        assert r["untrusted"] == [res["servers"]["impostor"]]
    assert all(n >= 1 for n in s["contested_inflight"]["failed_handshakes_per_client"])
    assert len(s["hit_cost_us_each"]) == 2
    w = res["window"]
    assert 1 <= w["failed_handshakes"] == w["impostor_hellos"]
    assert w["failed_handshakes"] <= math.ceil(w["windows_elapsed"]) + 1 < w["requests"]
