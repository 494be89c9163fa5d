"""An account's own trades and an order's fills (issue 14: "my own trades", "one order's state
and fills"): the ``trades`` action filtered by account (maker or taker), and ``order`` with the
fills the node holds in its recent-trades window — through the library and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from grenex.devnet import LocalCluster

pytestmark = pytest.mark.timeout(120)


async def test_own_trades_and_fills(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with (
        LocalCluster(nodes=3, voters=3, grapes=1, base_dir=tmp_path_factory.mktemp("own")) as c,
        c.client(node="n2") as cl,
    ):
        ask = await cl.place("BTC-USD", "sell", "0.3", "100", client="mia")
        await cl.place("BTC-USD", "buy", "0.1", "100", client="noa")
        await cl.place("BTC-USD", "buy", "0.2", "100", client="oli")
        await cl.place("BTC-USD", "sell", "0.1", "200", client="pia")  # no trade
        mine = await cl.trades("BTC-USD", client="noa")
        assert [(t.taker_client, t.maker_client, t.qty) for t in mine] == [("noa", "mia", "0.1")]
        assert len(await cl.trades("BTC-USD", client="mia")) == 2
        assert await cl.trades("BTC-USD", client="pia") == []
        st = await cl.order("mia", ask.id)
        assert [(f["qty"], f["role"]) for f in st.fills] == [("0.1", "maker"), ("0.2", "maker")]
        assert all(isinstance(f["time"], int) and f["price"] == "100" for f in st.fills)

        env = {
            **os.environ,
            "GRENEX_GRAPE": ",".join(c.grape_urls),
            "GRENEX_GENESIS": str(c.genesis_path),
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            run = subprocess.run(
                [sys.executable, "-m", "grenex", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert run.returncode == 0, run.stderr
            return run

        run = cli("trades", "--client", "oli", "--json")
        trades = json.loads(run.stdout)["trades"]
        assert [(t["taker_client"], t["qty"]) for t in trades] == [("oli", "0.2")]
        run = cli("order", "--id", f"mia/{ask.id}")
        assert "fill 0.1 @ 100 as maker" in run.stdout and "fill 0.2 @ 100" in run.stdout
