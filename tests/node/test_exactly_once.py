"""SPEC §6 exactly-once, on real processes: a retry is answered with the first outcome.

How: three voters on one Grape.  Commands are retried by hand (same ``client``/``id`` for a
place, same ``req`` for a cancel/amend), through the same node and through another one.

Proves:

* a retried place, cancel or amend — sent again to the same node or to another node — is
  answered with its first outcome (same ``seq``, same events) and changes nothing;
* the same after 100 later commands of the same client (more than the 64 outcomes per client
  the session table used to keep: then a retried ``req`` executed again — an amend put back
  quantity that had traded since — and a retried place got ``duplicate_id``; the leader-kill
  test hit it by chance).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import Harness
from .history import OK, Op

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "once", stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        yield h


async def ok(h: Harness, node: str, kind: str, args: dict[str, Any]) -> Op:
    op = await h.command(node, kind, dict(args))
    assert op.status == OK, op
    return op


def place(client: str, oid: str, side: str, qty: str, price: str = "100") -> dict[str, Any]:
    return {
        "client": client,
        "id": oid,
        "market": "BTC-USD",
        "side": side,
        "qty": qty,
        "price": price,
    }


async def remaining(h: Harness, node: str, client: str, oid: str) -> str | None:
    books = (await h.books(node))["books"]
    for b in books:
        for o in b["bids"] + b["asks"]:
            if o["client"] == client and o["id"] == oid:
                return str(o["qty"])
    return None


async def test_retries_answered_with_first_outcome(harness: Harness) -> None:
    h = harness
    first = await ok(h, "n1", "place", place("a", "a1", "buy", "1"))
    for node in ("n1", "n2", "n3"):
        again = await ok(h, node, "place", place("a", "a1", "buy", "1"))
        assert (again.seq, again.events) == (first.seq, first.events), node
    amend = {"client": "a", "id": "a1", "qty": "3", "price": "99", "req": "a-r1"}
    first = await ok(h, "n2", "amend", amend)
    assert first.events and first.events[0]["type"] == "amended"
    await ok(h, "n1", "place", place("b", "b1", "sell", "1", "99"))  # trades 1 of a1
    assert await remaining(h, "n1", "a", "a1") == "2"
    for node in ("n2", "n3"):
        again = await ok(h, node, "amend", amend)
        assert (again.seq, again.events) == (first.seq, first.events), node
    assert await remaining(h, "n1", "a", "a1") == "2", "a retried amend must not re-apply"
    cancel = {"client": "a", "id": "a1", "req": "a-r2"}
    first = await ok(h, "n3", "cancel", cancel)
    again = await ok(h, "n1", "cancel", cancel)
    assert (again.seq, again.events) == (first.seq, first.events)
    res, _ = await h.verify()
    assert res.entries >= 5


LATER = 100  # later commands of the same client before the retry


class SessionForgottenError(AssertionError):
    """The retry was not answered with its first outcome."""


def expect_first_outcome(first: Op, again: Op, extra: object = None, want: object = None) -> None:
    if (again.seq, again.events, extra) != (first.seq, first.events, want):
        raise SessionForgottenError(
            f"first seq {first.seq} {first.events}; retry seq {again.seq} {again.events}"
            f"; {extra!r} (want {want!r})"
        )


async def _later_commands(h: Harness, client: str, n: int) -> None:
    for i in range(n):
        await ok(h, "n1", "cancel", {"client": client, "id": f"none-{i}", "req": f"{client}-q{i}"})


async def test_req_retry_after_many_later_commands(harness: Harness) -> None:
    h = harness
    await ok(h, "n1", "place", place("c", "c1", "buy", "1"))
    amend = {"client": "c", "id": "c1", "qty": "2", "req": "c-r1"}
    first = await ok(h, "n1", "amend", amend)
    await ok(h, "n1", "place", place("d", "d1", "sell", "1.5"))
    assert await remaining(h, "n1", "c", "c1") == "0.5"
    await _later_commands(h, "c", LATER)
    again = await ok(h, "n2", "amend", amend)
    left = await remaining(h, "n1", "c", "c1")
    # with 64 outcomes per client: a new seq, events [amended qty 2, resting 2], 2 left
    expect_first_outcome(first, again, left, "0.5")


async def test_place_retry_after_many_later_commands(harness: Harness) -> None:
    h = harness
    first = await ok(h, "n1", "place", place("e", "e1", "buy", "1", "90"))
    await _later_commands(h, "e", LATER)
    again = await ok(h, "n2", "place", place("e", "e1", "buy", "1", "90"))
    # with 64 outcomes per client: a new seq, events [rejected duplicate_id]
    expect_first_outcome(first, again)
