"""``grenex up``: a whole network on this machine until Ctrl-C, watched.

Starts Grapes and a cluster (3 voters + 2 learners by default) on loopback with
:class:`~grenex.devnet.LocalCluster`, prints where everything is and how to reach it, and keeps
it running until Ctrl-C or SIGTERM; then every process it started is stopped by PID.

The state directory (``--state-dir``; else the ``--data-dir``; else a new temporary directory,
removed at the end) holds the cluster's ``genesis.json`` (SPEC §8), its keys ``keys/operator.key``
and ``keys/<node id>.key`` (random, mode 0600; kept and reused when ``up`` runs again on the
same state directory, so durable nodes find their logs again), and ``up.json``, the network as
it is now::

    {"grapes": [URL…], "genesis": PATH, "cluster": NAME, "memory": BOOL,
     "nodes": [{"id", "pid", "api_port", "peer_port", "events_port", "voter"}…],
     "exited": [{"id", "pid", "exit_code", "voter"}…], "exited_grapes": [{"url", "pid",
     "exit_code"}…]}

``genesis`` is the path of ``genesis.json``.  ``up`` prints where the genesis and the
operator's key file are, never a key.  It watches every process it started: when one exits
it says so at once (one line naming it and its exit code), rewrites ``up.json`` atomically
(the process moves from ``nodes``/``grapes`` to ``exited``), and when every voter is gone it
stops the rest and exits 1.  ``up.json`` is removed when ``up`` stops.
The cluster secret is kept in ``cluster.secret`` (mode 0600) beside it and never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from grenex.devnet._cli import StoredKeyring, check_grape, run_until_signal
from grenex.devnet.cluster import ClusterError, LocalCluster

__all__ = ["UP_JSON", "up_command"]

UP_JSON = "up.json"
WATCH_INTERVAL_S = 0.1  # how soon a death is noticed


def _secret_for(directory: Path) -> str:
    """The cluster secret, kept in ``directory/cluster.secret`` (0600): a restarted `up` on
    the same durable logs talks to its own nodes again, and a node started by hand reads it
    from there.  It is never printed."""
    path = directory / "cluster.secret"
    if path.exists():
        return path.read_text().strip()
    directory.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def exit_text(code: int) -> str:
    """``exit code 1`` / ``killed by SIGKILL (exit code -9)``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name} (exit code {code})"
    return f"exit code {code}"


