"""SPEC §6/§8 exactly-once on real processes: the per-account nonce window.

How: three voters on one Grape.  Every command is a signed envelope; a retry is the **same
envelope** sent again by hand, through the same node and through another one.

Proves:

* a retried place, cancel or amend — the same envelope, sent again to the same node or to
  another node — is answered with its first outcome (same ``seq``, same events, marked
  ``"duplicate": true``) and changes nothing (a retried amend does not put back quantity that
  traded since); another TEXT under a kept nonce is refused ``stale_nonce``;
* the window keeps the account's 64 highest nonces: after 60 later commands of the same
  account the retry is still answered with its first outcome; after 64 (here 100) it is
  refused ``ERR_GRENEX_BAD_REQUEST: stale_nonce`` and executes nothing (before the nonce
  window, the session table forgot after 64 outcomes and a retried amend executed again);
* a place whose ``(client, id)`` was used before, sent in a *new* envelope, is rejected
  ``duplicate_id`` (a logged rejection; the first order untouched);
* the history checker holds over all of it (the ``duplicate_id`` is the only "second
  execution" it reports, and it is this test's own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import Harness
from .history import FAILED, OK, Op

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

WINDOW = 64  # genesis limits.nonces (the default)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "once", stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        yield h


async def signed(h: Harness, node: str, kind: str, args: dict[str, Any]) -> Op:
    """A new envelope for ``args`` (its account registered first), sent; must be answered."""
    await h.ensure_registered(node, str(args["client"]))
    op = await h.send(h.signing.op(node, {"type": kind, **args}))
    assert op.status == OK, op
    return op


async def retry(h: Harness, first: Op, node: str) -> Op:
    """The same envelope as ``first`` again, through ``node``."""
    return await h.send(h.again(first, node))


def place(
    client: str, oid: str, side: str, qty: str, price: str = "100", market: str = "BTC-USD"
) -> dict[str, Any]:
    return {
        "client": client,
        "id": oid,
        "market": market,
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


def first_outcome(first: Op, again: Op) -> None:
    assert again.status == OK, again
    assert again.duplicate, again
    assert (again.seq, again.events) == (first.seq, first.events), (first, again)


async def test_retries_answered_with_first_outcome(harness: Harness) -> None:
    h = harness
    first = await signed(h, "n1", "place", place("a", "a1", "buy", "1"))
    assert not first.duplicate
    for node in ("n1", "n2", "n3"):
        first_outcome(first, await retry(h, first, node))
    amend = await signed(h, "n2", "amend", {"client": "a", "id": "a1", "qty": "3", "price": "99"})
    assert amend.events and amend.events[0]["type"] == "amended"
    await signed(h, "n1", "place", place("b", "b1", "sell", "1", "99"))  # trades 1 of a1
    assert await remaining(h, "n1", "a", "a1") == "2"
    for node in ("n2", "n3"):
        first_outcome(amend, await retry(h, amend, node))
    assert await remaining(h, "n1", "a", "a1") == "2", "a retried amend must not re-apply"
    cancel = await signed(h, "n3", "cancel", {"client": "a", "id": "a1"})
    first_outcome(cancel, await retry(h, cancel, "n1"))
    # another TEXT under a nonce the window keeps
    other = h.signing.op("n1", {"type": "cancel", "client": "a", "id": "zz", "nonce": cancel.nonce})
    refused = await h.send(other)
    assert refused.status == FAILED and refused.error.endswith("stale_nonce"), refused
    res, _ = await h.verify()
    assert res.entries >= 5 and res.failed == 1


async def _later_commands(h: Harness, client: str, n: int) -> None:
    """``n`` later envelopes of ``client`` (cancels of ids never placed: cheap, logged)."""
    for i in range(n):
        op = await signed(h, "n1", "cancel", {"client": client, "id": f"none-{i}"})
        assert op.events and op.events[0]["reason"] == "unknown_order", op


async def test_retry_within_the_window(harness: Harness) -> None:
    h = harness
    await signed(h, "n1", "place", place("c", "c1", "buy", "1"))
    amend = await signed(h, "n1", "amend", {"client": "c", "id": "c1", "qty": "2"})
    await signed(h, "n1", "place", place("d", "d1", "sell", "1.5"))
    assert await remaining(h, "n1", "c", "c1") == "0.5"
    await _later_commands(h, "c", WINDOW - 4)  # the amend's nonce is still among the 64
    first_outcome(amend, await retry(h, amend, "n2"))
    assert await remaining(h, "n1", "c", "c1") == "0.5"


async def test_an_old_nonce_after_64_newer_is_stale(harness: Harness) -> None:
    h = harness
    await signed(h, "n1", "place", place("e", "e1", "buy", "1", "90", "ETH-USD"))
    amend = await signed(h, "n1", "amend", {"client": "e", "id": "e1", "qty": "2"})
    await signed(h, "n1", "place", place("f", "f1", "sell", "1.5", "90", "ETH-USD"))
    assert await remaining(h, "n1", "e", "e1") == "0.5"
    await _later_commands(h, "e", 100)
    for node in ("n2", "n1"):
        again = await retry(h, amend, node)
        assert again.status == FAILED, again
        assert again.error == "ERR_GRENEX_BAD_REQUEST: stale_nonce", again.error
    # nothing executed again: the amend did not put back the quantity that traded
    assert await remaining(h, "n1", "e", "e1") == "0.5"
    order = await h.ask("n2", "order", {"client": "e", "id": "e1"})
    assert order["state"] == "resting" and order["remaining"] == "0.5", order


async def test_a_place_id_reused_in_a_new_envelope(harness: Harness) -> None:
    h = harness
    first = await signed(h, "n1", "place", place("g", "g1", "buy", "1", "80", "ETH-USD"))
    assert first.events and first.events[-1]["type"] == "resting"
    reused = await signed(h, "n2", "place", place("g", "g1", "sell", "5", "70", "ETH-USD"))
    assert not reused.duplicate and reused.seq != first.seq
    assert reused.events == [
        {
            "type": "rejected",
            "seq": reused.seq,
            "cmd": "place",
            "reason": "duplicate_id",
            "client": "g",
            "id": "g1",
        }
    ], reused.events
    assert await remaining(h, "n1", "g", "g1") == "1"
    res, _ = await h.verify(allow=frozenset({"reexecuted"}))
    again = [d for c, d in res.violations if c == "reexecuted"]
    assert len(again) == 1 and "'g1'" in again[0], res.violations
