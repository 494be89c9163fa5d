"""Keys, the genesis, accounts and membership on the ``grenex`` command line (SPEC §5, §8).

* ``grenex keys new FILE`` / ``grenex keys show FILE``: a key file (the 32-byte Ed25519 seed,
  canonical base64url, mode 0600); both print the PUBLIC key only.  No command prints a seed.
* ``grenex genesis --cluster NAME --operator CLIENT:KEYFILE --voter ID:KEYFILE…``: a genesis
  on stdout, each voter's certificate made from its key (and checked as a node checks it).
* ``grenex register --client NAME --key FILE``: claim an account for a key (succeeds when the
  name is already bound to that key); ``grenex rotate-key --key OLD --new-key NEW``.
* Operator commands, signed with the genesis operator's key: ``admit``, ``promote``,
  ``remove`` (``add-market`` is in :mod:`grenex.client.commands`).  Their subject is
  ``--node ID``; ``--via ID`` names the node the command is sent to (default: any node).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from grenex.client.client import CommandResult, GrenexClientError
from grenex.client.commands import (
    ClientCommand,
    _OneLineUsageError,
    account_of,
    console,
    fail,
    key_option,
    make_client,
    network_options,
    operator_key,
    print_json,
    report,
    run_client,
    signing_key,
)
from grenex.codec.genesis import (
    JOIN_VALUES,
    REGISTER_VALUES,
    GenesisError,
    Limits,
    make_genesis,
)
from grenex.codec.keys import KeyFileError, SecretKey, is_valid_key, read_key_file, write_key_file
from grenex.engine import is_name
from grenex.grenache.tls import b64url, check_cert, make_self_signed, unb64url

__all__ = [
    "admit_command",
    "genesis_command",
    "keys_group",
    "node_cert",
    "promote_command",
    "register_command",
    "remove_command",
    "rotate_key_command",
]

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def node_cert(key: SecretKey, node_id: str) -> str:
    """A node's certificate (base64url DER), exactly as the node makes it from its key."""
    return b64url(make_self_signed(key.seed, node_id))


# ------------------------------------------------------------------------------- keys


class _Group(click.Group):
    """A group whose subcommands report usage errors in one line."""

    command_class = ClientCommand


@click.group("keys", cls=_Group)
def keys_group() -> None:
    """Key files: an Ed25519 seed, canonical base64url, mode 0600 (see docs/trust.md)."""


@keys_group.command("new")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_json_option
def keys_new_command(file: Path, as_json: bool) -> None:
    """Write a new random key to FILE (mode 0600; never overwrites) and print its public key."""
    key = SecretKey.generate()
    try:
        write_key_file(file, key)
    except KeyFileError as e:
        fail(str(e))
    if as_json:
        print_json({"file": str(file), "key": key.public_key})
    else:
        click.echo(key.public_key)


@keys_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_json_option
def keys_show_command(file: Path, as_json: bool) -> None:
    """Print the public key of the key file FILE (never its secret)."""
    try:
        key = read_key_file(file)
    except KeyFileError as e:
        fail(str(e) if str(file) in str(e) else f"{file}: {e}")
    if as_json:
        print_json({"file": str(file), "key": key.public_key})
    else:
        click.echo(key.public_key)


# ------------------------------------------------------------------------------- genesis


def _named_key(option: str, value: str) -> tuple[str, SecretKey]:
    name, sep, path = value.partition(":")
    if not sep or not name or not path:
        raise _OneLineUsageError(f"{option} {value!r}: write NAME:KEYFILE")
    if not is_name(name):
        raise _OneLineUsageError(f"{option} {value!r}: {name!r} is not a name")
    try:
        return name, read_key_file(path)
    except KeyFileError as e:
        raise _OneLineUsageError(f"{option} {value!r}: {e}") from None


