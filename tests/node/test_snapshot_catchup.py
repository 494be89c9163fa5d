"""A node that joins after the log was compacted catches up from a snapshot.

How: 3 voters on real processes with a tiny snapshot interval (every 40 entries, 5 kept
below), 300 commands, then a fourth node joins as a learner.  Proves: the voters' logs were
compacted (their first index is past 1, so the entries before it can only travel inside a
snapshot); the newcomer's log starts after a snapshot it installed (``snapshot_index`` > 0,
``first_index`` > 1); and it reaches the same applied index, state hash and books as the
voters, and keeps up with commands sent after it joined.
"""

from __future__ import annotations

import pytest

from grenex.devnet import LocalCluster

pytestmark = [pytest.mark.timeout(180)]


async def test_a_late_joiner_installs_a_snapshot() -> None:
    args = ("--snapshot-interval", "40", "--compaction-retain", "5")
    async with LocalCluster(nodes=3, voters=3, grapes=1, node_args=args, secret="s") as c:
        for client in ("c0", "c1", "c2", "c3"):
            await c.register("n1", client)
        await c.wait_converged(60)  # every node knows the accounts before their orders
        for i in range(300):
            side = "buy" if i % 2 else "sell"
            price = str(100 + (i % 7) - 3)
            r = await c.command(
                f"n{1 + i % 3}",
                {
                    "type": "place",
                    "client": f"c{i % 4}",
                    "id": f"o{i}",
                    "market": "BTC-USD",
                    "side": side,
                    "qty": "0.5",
                    "price": price,
                },
            )
            assert r["events"][0]["type"] == "accepted", r  # signed, known account
        before = await c.wait_converged(60)
        assert all(s["first_index"] > 50 for s in before.values()), before

        joiner = await c.add_node()
        await c.wait_members(60)
        await c.register(joiner, "late")
        for i in range(300, 320):
            r = await c.command(
                joiner,
                {
                    "type": "place",
                    "client": "late",
                    "id": f"o{i}",
                    "market": "BTC-USD",
                    "side": "buy",
                    "qty": "0.1",
                    "price": "90",
                },
            )
            assert r["events"][0]["type"] == "accepted", r  # signed, known account
        after = await c.wait_converged(60)
        late = after[joiner]
        assert late["snapshot_index"] > 0 and late["first_index"] > 1, late
        assert len({(s["applied"], s["state_hash"]) for s in after.values()}) == 1
        books = [await c.request(n, "book", {}) for n in after]
        assert all(b["books"] == books[0]["books"] for b in books)
