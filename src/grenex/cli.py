"""The ``grenex`` command line: one click group; each command lives beside what it drives.

Commands are imported only when used: ``grenex replay`` should not pay for aiohttp, the node
and the client (about a third of a second) just to read a file.
"""

from __future__ import annotations

import importlib

import click

from grenex import __version__

# command name -> "module:attribute" of its click command, in the order `--help` lists them
_COMMANDS: dict[str, str] = {
    "demo": "grenex.devnet.demo:demo_command",
    "up": "grenex.devnet.up:up_command",
    "node": "grenex.node.main:node_command",
    "place": "grenex.client.commands:place_command",
    "cancel": "grenex.client.commands:cancel_command",
    "cancel-all": "grenex.client.commands:cancel_all_command",
    "amend": "grenex.client.commands:amend_command",
    "keys": "grenex.client.keys_cli:keys_group",
    "genesis": "grenex.client.keys_cli:genesis_command",
    "register": "grenex.client.keys_cli:register_command",
    "rotate-key": "grenex.client.keys_cli:rotate_key_command",
    "add-market": "grenex.client.commands:add_market_command",
    "admit": "grenex.client.keys_cli:admit_command",
    "promote": "grenex.client.keys_cli:promote_command",
    "remove": "grenex.client.keys_cli:remove_command",
    "markets": "grenex.client.commands:markets_command",
    "orders": "grenex.client.commands:orders_command",
    "order": "grenex.client.commands:order_command",
    "book": "grenex.client.commands:book_command",
    "trades": "grenex.client.commands:trades_command",
    "status": "grenex.client.commands:status_command",
    "watch": "grenex.client.watch:watch_command",
    "replay": "grenex.replay:replay_command",
    "export": "grenex.client.export:export_command",
    "tail": "grenex.client.tail:tail_command",
    "grenache": "grenex.client.grenache_cli:grenache_group",
    "lab": "grenex.lab.cli:lab_group",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grenex")
def cli() -> None:
    """grenex: a distributed exchange whose replicas agree on one order of commands."""


def main() -> None:
    cli(prog_name="grenex")