@click.command("genesis", cls=ClientCommand)
@click.option("--cluster", "cluster", required=True, help="The cluster's name.")
@click.option(
    "--operator",
    required=True,
    metavar="CLIENT:KEYFILE",
    help="The operator's account and key file.",
)
@click.option(
    "--voter",
    "voters",
    multiple=True,
    required=True,
    metavar="ID:KEYFILE",
    help="A founding voter's node id and key file (repeat for each voter).",
)
@click.option(
    "--join",
    type=click.Choice(JOIN_VALUES),
    default="operator",
    show_default=True,
    help="Who adds nodes: the operator (admit) or anyone (join).",
)
@click.option(
    "--register",
    type=click.Choice(REGISTER_VALUES),
    default="open",
    show_default=True,
    help="Who may register accounts.",
)
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=N",
    help=(
        "A bound on replicated state (repeat): nonces, accounts, markets, orders (resting per "
        "account), ids (used per account), learners [default: 64, 100000, 1000, 1000, "
        "1000000, 64]."
    ),
)
def genesis_command(
    cluster: str,
    operator: str,
    voters: tuple[str, ...],
    join: str,
    register: str,
    limits: tuple[str, ...],
) -> None:
    """Write a genesis to stdout, for a cluster founded by hand across hosts.

    Each voter's certificate is made from its key file, as the node makes it. Save the
    output byte for byte (grenex genesis ... > genesis.json): the cluster id is its SHA-256.
    """
    if not is_name(cluster):
        raise _OneLineUsageError(f"--cluster {cluster!r} is not a name")
    op, op_key = _named_key("--operator", operator)
    vs = []
    for v in voters:
        vid, vkey = _named_key("--voter", v)
        vs.append((vid, vkey.public_key, node_cert(vkey, vid)))
    bounds: dict[str, int] = {}
    for item in limits:
        name, sep, value = item.partition("=")
        if not sep or name not in Limits.__struct_fields__ or not value.isdigit():
            fields = ", ".join(Limits.__struct_fields__)
            raise _OneLineUsageError(f"--limit {item!r}: NAME=N with NAME one of {fields}")
        bounds[name] = int(value)
    try:
        data = make_genesis(
            cluster,
            (op, op_key.public_key),
            vs,
            join=join,
            register=register,
            limits=Limits(**bounds) if bounds else None,
            cert_check=check_cert,
        )
    except GenesisError as e:
        fail(f"not a valid genesis: {e}")
    click.echo(data.decode("utf-8"), nl=False)


# ------------------------------------------------------------------------------- accounts


@click.command("register", cls=ClientCommand)
@click.option("--client", "client_id", required=True, help="The account name to claim.")
@click.option("--node", default=None, help="Send it to this node [default: any node].")
@key_option(help="The key the account is bound to (it signs) [default: $GRENEX_KEY].")
@network_options
@_json_option
def register_command(
    client_id: str,
    node: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Claim the account --client for --key (a signed register).

    Succeeds (exit 0) when the name is already bound to this key; exit 1 when it is bound to
    another key, or this key to another account."""
    if not is_name(client_id):
        raise _OneLineUsageError(f"--client {client_id!r} is not a name")
    k = signing_key(cluster, key, "register")

    async def go() -> tuple[CommandResult | None, dict[str, Any]]:
        async with make_client(grape, cluster, node, timeout, key=k, client_id=client_id) as c:
            held = await c.account(client=client_id)
            if held.get("key") == k.public_key:
                return None, held
            if "key" in held:
                raise GrenexClientError(
                    f"the account {client_id!r} is bound to another key ({held['key']})"
                )
            r = await c.register(client_id)
            return r, held

    r, _held = run_client(go, "register")
    if r is None:
        if as_json:
            print_json({"client": client_id, "key": k.public_key, "registered": "already"})
        else:
            console().print(f"{client_id} is already registered to key {k.public_key}")
        return
    report("register", r, as_json)


@click.command("rotate-key", cls=ClientCommand)
@click.option("--client", "client_id", default=None, help="The account [default: the key's].")
@click.option("--node", default=None, help="Send it to this node [default: any node].")
@key_option(help="The account's current key (it signs) [default: $GRENEX_KEY].")
@key_option(
    "--new-key",
    help="The key file to bind the account to (grenex keys new FILE makes one).",
    envvar=None,
    dest="new_key",
)
@network_options
@_json_option
def rotate_key_command(
    client_id: str | None,
    node: str | None,
    key: SecretKey | None,
    new_key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Bind the account to a new key (signed with its current one); its nonces stay."""
    k = signing_key(cluster, key, "rotate-key")
    if new_key is None:
        raise _OneLineUsageError("--new-key FILE is needed")

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout, key=k) as c:
            who = await account_of(c, client_id)
            return await c.rotate_key(new_key, who)

    report("rotate-key", run_client(go, "rotate-key"), as_json)


