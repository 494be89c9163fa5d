"""Nemeses: the faults a lab run injects, and the seeded schedule that orders them.

Every nemesis is an ``async`` function of the running lab (:class:`~grenex.lab.runner.Lab`)
and a ``random.Random``; it injects its fault, holds it, undoes it (heals) and returns a
:class:`Fault` record with the times (wall clock) the report needs: when the fault began,
when it was healed, which host and, for faults that take the leader away, who led.

======================  ==============================================================
``partition``           the hosts split in two random halves (both directions cut)
``isolate_leader``      the leader's host cut off from every other host
``bridge``              A and B cannot reach each other; C reaches both (A = the leader)
``one_way``             the leader's packets to the others dropped; theirs still arrive
``pause_leader``        SIGSTOP the leader 2–5 s (beyond the 0.8–1.6 s election timeout)
``pause_follower``      the same, a follower
``kill_leader``         kill -9 the leader, restart it from its ``--data-dir`` 1–3 s later
``kill_follower``       the same, a follower
``lost_unsynced``       kill -9 a node, then leave a torn, never-synced record at the end of
                        its last log segment (a crash mid-write), restart: it must repair
``restart_empty``       kill -9 a voter, delete its data dir, restart it with the same
                        ``--voters``: a voter that lost what it acknowledged
``amnesia``             a follower cut off while the leader and the other follower commit;
                        that other follower restarted empty, the leader killed, the cut
                        healed: may the empty voter and the lagging one elect a leader?
``grape_kill``          kill -9 one host's Grape, restart it 2–5 s later
``disk_full``           fill the small tmpfs holding one node's data dir; the node must stop
                        taking writes without damaging its log; free it, (re)start the node
``cut_host``            a follower's host (node and Grape) cut off 12 s: the clients of the
                        healthy hosts measure their order latency meanwhile
======================  ==============================================================
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from grenex.lab.runner import Lab

__all__ = ["NEMESES", "SOAK_NEMESES", "Fault", "schedule"]


@dataclass
class Fault:
    name: str
    host: str = ""
    leader: str | None = None  # who led when the fault began
    start: float = 0.0
    healed: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "leader": self.leader,
            "start": round(self.start, 3),
            "healed": round(self.healed, 3),
            "held_s": round(self.healed - self.start, 3),
            **self.detail,
        }


Nemesis = Callable[["Lab", random.Random], Awaitable[Fault]]


async def _leader_or_any(lab: Lab, rng: random.Random) -> tuple[str, str | None]:
    leader = await lab.leader(timeout_s=10.0)
    return (leader or rng.choice(lab.live_hosts())), leader


async def _follower(lab: Lab, rng: random.Random) -> tuple[str, str | None]:
    leader = await lab.leader(timeout_s=10.0)
    others = [h for h in lab.live_hosts() if h != leader]
    return rng.choice(others or lab.hosts), leader


async def partition(lab: Lab, rng: random.Random) -> Fault:
    hosts = list(lab.hosts)
    rng.shuffle(hosts)
    k = rng.randint(1, len(hosts) // 2)
    a, b = sorted(hosts[:k]), sorted(hosts[k:])
    leader = await lab.leader(timeout_s=5.0)
    f = Fault("partition", ",".join(a), leader, detail={"sides": [a, b]})
    f.start = lab.now()
    lab.net.split(a, b)
    await lab.hold(rng.uniform(3.0, 6.0))
    lab.net.heal()
    f.healed = lab.now()
    return f


async def isolate_leader(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _leader_or_any(lab, rng)
    f = Fault("isolate_leader", host, leader)
    f.start = lab.now()
    lab.net.isolate(host)
    await lab.hold(rng.uniform(3.0, 6.0))
    lab.net.heal()
    f.healed = lab.now()
    return f


async def bridge(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _leader_or_any(lab, rng)
    others = [h for h in lab.hosts if h != host]
    rng.shuffle(others)
    b, c = others[0], others[1]
    f = Fault("bridge", host, leader, detail={"cut": [host, b], "bridge": c})
    f.start = lab.now()
    lab.net.cut(host, b)
    await lab.hold(rng.uniform(3.0, 6.0))
    lab.net.heal()
    f.healed = lab.now()
    return f


async def one_way(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _leader_or_any(lab, rng)
    outgoing = rng.random() < 0.5
    f = Fault("one_way", host, leader, detail={"direction": "out" if outgoing else "in"})
    f.start = lab.now()
    for other in lab.hosts:
        if other != host:
            if outgoing:
                lab.net.block(host, other)
            else:
                lab.net.block(other, host)
    await lab.hold(rng.uniform(3.0, 6.0))
    lab.net.heal()
    f.healed = lab.now()
    return f


async def _pause(lab: Lab, rng: random.Random, name: str, host: str, leader: str | None) -> Fault:
    f = Fault(name, host, leader)
    f.start = lab.now()
    lab.signal_node(host, signal.SIGSTOP)
    await lab.hold(rng.uniform(2.0, 5.0))
    lab.signal_node(host, signal.SIGCONT)
    f.healed = lab.now()
    return f


async def pause_leader(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _leader_or_any(lab, rng)
    return await _pause(lab, rng, "pause_leader", host, leader)


async def pause_follower(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _follower(lab, rng)
    return await _pause(lab, rng, "pause_follower", host, leader)


async def _kill_restart(
    lab: Lab,
    rng: random.Random,
    name: str,
    host: str,
    leader: str | None,
    damage: Callable[[str], dict[str, Any]] | None = None,
) -> Fault:
    f = Fault(name, host, leader)
    f.start = lab.now()
    lab.kill_node(host)
    if damage is not None:
        f.detail.update(damage(host))
    await lab.hold(rng.uniform(1.0, 3.0))
    ok = await lab.start_node(host)
    f.healed = lab.now()
    f.detail["restarted"] = ok
    return f


async def kill_leader(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _leader_or_any(lab, rng)
    return await _kill_restart(lab, rng, "kill_leader", host, leader)


async def kill_follower(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _follower(lab, rng)
    return await _kill_restart(lab, rng, "kill_follower", host, leader)


async def lost_unsynced(lab: Lab, rng: random.Random) -> Fault:
    host = rng.choice(lab.live_hosts())
    leader = await lab.leader(timeout_s=5.0)
    return await _kill_restart(
        lab, rng, "lost_unsynced", host, leader, lambda h: lab.tear_tail(h, rng)
    )


async def restart_empty(lab: Lab, rng: random.Random) -> Fault:
    host = rng.choice(lab.live_hosts())
    leader = await lab.leader(timeout_s=5.0)

    def wipe(h: str) -> dict[str, Any]:
        d = lab.host(h).data_dir
        shutil.rmtree(d, ignore_errors=True)
        return {"wiped": str(d)}

    return await _kill_restart(lab, rng, "restart_empty", host, leader, wipe)


async def amnesia(lab: Lab, rng: random.Random) -> Fault:
    """The scenario that lost acknowledged orders before the founding fix: a lagging voter
    and a voter restarted empty outnumber the only voter that holds the newest entries."""
    leader, _ = await _leader_or_any(lab, rng)
    others = [h for h in lab.hosts if h != leader]
    rng.shuffle(others)
    wiped, lagging = others[0], others[1]
    f = Fault("amnesia", wiped, leader, detail={"wiped": wiped, "lagging": lagging})
    f.start = lab.now()
    lab.net.isolate(lagging)
    await lab.hold(rng.uniform(2.0, 3.0))  # the leader and `wiped` commit without `lagging`
    lab.kill_node(leader)  # first: `wiped` must not catch up from it again
    lab.kill_node(wiped)
    shutil.rmtree(lab.host(wiped).data_dir, ignore_errors=True)
    lab.net.heal()
    await lab.start_node(wiped)
    await lab.hold(rng.uniform(3.0, 4.0))  # may `wiped` and `lagging` elect a leader?
    f.detail["restarted"] = await lab.start_node(leader)
    f.healed = lab.now()
    return f


async def grape_kill(lab: Lab, rng: random.Random) -> Fault:
    host = rng.choice(lab.hosts)
    leader = await lab.leader(timeout_s=5.0)
    f = Fault("grape_kill", host, leader)
    f.start = lab.now()
    lab.kill_grape(host)
    await lab.hold(rng.uniform(2.0, 5.0))
    f.detail["restarted"] = await lab.start_grape(host)
    f.healed = lab.now()
    return f


async def disk_full(lab: Lab, rng: random.Random) -> Fault:
    host = lab.tmpfs_host
    leader = await lab.leader(timeout_s=5.0)
    f = Fault("disk_full", host, leader)
    if not host:
        f.detail["skipped"] = "no tmpfs host in this run"
        return f
    f.start = lab.now()
    f.detail.update(lab.fill_disk(host))
    await lab.hold(rng.uniform(3.0, 5.0))
    f.detail["node_alive_when_full"] = lab.host(host).node_alive
    f.detail.update(await lab.free_disk(host))
    f.healed = lab.now()
    return f


async def cut_host(lab: Lab, rng: random.Random) -> Fault:
    host, leader = await _follower(lab, rng)
    healthy = [h for h in lab.hosts if h != host]
    via = leader if leader in healthy else rng.choice(healthy)
    f = Fault("cut_host", host, leader, detail={"cli_via": via})
    f.detail["cli_before"] = await lab.cli_orders(via, 2, "before")
    f.start = lab.now()
    lab.net.isolate(host)
    await lab.hold(2.0)
    f.detail["cli_during"] = await lab.cli_orders(via, 4, "during")
    await lab.hold(max(0.0, f.start + 12.0 - lab.now()))
    lab.net.heal()
    f.healed = lab.now()
    return f


NEMESES: Final[dict[str, Nemesis]] = {
    "partition": partition,
    "isolate_leader": isolate_leader,
    "bridge": bridge,
    "one_way": one_way,
    "pause_leader": pause_leader,
    "pause_follower": pause_follower,
    "kill_leader": kill_leader,
    "kill_follower": kill_follower,
    "lost_unsynced": lost_unsynced,
    "restart_empty": restart_empty,
    "amnesia": amnesia,
    "grape_kill": grape_kill,
    "disk_full": disk_full,
    "cut_host": cut_host,
}

# what a soak draws from: everything
SOAK_NEMESES: Final = tuple(NEMESES)


def schedule(seed: int, count: int, pool: tuple[str, ...] = SOAK_NEMESES) -> list[str]:
    """``count`` nemeses drawn from ``pool`` by ``random.Random(seed)`` (the same seed, the
    same schedule)."""
    rng = random.Random(seed)
    return [rng.choice(sorted(pool)) for _ in range(count)]


async def run_schedule(lab: Lab, names: list[str], rng: random.Random) -> list[Fault]:
    faults: list[Fault] = []
    for name in names:
        await lab.hold(rng.uniform(1.0, 2.5))  # traffic between faults
        faults.append(await NEMESES[name](lab, rng))
        await asyncio.sleep(0)
    return faults