@dataclass
class Watch:
    """What ``up`` supervises, and ``up.json`` written from it."""

    cluster: LocalCluster
    state_dir: Path
    memory: bool
    ports: dict[str, dict[str, int]] = field(default_factory=dict)  # node id -> ports
    exited: dict[str, int] = field(default_factory=dict)  # node id -> exit code
    exited_grapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # url -> pid, code

    @property
    def path(self) -> Path:
        return self.state_dir / UP_JSON

    def read_ports(self) -> None:
        for node_id, np in self.cluster.procs.items():
            lines = np.ready_file.read_text().splitlines()
            extra: dict[str, Any] = json.loads(lines[1]) if len(lines) > 1 else {}
            self.ports[node_id] = {
                "api_port": np.api_port,
                "peer_port": int(extra.get("peer", 0)),
                "events_port": int(extra.get("events", 0)),
            }

    def document(self) -> dict[str, Any]:
        c = self.cluster
        gc = c.grape_cluster
        grapes = list(gc.grapes) if gc is not None else []
        return {
            "grapes": [g.api_url for g in grapes if g.api_url not in self.exited_grapes],
            "genesis": str(c.genesis_path) if c.genesis_path is not None else None,
            "cluster": c.cluster,
            "memory": self.memory,
            "nodes": [
                {"id": n, "pid": np.pid, **self.ports.get(n, {}), "voter": np.voter}
                for n, np in c.procs.items()
                if n not in self.exited
            ],
            "exited": [
                {"id": n, "pid": c.procs[n].pid, "exit_code": code, "voter": c.procs[n].voter}
                for n, code in self.exited.items()
            ],
            "exited_grapes": [
                {"url": url, "pid": pid, "exit_code": code}
                for url, (pid, code) in self.exited_grapes.items()
            ],
        }

    def write(self) -> None:
        """Rewrite ``up.json`` atomically (a reader sees the old or the new file, whole)."""
        tmp = self.path.with_name(f".{UP_JSON}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.document(), indent=2) + "\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def deaths(self) -> list[str]:
        """One line per supervised process that exited since the last call."""
        lines: list[str] = []
        for node_id, np in self.cluster.procs.items():
            if node_id in self.exited or np.proc is None:
                continue
            code = np.proc.poll()
            if code is None:
                continue
            self.exited[node_id] = code
            kind = "voter" if np.voter else "learner"
            lines.append(
                f"✗ node {node_id} ({kind}, pid {np.pid}) exited: {exit_text(code)}; "
                f"log: {np.log_path}"
            )
        gc = self.cluster.grape_cluster
        for g in gc.grapes if gc is not None else []:
            if g.api_url in self.exited_grapes or g.process is None:
                continue
            code = g.process.poll()
            if code is None:
                continue
            self.exited_grapes[g.api_url] = (g.process.pid, code)
            lines.append(
                f"✗ Grape {g.api_url} (pid {g.process.pid}) exited: {exit_text(code)}; "
                "nodes that used only this Grape can no longer find the others"
            )
        return lines

    def voters_left(self) -> list[str]:
        return [n for n, np in self.cluster.procs.items() if np.voter and n not in self.exited]


async def watch(w: Watch, console: Console) -> int:
    """Report every death at once and keep ``up.json`` current; return 1 when every voter is
    gone (the cluster can commit nothing more)."""
    while True:
        lines = w.deaths()
        if lines:
            for line in lines:
                console.print(line, style="bold red", soft_wrap=True, markup=False)
            w.write()
            if not w.voters_left():
                console.print(
                    "✗ every voter is gone: the cluster can commit nothing more; "
                    "stopping everything",
                    style="bold red",
                    soft_wrap=True,
                )
                return 1
        await asyncio.sleep(WATCH_INTERVAL_S)


async def _up(
    nodes: int, voters: int, grapes: int, data_dir: Path | None, state_dir: Path | None
) -> int:
    console = Console()
    made_state = state_dir is None and data_dir is None
    state = state_dir or data_dir or Path(tempfile.mkdtemp(prefix="grenex-up-"))
    state.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(
        nodes=nodes,
        voters=voters,
        grapes=grapes,
        memory=data_dir is None,
        base_dir=data_dir or state,
        state_dir=state,
        secret=_secret_for(data_dir or state),
        keyring=StoredKeyring(state / "keys"),
    )
    w = Watch(cluster, state, memory=data_dir is None)
    try:
        with console.status("starting Grapes and nodes on 127.0.0.1 …"):
            await cluster.start()
        leader = await cluster.wait_leader()
        w.read_ports()
        w.write()
        grape = ",".join(cluster.grape_urls)
        t = Table(title="grenex is up", header_style="bold")
        for col in ("node", "kind", "client API", "pid", "log"):
            t.add_column(col)
        for node_id, np in cluster.procs.items():
            kind = "voter" if np.voter else "learner"
            t.add_row(node_id, kind, f"127.0.0.1:{np.api_port}", str(np.pid), str(np.log_path))
        console.print(t)
        console.print(f"Grapes: {grape}   leader: {leader}   markets: BTC-USD, ETH-USD")
        if data_dir is None:
            console.print(
                "In memory: the logs are NOT durable (a node that stops loses its log; "
                "--data-dir DIR keeps them)",
                style="bold yellow",
            )
        else:
            console.print(f"Durable logs under {data_dir}")
        secret_file = (data_dir or state) / "cluster.secret"
        genesis = cluster.genesis_path
        op_key = cluster.keys_dir / "operator.key"
        assert cluster.genesis is not None
        console.print(
            f"State: {state}  ({UP_JSON}: the network as it is now, rewritten when a "
            "process exits)",
            soft_wrap=True,
        )
        console.print(
            f"Genesis: {genesis}  (cluster {cluster.cluster}, id "
            f"{cluster.genesis.cluster_id[:16]}…)\n"
            f"Operator key: {op_key}  (account {cluster.genesis.operator.client}; signs "
            "add-market, admit, promote, remove)",
            soft_wrap=True,
        )
        new = f"n{nodes + 1}"
        console.print(
            "Try, in another terminal:\n"
            f"  export GRENEX_GRAPE={grape}\n"
            f"  export GRENEX_GENESIS={genesis}\n"
            "  grenex status\n"
            "  grenex keys new me.key && grenex register --client me --key me.key\n"
            "  grenex place --node n2 --key me.key --market BTC-USD --side buy --qty 0.5 "
            "--price 64000\n"
            "  grenex watch --node n2 --market BTC-USD\n"
            "A node started by hand (peer traffic is signed with the cluster secret) serves "
            "once the operator admits it:\n"
            f"  grenex keys new {new}.key\n"
            f"  GRENEX_CLUSTER_SECRET=$(cat {secret_file}) grenex node --id {new} "
            f"--key {new}.key --memory --grape {grape}\n"
            f"  grenex admit --node {new} --node-key {new}.key --key {op_key}\n"
            "Ctrl-C stops everything.",
            soft_wrap=True,
        )
        return await watch(w, console)
    finally:
        with contextlib.suppress(Exception):
            console.print("stopping …")
        await cluster.stop()
        w.remove()
        if made_state:
            shutil.rmtree(state, ignore_errors=True)


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
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=(
        "Where genesis.json, keys/ (the operator's and the nodes' key files), up.json (the "
        "running network: Grapes, nodes, pids, ports) and the cluster secret are kept "
        "[default: the --data-dir, else a new temporary directory]."
    ),
)
def up_command(
    nodes: int,
    voters: int,
    grapes: int,
    memory: bool,
    data_dir: Path | None,
    state_dir: Path | None,
) -> None:
    """Start G Grapes and N nodes (n1…nN, the first V voting) on loopback until Ctrl-C.

    It watches them: a node or Grape that exits is reported at once and up.json (in the state
    directory) is rewritten; when every voter is gone, up stops the rest and exits 1.
    """
    check_grape()
    if memory and data_dir is not None:
        raise click.UsageError("--memory and --data-dir exclude each other")
    if not 1 <= voters <= nodes:
        raise click.UsageError("need 1 <= voters <= nodes")
    try:
        code = run_until_signal(_up(nodes, voters, grapes, data_dir, state_dir))
    except asyncio.CancelledError:
        # interrupted (Ctrl-C or SIGTERM): everything up started is stopped; 130 as every
        # grenex command that is interrupted
        click.echo("stopped", err=True)
        raise SystemExit(130) from None
    except ClusterError as e:
        raise click.ClickException(f"the network did not come up: {e}") from None
    raise SystemExit(code)