# ------------------------------------------------------------------------------- operator


def _via_option(f: Any) -> Any:
    return click.option("--via", default=None, help="Send it to this node [default: any node].")(f)


_operator_key = key_option(
    help="The operator's key file (the genesis' operator) [default: $GRENEX_KEY]."
)


@click.command("admit", cls=ClientCommand)
@click.option("--node", "node_id", required=True, help="The node to admit (its id).")
@click.option(
    "--node-key",
    "node_key_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The node's key file: its public key and certificate are made from it.",
)
@click.option("--key-text", default=None, help="The node's public key (instead of --node-key).")
@click.option(
    "--cert", default=None, help="The node's certificate, base64url DER (with --key-text)."
)
@_via_option
@_operator_key
@network_options
@_json_option
def admit_command(
    node_id: str,
    node_key_path: str | None,
    key_text: str | None,
    cert: str | None,
    via: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Admit a node as a learner (operator).  Give its key file (--node-key), or its public
    key and certificate (--key-text and --cert)."""
    if not is_name(node_id):
        raise _OneLineUsageError(f"--node {node_id!r} is not a name")
    if node_key_path is not None:
        if key_text is not None or cert is not None:
            raise _OneLineUsageError("give --node-key, or --key-text with --cert, not both")
        try:
            nk = read_key_file(node_key_path)
        except KeyFileError as e:
            raise _OneLineUsageError(f"--node-key: {e}") from None
        key_text, cert = nk.public_key, node_cert(nk, node_id)
    elif key_text is None or cert is None:
        raise _OneLineUsageError("give --node-key FILE, or --key-text KEY with --cert CERT")
    if not is_valid_key(key_text):
        raise _OneLineUsageError("--key-text is not a valid Ed25519 public key")
    der = b""
    with contextlib.suppress(ValueError):
        der = unb64url(cert)
    if not check_cert(der, key_text):
        raise _OneLineUsageError("--cert is not a valid self-signed certificate on --key-text")
    k = operator_key(cluster, key, "admit")

    async def go() -> CommandResult:
        async with make_client(grape, cluster, via, timeout, key=k) as c:
            assert key_text is not None and cert is not None
            return await c.admit(node_id, key_text, cert)

    report("admit", run_client(go, "admit"), as_json)


def _membership(
    what: str, node_id: str, via: str | None, key: SecretKey | None, **net: Any
) -> None:
    k = operator_key(net["cluster"], key, what)

    async def go() -> CommandResult:
        async with make_client(net["grape"], net["cluster"], via, net["timeout"], key=k) as c:
            method = c.promote if what == "promote" else c.remove
            return await method(node_id)

    report(what, run_client(go, what), net["as_json"])


@click.command("promote", cls=ClientCommand)
@click.option("--node", "node_id", required=True, help="The learner to make a voter.")
@_via_option
@_operator_key
@network_options
@_json_option
def promote_command(
    node_id: str,
    via: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """A learner becomes a voter (operator)."""
    _membership(
        "promote", node_id, via, key, grape=grape, cluster=cluster, timeout=timeout, as_json=as_json
    )


@click.command("remove", cls=ClientCommand)
@click.option("--node", "node_id", required=True, help="The member to remove.")
@_via_option
@_operator_key
@network_options
@_json_option
def remove_command(
    node_id: str,
    via: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """A member leaves the cluster (operator); its id is never used again."""
    _membership(
        "remove", node_id, via, key, grape=grape, cluster=cluster, timeout=timeout, as_json=as_json
    )
