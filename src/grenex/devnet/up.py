"""``grenex up``: a whole network on this machine until Ctrl-C.

Starts Grapes and a cluster (3 voters + 2 learners by default) on loopback with
:class:`~grenex.devnet.LocalCluster`, prints where everything is and how to reach it, and keeps
it running until Ctrl-C or SIGTERM; then every process it started is stopped by PID.  With
``--data-dir`` the logs are durable and the cluster secret is kept beside them, so a restarted
``up`` talks to its own nodes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from grenex.devnet._cli import check_grape, run_until_signal
from grenex.devnet.cluster import ClusterError, LocalCluster

__all__ = ["up_command"]


def _secret_for(data_dir: Path | None) -> str:
    """The cluster secret: random for an in-memory network; kept in the data directory for
    a durable one, so that a restarted `up` can talk to its own nodes again."""
    if data_dir is None:
        return secrets.token_hex(16)
    path = data_dir / "cluster.secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(16)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


async def _up(nodes: int, voters: int, grapes: int, data_dir: Path | None) -> None:
    console = Console()
    cluster = LocalCluster(
        nodes=nodes,
        voters=voters,
        grapes=grapes,
        memory=data_dir is None,
        base_dir=data_dir,
        secret=_secret_for(data_dir),
    )
    with console.status("starting Grapes and nodes on 127.0.0.1 …"):
        await cluster.start()
    try:
        leader = await cluster.wait_leader()
        grape = ",".join(cluster.grape_urls)
        t = Table(title="grenex is up", header_style="bold")
        for col in ("node", "kind", "client API", "pid", "log"):
            t.add_column(col)
        for node_id, np in cluster.procs.items():
            kind = "voter" if np.voter else "learner"
            t.add_row(node_id, kind, f"127.0.0.1:{np.api_port}", str(np.pid), str(np.log_path))
        console.print(t)
        console.print(f"Grapes: {grape}   leader: {leader}   markets: BTC-USD, ETH-USD")
        console.print(
            "Try, in another terminal:\n"
            f"  export GRENEX_GRAPE={grape}\n"
            "  grenex status\n"
            "  grenex place --node n2 --market BTC-USD --side buy --qty 0.5 --price 64000\n"
            "  grenex watch --node n4 --market BTC-USD\n"
            "A node started by hand joins with the cluster secret (peer traffic is signed):\n"
            f"  GRENEX_CLUSTER_SECRET={cluster.secret} grenex node --id n{nodes + 1} --join "
            f"--memory --grape {grape}\n"
            "Ctrl-C stops everything."
        )
        while True:
            await asyncio.sleep(3600)
    finally:
        with contextlib.suppress(Exception):
            console.print("stopping …")
        await cluster.stop()


@click.command("up")
@click.option("--nodes", type=int, default=5, show_default=True)
@click.option("--voters", type=int, default=3, show_default=True)
@click.option("--grapes", type=int, default=2, show_default=True)
@click.option("--memory", is_flag=True, help="In-memory logs (the default).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Durable logs (and node logs) under this directory.",
)
def up_command(nodes: int, voters: int, grapes: int, memory: bool, data_dir: Path | None) -> None:
    """Start G Grapes and N nodes (n1…nN, the first V voting) on loopback until Ctrl-C."""
    check_grape()
    if memory and data_dir is not None:
        raise click.UsageError("--memory and --data-dir exclude each other")
    if not 1 <= voters <= nodes:
        raise click.UsageError("need 1 <= voters <= nodes")
    try:
        run_until_signal(_up(nodes, voters, grapes, data_dir))
    except asyncio.CancelledError:
        click.echo("stopped", err=True)
    except ClusterError as e:
        raise click.ClickException(f"the network did not come up: {e}") from None
