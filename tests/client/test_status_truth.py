"""``grenex status`` tells the truth about a cluster (issue 14, item 5).

Against one real local cluster (2 Grapes, 3 voters + 1 learner, announcements that expire
after ~2 s), in order: healthy (exit 0, one leader, fresh hashes agree); a learner killed
(named as a learner that does not answer, exit 1); a follower voter killed (named as a voter
that does not answer, the leader still shown, exit 1), also once the Grapes forgot its address
(then "not announced", never silently dropped); the leader's quorum killed ("no leader",
exit 1, and no green "all agree").  Pure unit tests of :func:`grenex.client.health.judge`
cover a lagging node, diverged replicas, hashes of different indexes, a stale leader and a
named leader that does not answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from grenex.client import GrenexClientError, NodeStatus, StatusReply
from grenex.client.health import judge
from grenex.devnet import LocalCluster
from grenex.grenache import Link
from grenex.grenache.testing import GrapeNotInstalledError, find_grape_bin

pytestmark = pytest.mark.timeout(90)

asyncio_real = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Run:
    code: int
    out: str
    err: str


async def status(cluster: LocalCluster, *args: str) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRENEX_")}
    env["COLUMNS"] = "200"
    env["GRENEX_GENESIS"] = str(cluster.genesis_path)  # it authenticates the nodes
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "grenex",
        "status",
        "--grape",
        ",".join(cluster.grape_urls),
        "--timeout",
        "5",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(p.communicate(), 60)
    assert p.returncode is not None
    return Run(p.returncode, out.decode(), err.decode())


async def both(cluster: LocalCluster) -> tuple[Run, dict[str, Any]]:
    text, js = await asyncio.gather(status(cluster), status(cluster, "--json"))
    assert "Traceback" not in text.err + js.err, text.err + js.err
    return text, json.loads(js.out)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (the Grapes are npm grenache-grape)")
    try:
        find_grape_bin()
    except GrapeNotInstalledError as e:
        pytest.skip(str(e))
    c = LocalCluster(nodes=4, voters=3, dpa_ms=2_000, base_dir=tmp_path_factory.mktemp("status"))
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def forgotten(cluster: LocalCluster, node: str, timeout_s: float = 15.0) -> None:
    """Until no Grape lists ``node``'s own name any more."""
    deadline = time.monotonic() + timeout_s
    async with Link(cluster.grape_urls, lookup_cache_ttl_ms=0, lookup_stale_ms=0) as link:
        while await link.lookup(cluster.api_name(node), use_cache=False):
            assert time.monotonic() < deadline, f"{node} still announced"
            await asyncio.sleep(0.2)


@asyncio_real
async def test_healthy(cluster: LocalCluster) -> None:
    await cluster.wait_converged()
    text, js = await both(cluster)
    assert text.code == 0, text.out + text.err
    assert "✓ all 4 nodes agree" in text.out and "leader n" in text.out
    assert js["healthy"] is True and js["problems"] == [] and js["agree"] is True
    assert js["leader"] in ("n1", "n2", "n3")
    assert js["members"] == {"voters": ["n1", "n2", "n3"], "learners": ["n4"]}
    assert sorted(n["node"] for n in js["nodes"]) == ["n1", "n2", "n3", "n4"]
    # the hashes compared were computed at the index every node had applied
    assert {(n["applied"], n["state_hash_index"]) for n in js["nodes"]} == {
        (js["nodes"][0]["applied"], js["nodes"][0]["applied"])
    }


@asyncio_real
async def test_a_dead_learner_and_a_dead_voter_are_named(cluster: LocalCluster) -> None:
    cluster.kill("n4")
    text, js = await both(cluster)
    assert text.code == 1 and text.err.startswith("error: degraded"), text.out + text.err
    assert "learner n4 does not answer" in text.out
    assert [m["node"] for m in js["unreachable"] + js["missing"]] == ["n4"]
    assert js["healthy"] is False and js["leader"] is not None

    leader = js["leader"]
    follower = next(v for v in ("n1", "n2", "n3") if v != leader)
    cluster.kill(follower)
    text, js = await both(cluster)
    assert text.code == 1, text.out
    assert f"voter {follower} does not answer" in text.out
    assert f"leader {leader}" in text.out  # 2 of 3 voters: it still commits
    assert "✓" not in text.out
    assert sorted(m["node"] for m in js["unreachable"] + js["missing"]) == sorted([follower, "n4"])

    await forgotten(cluster, follower)  # the Grapes no longer list it: still shown
    text, js = await both(cluster)
    assert text.code == 1
    assert f"voter {follower} does not answer (not announced" in text.out
    assert {"node": follower, "kind": "voter"} in js["missing"]


