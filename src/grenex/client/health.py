"""What ``grenex status`` says about a cluster, and how it decides it.

Every node announced under ``grenex:<cluster>:nodes`` is asked for its status at once, with
``{"hash": true}`` (a fresh state hash); while the hashes asked for have not arrived, the nodes
are asked again, for at most :data:`HASH_WAIT_S`.  Then :func:`judge` (pure, given the replies)
reports, from the membership the leader (or the most advanced node) knows:

* the **leader**: a node that leads the newest term *and* hears from a majority of the voters,
  or plainly "no leader" (none leads; the one named does not answer; it leads an old term; or
  too few voters answer for it to commit anything);
* every **member that does not answer**: a voter or learner whose address is announced but
  refuses or times out ("unreachable"), or that is not announced at all ("missing"); never
  silently dropped;
* every **lagging** node: applied more than ``max_lag`` entries behind the newest commit index;
* **agreement**, judged with :func:`grenex.codec.api.statuses_agree` (every node at one index,
  with its hash computed at that index); nodes whose hashes are of one index but differ have
  **diverged**; hashes of different indexes (a busy cluster) are "not compared".

Each of those (but "not compared") is a **problem**: ``grenex status`` exits 1 when there is
one (exit codes in the module doc of :mod:`grenex.client.commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

from grenex.client.client import GrenexClient, GrenexClientError, NodeStatus, StatusReply
from grenex.codec.api import service_names, statuses_agree
from grenex.grenache import GrenacheError

__all__ = [
    "HASH_PREFIX",
    "HASH_WAIT_S",
    "MAX_LAG",
    "Health",
    "Row",
    "gather_health",
    "judge",
    "single_problems",
    "status_table",
]

HASH_PREFIX = 12
MAX_LAG = 1000  # entries a node may be behind the newest commit before it counts as lagging
HASH_WAIT_S = 2.0  # at most this long for the fresh hashes asked for
HASH_POLL_S = 0.1

RowState = Literal["ok", "lagging", "unreachable", "missing"]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a node that answered, or a member / address that did not."""

    node: str  # node id, or the peer address when no member is known to live there
    state: RowState
    kind: str  # "voter", "learner" or "" (not a member, or not known)
    status: NodeStatus | None = None
    detail: str = ""
    lag: int = 0


@dataclass(frozen=True, slots=True)
class Health:
    rows: list[Row]
    leader: str | None
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    agree: bool | None  # None: not compared (the hashes are of different indexes)
    agreement: str
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "leader": self.leader,
            "members": {"voters": list(self.voters), "learners": list(self.learners)},
            "problems": list(self.problems),
            "agree": self.agree,
            "agreement": self.agreement,
            "nodes": [r.status.raw for r in self.rows if r.status is not None],
            "lagging": [
                {"node": r.node, "applied": r.status.applied, "behind": r.lag}
                for r in self.rows
                if r.state == "lagging" and r.status is not None
            ],
            "unreachable": [
                {"node": r.node, "kind": r.kind, "error": r.detail}
                for r in self.rows
                if r.state == "unreachable"
            ],
            "missing": [
                {"node": r.node, "kind": r.kind} for r in self.rows if r.state == "missing"
            ],
        }


# ------------------------------------------------------------------------------- gathering


def _hashes_settled(replies: Sequence[StatusReply], asked: dict[str, int]) -> bool:
    """Every node reports a hash at least as new as its applied index when asked (or all
    agree already): asking again would tell nothing more."""
    ok = [r.status for r in replies if r.status is not None]
    if statuses_agree([s.raw for s in ok]):
        return True
    for s in ok:
        at = s.raw.get("state_hash_index")
        if not isinstance(at, int) or at < asked.get(s.node, 0):
            return False
    return True


