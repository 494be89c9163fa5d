"""Keys, the genesis, accounts and membership on the command line (SPEC §5, §8), as a user
runs them: ``python -m grenex ...`` in its own process.

Proves:

* ``keys new FILE`` writes a random key (mode 0600, 43 characters and a newline), prints only
  its public key, and refuses an existing file (unchanged); ``keys show`` prints the public
  key of a file, the SPEC §8 test vector included; a bad file is one line, exit 1;
* ``genesis`` writes a genesis whose certificates pass the node's checks; without its
  certificates it is byte for byte the SPEC §8 vector (cluster id c481c283…); a node started
  by hand from a ``grenex genesis`` with key files from ``keys new`` founds the cluster, reports
  that cluster id, and the CLI registers an account, opens a market and trades on it;
* ``register`` claims an account (again with the same key: exit 0, nothing sent twice; a name
  bound to another key, or a key bound to another name: exit 1); ``rotate-key`` binds the
  account to a new key: the old key then signs for nothing, the new one trades as the
  account;
* ``admit`` (from the node's key file), ``promote`` and ``remove`` by the operator change the
  membership of a running cluster; the same with another key is refused before sending;
* no command ever prints a seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from grenex.codec.genesis import parse_genesis
from grenex.devnet import LocalCluster
from grenex.grenache.testing import astart_grapes
from grenex.grenache.tls import check_cert, unb64url

from .helpers import account_key, operator_key, until
from .test_cli import Run, g, grenex

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

VECTOR_SEED = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
VECTOR_KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
VECTOR_GENESIS = (
    b'{"cluster":"main","operator":{"client":"op","key":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},'
    b'"voters":[{"id":"n1","key":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}],"join":"operator"}\n'
)
VECTOR_ID = "c481c2836cf43517b42d2e86ef27ce385bb49798ffa3b9940189f5b3edc2baa7"


def seed_of(path: Path) -> str:
    return path.read_text().strip()


def no_seed(run: Run, *keys: Path) -> None:
    for k in keys:
        assert seed_of(k) not in run.out + run.err, "a seed was printed"


async def new_key(path: Path) -> str:
    r = await grenex("keys", "new", str(path))
    assert r.code == 0, r.err
    no_seed(r, path)
    return r.out.strip()


# ------------------------------------------------------------------------------- keys


async def test_keys_new_and_show(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    made = await grenex("keys", "new", str(path))
    assert made.code == 0, made.err
    key = made.out.strip()
    assert len(key) == 43 and made.out == key + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    data = path.read_bytes()
    assert len(data) == 44 and data.endswith(b"\n")
    no_seed(made, path)

    again = await grenex("keys", "new", str(path))
    assert again.code == 1 and "exists" in again.one_line_error()
    assert path.read_bytes() == data  # never overwritten

    shown, js = await asyncio.gather(
        grenex("keys", "show", str(path)), grenex("keys", "show", str(path), "--json")
    )
    assert shown.code == 0 and shown.out == key + "\n"
    assert js.json() == {"file": str(path), "key": key}
    no_seed(shown, path)
    other = await grenex("keys", "new", str(tmp_path / "other.key"))
    assert other.out.strip() != key  # random, not derived

    vector = tmp_path / "vector.key"
    vector.write_text(VECTOR_SEED + "\n")
    v = await grenex("keys", "show", str(vector))
    assert v.code == 0 and v.out.strip() == VECTOR_KEY and VECTOR_SEED not in v.out

    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    for f in (bad, tmp_path / "missing.key"):
        r = await grenex("keys", "show", str(f))
        assert r.code == 1 and str(f) in r.one_line_error()


# ------------------------------------------------------------------------------- genesis


async def test_genesis_is_the_spec_vector_plus_certificates(tmp_path: Path) -> None:
    vector = tmp_path / "vector.key"
    vector.write_text(VECTOR_SEED + "\n")
    r = await grenex(
        "genesis", "--cluster", "main", "--operator", f"op:{vector}", "--voter", f"n1:{vector}"
    )
    assert r.code == 0, r.err
    data = r.out.encode()
    g = parse_genesis(data, check_cert)  # the node's checks, certificates included
    assert (g.cluster, g.operator.client, g.operator.key) == ("main", "op", VECTOR_KEY)
    assert [(v.id, v.key) for v in g.voters] == [("n1", VECTOR_KEY)] and g.voters[0].cert
    assert (g.join, g.register) == ("operator", "open")
    assert VECTOR_SEED not in r.out
    # without the certificates: the SPEC's bytes and cluster id
    doc = json.loads(data)
    for v in doc["voters"]:
        del v["cert"]
    bare = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    assert bare == VECTOR_GENESIS and hashlib.sha256(bare).hexdigest() == VECTOR_ID

    bad_voter, no_file, dup = await asyncio.gather(
        grenex("genesis", "--cluster", "main", "--operator", f"op:{vector}", "--voter", "n1"),
        grenex(
            "genesis",
            "--cluster",
            "main",
            "--operator",
            f"op:{vector}",
            "--voter",
            f"n1:{tmp_path / 'none.key'}",
        ),
        grenex(
            "genesis",
            "--cluster",
            "main",
            "--operator",
            f"op:{vector}",
            "--voter",
            f"n1:{vector}",
            "--voter",
            f"n2:{vector}",
        ),
    )
    assert bad_voter.code == 2 and "NAME:KEYFILE" in bad_voter.one_line_error()
    assert no_file.code == 2 and "none.key" in no_file.one_line_error()
    assert dup.code == 1 and "repeats" in dup.one_line_error()


def free_port_triple() -> int:
    """A port P with P, P+1 and P+2 free on 127.0.0.1 (grenex node --port P uses all three)."""
    for _ in range(50):
        with socket.socket() as s0:
            s0.bind(("127.0.0.1", 0))
            p = int(s0.getsockname()[1])
        if p > 65530:
            continue
        try:
            for q in (p, p + 1, p + 2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        return p
    raise AssertionError("no three consecutive free ports")


@contextlib.asynccontextmanager
async def hand_node(
    tmp_path: Path, genesis: Path, key: Path, grape: str, *extra: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``grenex node`` started by hand from a genesis and a key file; stopped by its PID."""
    ready = tmp_path / "n1.ready"
    log = (tmp_path / "n1.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grenex",
            "node",
            "--id",
            "n1",
            "--genesis",
            str(genesis),
            "--key",
            str(key),
            "--memory",
            "--grape",
            grape,
            "--ready-file",
            str(ready),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("GRENEX_")},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, (tmp_path / "n1.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "n1.log").read_text()
            await asyncio.sleep(0.05)
        yield proc
    finally:
        log.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def test_a_node_founds_a_cluster_from_grenex_genesis(tmp_path: Path) -> None:
    op, n1, me = tmp_path / "op.key", tmp_path / "n1.key", tmp_path / "me.key"
    for k in (op, n1, me):
        await new_key(k)
    r = await grenex(
        "genesis",
        "--cluster",
        "hand",
        "--operator",
        f"boss:{op}",
        "--voter",
        f"n1:{n1}",
        "--register",
        "open",
    )
    assert r.code == 0, r.err
    no_seed(r, op, n1)
    genesis = tmp_path / "genesis.json"
    genesis.write_text(r.out)
    grapes = await astart_grapes(1)
    try:
        grape = ",".join(grapes.api_urls)
        env = {"GRENEX_GENESIS": str(genesis), "GRENEX_GRAPE": grape}
        port = free_port_triple()
        async with hand_node(tmp_path, genesis, n1, grape, "--port", str(port)):
            # SPEC §5: the API on P, the peer service on P+1, the events on P+2
            ports = json.loads((tmp_path / "n1.ready").read_text().splitlines()[1])
            assert (ports["api"], ports["peer"], ports["events"]) == (port, port + 1, port + 2)

            async def leads() -> Run | None:
                st = await grenex("status", "--node", "n1", "--json", env=env)
                return st if st.code == 0 and st.json()["role"] == "leader" else None

            st = await until(leads, 30, "n1 to lead")
            assert st.json()["cluster_id"] == hashlib.sha256(genesis.read_bytes()).hexdigest()
            runs = [
                await grenex("register", "--client", "me", "--key", str(me), env=env),
                await grenex(
                    "add-market",
                    "--key",
                    str(op),
                    "--market",
                    "H-USD",
                    "--tick",
                    "1",
                    "--lot",
                    "1",
                    env=env,
                ),
                await grenex(
                    "place",
                    "--node",
                    "n1",
                    "--key",
                    str(me),
                    "--market",
                    "H-USD",
                    "--side",
                    "buy",
                    "--qty",
                    "2",
                    "--price",
                    "7",
                    "--json",
                    env=env,
                ),
            ]
            for run in runs:
                assert run.code == 0, run.err
                no_seed(run, op, n1, me)
            events = runs[2].json()["events"]
            assert [e["type"] for e in events] == ["accepted", "resting"]
            assert events[0]["client"] == "me"
    finally:
        grapes.stop()


# ------------------------------------------------------------------------------- accounts


async def test_register_and_rotate_key(cluster: LocalCluster, tmp_path: Path) -> None:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    await new_key(a)
    b_key = await new_key(b)
    reg = await g(cluster, "register", "--client", "kc-a", "--key", str(a))
    assert reg.code == 0 and "registered" in reg.out, reg.err
    again, js = await asyncio.gather(
        g(cluster, "register", "--client", "kc-a", "--key", str(a)),
        g(cluster, "register", "--client", "kc-a", "--key", str(a), "--json"),
    )
    assert again.code == 0 and "already registered" in again.out
    assert js.json()["registered"] == "already"
    taken, key_taken = await asyncio.gather(
        g(cluster, "register", "--client", "kc-a", "--key", str(b)),
        g(cluster, "register", "--client", "kc-b", "--key", str(a)),
    )
    assert taken.code == 1 and "another key" in taken.one_line_error()
    assert key_taken.code == 1 and "key_taken" in key_taken.one_line_error()

    order = ("place", "--node", "n2", "--market", "ETH-USD", "--side", "buy", "--qty", "1")
    first = await g(cluster, *order, "--price", "3", "--key", str(a))
    assert first.code == 0 and "kc-a/" in first.out, first.err

    rotated = await g(cluster, "rotate-key", "--key", str(a), "--new-key", str(b), "--json")
    assert rotated.code == 0, rotated.err
    (ev,) = rotated.json()["events"]
    assert (ev["type"], ev["client"], ev["key"]) == ("key_rotated", "kc-a", b_key)

    old, forged, new = await asyncio.gather(
        g(cluster, *order, "--price", "4", "--key", str(a)),
        g(cluster, *order, "--price", "4", "--key", str(a), "--client", "kc-a"),
        g(cluster, *order, "--price", "5", "--key", str(b)),
    )
    assert old.code == 1 and "bound to no account" in old.one_line_error()
    assert forged.code == 1 and "bad_signature" in forged.one_line_error()
    assert new.code == 0 and "kc-a/" in new.out, new.err
    for run in (reg, again, taken, key_taken, first, rotated, old, forged, new):
        no_seed(run, a, b)
    no_key = await g(cluster, "rotate-key", "--key", str(a))
    assert no_key.code == 2 and "--new-key" in no_key.one_line_error()


async def test_admit_promote_remove(cluster: LocalCluster) -> None:
    op = operator_key(cluster)
    np = cluster._node_proc("n4", voter=False)
    cluster.procs["n4"] = np
    cluster._spawn(np)  # a node that is not a genesis voter: it waits to be admitted
    await cluster.wait_ready(["n4"], 30)
    node_key = str(cluster.key_path("n4"))

    stranger = await account_key(cluster, "kc-stranger")
    refused = await g(cluster, "admit", "--node", "n4", "--node-key", node_key, "--key", stranger)
    assert refused.code == 1 and "operator" in refused.one_line_error()

    admitted = await g(cluster, "admit", "--node", "n4", "--node-key", node_key, "--key", op)
    assert admitted.code == 0 and "member_added" in admitted.out, admitted.err
    no_seed(admitted, Path(node_key), Path(op))
    assert cluster.pins is not None  # this test process trusts n4 as the operator admitted it
    cluster.pins.add("n4", unb64url(cluster.cert_of("n4")))
    await cluster.wait_members(30)

    async def role_of_n4() -> str | None:
        st = (await cluster.statuses(["n1"]))["n1"]
        if not isinstance(st, dict):
            return None
        m = st["members"]
        return "voter" if "n4" in m["voters"] else "learner" if "n4" in m["learners"] else None

    assert await until(role_of_n4, 20, "n4 a learner") == "learner"
    promoted = await g(cluster, "promote", "--node", "n4", "--key", op, "--json")
    assert promoted.code == 0, promoted.err
    assert promoted.json()["events"][0] == {
        "type": "member_promoted",
        "seq": promoted.json()["seq"],
        "node": "n4",
    }

    async def voter() -> bool | None:
        return True if await role_of_n4() == "voter" else None

    await until(voter, 20, "n4 a voter")
    removed = await g(cluster, "remove", "--node", "n4", "--key", op, "--via", "n2")
    assert removed.code == 0 and "member_removed" in removed.out, removed.err

    async def gone() -> bool | None:
        return True if await role_of_n4() is None else None

    await until(gone, 20, "n4 removed")
    cluster.kill("n4")
    again = await g(cluster, "promote", "--node", "n4", "--key", op)
    assert again.code == 0 and "unknown_node" in again.rejection()
    usage = await g(cluster, "admit", "--node", "n5", "--key", op)
    assert usage.code == 2 and "--node-key" in usage.one_line_error()


async def test_genesis_limits(tmp_path: Path) -> None:
    vector = tmp_path / "vector.key"
    vector.write_text(VECTOR_SEED + "\n")
    base = ("genesis", "--cluster", "main", "--operator", f"op:{vector}", "--voter", f"n1:{vector}")
    ok, misspelt, zero = await asyncio.gather(
        grenex(*base, "--limit", "orders=5", "--limit", "nonces=8"),
        grenex(*base, "--limit", "order=5"),
        grenex(*base, "--limit", "orders=0"),
    )
    assert ok.code == 0, ok.err
    g = parse_genesis(ok.out.encode(), check_cert)
    assert (g.limits.orders, g.limits.nonces, g.limits.accounts) == (5, 8, 100_000)
    assert misspelt.code == 2 and "orders" in misspelt.one_line_error()
    assert zero.code == 1 and "limits.orders" in zero.one_line_error()
