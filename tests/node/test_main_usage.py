"""``grenex node``: a bad genesis or key file is a usage error naming the option (exit 2),
and nothing starts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from grenex.codec.signer import Keyring
from grenex.node.main import node_command


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(node_command, ["--id", "n1", "--memory", *args])
    return result.exit_code, result.output


def test_a_bad_genesis_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "genesis.json"
    bad.write_text('{"bad": 1}')
    code, out = _run("--genesis", str(bad))
    assert code == 2 and "--genesis: genesis has an unknown field 'bad'" in out


def test_a_bad_key_file_is_named(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(Keyring("t").genesis("main", ["n1"]))
    key = tmp_path / "n1.key"
    key.write_text("x\n")
    code, out = _run("--genesis", str(genesis), "--key", str(key))
    assert code == 2 and "--key: " in out and "43 characters" in out


def test_a_negative_commit_notice_delay_is_refused(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(Keyring("t").genesis("main", ["n1"]))
    code, out = _run("--genesis", str(genesis), "--commit-notice-delay-ms", "-1")
    assert code == 2 and "--commit-notice-delay-ms" in out
