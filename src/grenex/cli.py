"""The ``grenex`` command line: one click group; each command lives beside what it drives."""

from __future__ import annotations

import click

from grenex import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grenex")
def cli() -> None:
    """grenex: a distributed exchange whose replicas agree on one order of commands."""


def _register() -> None:
    from grenex.client.demo import demo_command, up_command
    from grenex.client.grenache_cli import grenache_group
    from grenex.node.main import node_command
    from grenex.replay import replay_command

    cli.add_command(replay_command)
    cli.add_command(demo_command)
    cli.add_command(up_command)
    cli.add_command(node_command)
    cli.add_command(grenache_group)
    from grenex.client.commands import client_commands

    for command in client_commands():
        cli.add_command(command)


def main() -> None:
    _register()
    cli(prog_name="grenex")