async def _name_peers(c: GrenexClient, replies: Sequence[StatusReply]) -> dict[str, str]:
    """Which member lives at each address that did not answer (``{peer: node id}``), from
    the Grapes' lookups of the members' own names."""
    bad = {r.peer for r in replies if r.status is None}
    if not bad:
        return {}
    members: set[str] = set()
    answered: set[str] = set()
    for r in replies:
        if r.status is not None:
            answered.add(r.status.node)
            members.update(r.status.voters, r.status.learners)
    wanted = sorted(members - answered)

    async def lookup(node: str) -> list[str]:
        with contextlib.suppress(GrenacheError, TimeoutError):
            async with asyncio.timeout(3.0):
                name = service_names(c.cluster, node)["node"]
                return await c.link.lookup(name, use_cache=False)
        return []

    found = await asyncio.gather(*(lookup(n) for n in wanted))
    return {peer: node for node, peers in zip(wanted, found, strict=True) for peer in peers}


async def gather_health(
    c: GrenexClient, *, max_lag: int = MAX_LAG, hash_wait: float = HASH_WAIT_S
) -> Health:
    """Ask every node (fresh hashes, polled for at most ``hash_wait`` s), then judge."""
    replies = await c.statuses(fresh_hash=True)
    asked = {r.status.node: r.status.applied for r in replies if r.status is not None}
    deadline = time.monotonic() + hash_wait
    while not _hashes_settled(replies, asked) and time.monotonic() < deadline:
        await asyncio.sleep(HASH_POLL_S)
        try:
            replies = await c.statuses()
        except GrenexClientError:
            break  # keep the last full picture
    return judge(replies, await _name_peers(c, replies), max_lag=max_lag)


# ------------------------------------------------------------------------------- judging


def _agreement(ok: Sequence[NodeStatus]) -> tuple[bool | None, str]:
    if not ok:
        return False, "no node answered"
    raws = [s.raw for s in ok]
    if statuses_agree(raws):
        first = raws[0]
        n = len(ok)
        who = f"all {n} nodes agree" if n > 1 else "the only node answering"
        short = str(first["state_hash"])[:HASH_PREFIX]
        return True, f"{who}: applied {first['applied']}, state hash {short}"
    by_index: dict[int, dict[str, list[str]]] = {}
    for s in ok:
        at, h = s.raw.get("state_hash_index"), s.raw.get("state_hash")
        if isinstance(at, int) and isinstance(h, str):
            by_index.setdefault(at, {}).setdefault(h, []).append(s.node)
    split = sorted(i for i, hashes in by_index.items() if len(hashes) > 1)
    if split:
        groups = " vs ".join(",".join(nodes) for nodes in by_index[split[0]].values())
        return False, f"DIVERGED: different state hashes at index {split[0]} ({groups})"
    return None, (
        "state hashes not compared: they are of different log indexes (a busy cluster, or a "
        "node behind); no two nodes disagree at one index"
    )


def _leader(ok: Sequence[NodeStatus], voters: Sequence[str]) -> tuple[str | None, str | None]:
    """(the leader, or None and the problem saying why there is none)."""
    answered = {s.node for s in ok}
    claims = sorted((s for s in ok if s.role == "leader"), key=lambda s: (s.term, s.node))
    newest = max((s.term for s in ok), default=0)
    up = sum(1 for v in voters if v in answered)
    majority = len(voters) // 2 + 1
    if not claims:
        named = sorted({s.leader for s in ok if s.leader is not None} - answered)
        if named:
            return None, f"no leader: nodes name {', '.join(named)}, which does not answer"
        return None, (
            f"no leader: no node leads ({up} of {len(voters)} voters answer; "
            f"an election needs {majority})"
        )
    lead = claims[-1]
    if lead.term < newest:
        return None, (
            f"no leader: {lead.node} leads term {lead.term}, but nodes are at term {newest}"
        )
    if up < majority:
        return None, (
            f"no leader: {lead.node} cannot commit: {up} of {len(voters)} voters answer "
            f"(a majority is {majority})"
        )
    return lead.node, None