@asyncio_real
async def test_the_leaders_quorum_lost_means_no_leader(cluster: LocalCluster) -> None:
    alive = [v for v in ("n1", "n2", "n3") if cluster.procs[v].alive]
    assert len(alive) == 2
    st = await cluster.statuses(alive)
    leader = next(n for n, s in st.items() if isinstance(s, dict) and s["role"] == "leader")
    cluster.kill(leader)  # the one voter left cannot commit anything
    text, js = await both(cluster)
    assert text.code == 1, text.out
    assert "no leader" in text.out and "✓" not in text.out
    assert js["leader"] is None and js["healthy"] is False
    assert any(p.startswith("no leader") for p in js["problems"])
    (survivor,) = [v for v in alive if v != leader]
    one = await status(cluster, "--node", survivor)
    if "no leader" in one.err:  # once it noticed (an election timeout), it says so itself
        assert one.code == 1


# ------------------------------------------------------------------------------ judge (pure)


def _st(
    node: str,
    *,
    role: str = "follower",
    term: int = 2,
    leader: str | None = "n1",
    commit: int = 10,
    applied: int = 10,
    hash_: str | None = "aa",
    hash_at: int | None = 10,
    voters: tuple[str, ...] = ("n1", "n2", "n3"),
) -> StatusReply:
    raw = {
        "node": node,
        "role": role,
        "term": term,
        "leader": leader,
        "commit": commit,
        "applied": applied,
        "members": {"voters": list(voters), "learners": []},
        "state_hash": hash_,
        "state_hash_index": hash_at,
        "pid": 1,
    }
    return StatusReply(f"127.0.0.1:{node[1:]}", NodeStatus.from_json(raw))


def _three(**n3: Any) -> list[StatusReply]:
    return [_st("n1", role="leader"), _st("n2"), _st("n3", **n3)]


def test_judge_healthy_and_lagging() -> None:
    h = judge(_three(), {})
    assert (h.healthy, h.leader, h.agree) == (True, "n1", True)
    lag = judge(_three(applied=5, hash_at=5), {}, max_lag=3)
    assert lag.leader == "n1" and not lag.healthy
    assert lag.problems[0].startswith("n3 lags: applied 5, 5 behind commit 10")
    assert lag.agree is None  # hashes of different indexes: not compared, not a problem
    assert len(lag.problems) == 1
    assert judge(_three(applied=5, hash_at=5), {}, max_lag=5).healthy


def test_judge_diverged() -> None:
    h = judge(_three(hash_="bb"), {})
    assert h.agree is False and not h.healthy
    assert any("DIVERGED" in p and "n3" in p for p in h.problems)


def test_judge_no_leader() -> None:
    stale = [_st("n1", role="leader", term=2), _st("n2", term=3, leader=None), _st("n3", term=3)]
    h = judge(stale, {})
    assert h.leader is None and "leads term 2, but nodes are at term 3" in h.problems[0]
    gone = judge([_st("n2"), _st("n3")], {})
    assert gone.leader is None and "nodes name n1, which does not answer" in gone.problems[0]
    assert "voter n1 does not answer (not announced" in gone.problems[1]
    dead = StatusReply("127.0.0.1:1", None, GrenexClientError("Connect call failed"))
    named = judge([dead, _st("n2"), _st("n3")], {"127.0.0.1:1": "n1"})
    assert "voter n1 does not answer (127.0.0.1:1: connection refused)" in named.problems
    alone = judge([_st("n1", role="leader")], {})
    assert alone.leader is None and "cannot commit: 1 of 3 voters answer" in alone.problems[0]
    assert not judge([], {}).healthy
