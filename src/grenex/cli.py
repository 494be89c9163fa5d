"""The ``grenex`` command line: one click group; each command lives beside what it drives."""

from __future__ import annotations

import click

from grenex import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grenex")
def cli() -> None:
    """grenex: a distributed exchange whose replicas agree on one order of commands."""


@click.command("demo")
def demo_command() -> None:
    """Replay the shipped sample order stream and summarise it (until the cluster demo)."""
    from grenex.engine import Engine
    from grenex.replay import open_input, sample_path, summarize

    with open_input(str(sample_path())) as src:
        summarize(Engine(), src, "the shipped sample")


def _register() -> None:
    from grenex.replay import replay_command

    cli.add_command(replay_command)
    cli.add_command(demo_command)
    from grenex.node.main import node_command

    cli.add_command(node_command)
    try:
        from grenex.client.grenache_cli import grenache_group
    except ImportError:  # pragma: no cover - during bring-up only
        return
    cli.add_command(grenache_group)


def main() -> None:
    _register()
    cli(prog_name="grenex")