def judge(
    replies: Sequence[StatusReply], peer_names: dict[str, str], *, max_lag: int = MAX_LAG
) -> Health:
    """The cluster's health from the status replies (and which member lives at each address
    that did not answer, ``peer_names``)."""
    ok = sorted((r.status for r in replies if r.status is not None), key=lambda s: s.node)
    bad = [r for r in replies if r.status is None]
    problems: list[str] = []
    if not ok:
        problems.append("no node answered")
    # the membership: as the leader knows it, else as the most advanced node knows it
    claims = [s for s in ok if s.role == "leader"]
    source = max(claims or ok, key=lambda s: (s.term, s.commit, s.node), default=None)
    voters = source.voters if source is not None else ()
    learners = source.learners if source is not None else ()
    leader, why = _leader(ok, voters)
    if why is not None and ok:
        problems.append(why)

    def kind(node: str) -> str:
        return "voter" if node in voters else "learner" if node in learners else ""

    rows: list[Row] = []
    top = max((s.commit for s in ok), default=0)
    for s in ok:
        lag = max(0, top - s.applied)
        lagging = lag > max_lag
        if lagging:
            problems.append(f"{s.node} lags: applied {s.applied}, {lag} behind commit {top}")
        rows.append(Row(s.node, "lagging" if lagging else "ok", kind(s.node), s, lag=lag))
    answered = {s.node for s in ok}
    unreachable: dict[str, str] = {}  # node id (or address) -> why
    for r in bad:
        why_bad = _short_error(r.error)
        unreachable[peer_names.get(r.peer, r.peer)] = f"{r.peer}: {why_bad}"
    for node in [*voters, *learners]:
        if node in answered:
            continue
        if node in unreachable:
            detail = unreachable.pop(node)
            rows.append(Row(node, "unreachable", kind(node), detail=detail))
            problems.append(f"{kind(node)} {node} does not answer ({detail})")
        else:
            rows.append(Row(node, "missing", kind(node), detail="not announced: down?"))
            problems.append(f"{kind(node)} {node} does not answer (not announced: down?)")
    for where, detail in unreachable.items():  # announced, not answering, not a known member
        rows.append(Row(where, "unreachable", kind(where), detail=detail))
        problems.append(f"{where} is announced but does not answer ({detail})")
    agree, sentence = _agreement(ok)
    if agree is False and ok:
        problems.append(sentence)
    return Health(rows, leader, voters, learners, agree, sentence, problems)


def single_problems(s: NodeStatus) -> list[str]:
    """What one node's own status says is wrong (``status --node``)."""
    if s.role != "leader" and s.leader is None:
        return [f"no leader: {s.node} knows of none (term {s.term})"]
    return []


def _short_error(e: GrenexClientError | None) -> str:
    """A few words for a table cell (the JSON output has the whole message)."""
    if e is None:
        return "?"
    text = e.message
    for needle, words in (
        ("refused", "connection refused"),
        ("Connect call failed", "connection refused"),
        ("ERR_TIMEOUT", "timeout"),
    ):
        if needle in text:
            return words
    return e.code


# ------------------------------------------------------------------------------- the table


def _hash_cell(s: NodeStatus) -> str:
    h, at = s.raw.get("state_hash"), s.raw.get("state_hash_index")
    if not isinstance(h, str):
        return "-"
    return f"{h[:HASH_PREFIX]} @{at}"


def status_table(rows: Sequence[Row], leader: str | None = None) -> Table:
    t = Table(header_style="bold")
    for col, just in (
        ("node", "left"),
        ("kind", "left"),
        ("role", "left"),
        ("term", "right"),
        ("leader", "left"),
        ("commit", "right"),
        ("applied", "right"),
        ("lag", "right"),
        ("state hash @index", "left"),
        ("pid", "right"),
        ("note", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    role_style = {"leader": "bold green", "follower": "cyan", "learner": "magenta"}
    for r in rows:
        s = r.status
        if s is None:
            t.add_row(
                Text(r.node, style="red"),
                r.kind,
                Text(r.state, style="bold red"),
                *([""] * 7),
                Text(r.detail, style="red"),
            )
            continue
        role = Text(s.role, style=role_style.get(s.role, ""))
        if s.role == "leader" and s.node != leader:
            role = Text(f"{s.role}?", style="bold red")
        note = Text(f"lagging {r.lag}", style="bold red") if r.state == "lagging" else Text("")
        t.add_row(
            s.node,
            r.kind,
            role,
            str(s.term),
            s.leader or Text("none", style="red"),
            str(s.commit),
            str(s.applied),
            Text(str(r.lag), style="yellow" if r.lag else "dim"),
            _hash_cell(s),
            str(s.pid),
            note,
        )
    return t
