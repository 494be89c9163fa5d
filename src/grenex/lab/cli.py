"""``grenex lab``: run the fault lab (``run``), soak it (``soak``), clean up after a crash
(``clean``), list its nemeses (``nemeses``).  See docs/lab.md."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from grenex.lab import nemesis as nem
from grenex.lab.net import LabError, list_lab_namespaces, preflight

__all__ = ["lab_group"]

DEFAULT_WORKDIR = Path(os.environ.get("GRENEX_LAB_DIR", "/tmp/grenex-lab"))


@click.group("lab")
def lab_group() -> None:
    """The fault lab: nodes on separate network stacks under seeded faults (needs root)."""


def _code_dir(code: str | None, workdir: Path, patch: Path | None = None) -> Path | None:
    if not code:
        if patch is not None:
            raise click.UsageError("--patch needs --code")
        return None
    import hashlib

    from grenex.lab.procs import code_snapshot

    repo = Path(__file__).resolve().parents[3]
    rev = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if patch is None:
        return code_snapshot(repo, rev, workdir / f"code-{rev}")
    diff = patch.read_bytes()
    dest = workdir / f"code-{rev}-{hashlib.sha256(diff).hexdigest()[:8]}"
    fresh = not (dest / "src").is_dir()
    src = code_snapshot(repo, rev, dest)
    if fresh:
        p = subprocess.run(
            ["patch", "-p1", "-d", str(dest)], input=diff, capture_output=True, check=False
        )
        if p.returncode != 0:
            raise click.ClickException(f"--patch does not apply: {p.stdout.decode()[-300:]}")
    return src


def _summary_line(r: dict[str, Any]) -> str:
    v = r.get("violations") or []
    ops = r.get("ops", {})
    state = (
        "ABORTED " + str(r["aborted"])
        if r.get("aborted")
        else (f"{len(v)} VIOLATIONS" if v else "ok")
    )
    return (
        f"seed {r.get('seed')}: {state}; {ops.get('total', 0)} ops "
        f"({ops.get('ok', 0)} ok, {ops.get('unknown', 0)} unknown, {ops.get('failed', 0)} failed)"
        f", faults {[f['name'] for f in r.get('faults', [])]}, {r.get('duration_s')} s"
    )


@lab_group.command("run")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--nemesis",
    "nemeses",
    default="",
    help="Comma-separated nemeses in order (see `grenex lab nemeses`); default: "
    "--faults drawn from every nemesis by the seed.",
)
@click.option("--faults", type=int, default=6, show_default=True)
@click.option("--nodes", type=int, default=3, show_default=True)
@click.option("--rate", type=float, default=8.0, show_default=True, help="ops/s per client")
@click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR)
@click.option(
    "--code",
    envvar="GRENEX_LAB_CODE",
    default=None,
    help="Run every child process from this git revision (or $GRENEX_LAB_CODE).",
)
@click.option(
    "--patch",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    envvar="GRENEX_LAB_PATCH",
    help="A diff applied (patch -p1) to the --code snapshot: measure a fix before it lands.",
)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--grape-bootstrap", type=click.Choice(["mesh", "ring"]), default="mesh")
@click.option("--keep", is_flag=True, help="Keep the run directory even when clean.")
@click.option("--json", "as_json", is_flag=True)
def run_command(
    seed: int,
    nemeses: str,
    faults: int,
    nodes: int,
    rate: float,
    workdir: Path,
    code: str | None,
    patch: Path | None,
    report: Path | None,
    grape_bootstrap: str,
    keep: bool,
    as_json: bool,
) -> None:
    """One run: set up, trade under the seed's faults, heal, check, tear down.

    Exit 0 when the checker found nothing, 1 on violations or an error, 2 on misuse.
    """
    from grenex.lab.runner import RunConfig, run_lab

    names = [n for n in nemeses.split(",") if n] or nem.schedule(seed, faults)
    unknown = [n for n in names if n not in nem.NEMESES]
    if unknown:
        raise click.UsageError(f"unknown nemesis {unknown}; known: {', '.join(nem.NEMESES)}")
    if nodes < 3:
        raise click.UsageError("--nodes must be at least 3")
    try:
        preflight()
    except LabError as e:
        click.echo(f"grenex lab: {e}", err=True)
        sys.exit(1)
    cfg = RunConfig(
        seed=seed,
        nemeses=names,
        nodes=nodes,
        rate=rate,
        workdir=workdir,
        code_dir=_code_dir(code, workdir, patch),
        grape_bootstrap=grape_bootstrap,
        keep=keep,
    )
    try:
        r = run_lab(cfg)
    except KeyboardInterrupt:
        click.echo("grenex lab: interrupted; everything it started was removed", err=True)
        sys.exit(130)
    except LabError as e:
        click.echo(f"grenex lab: {e}", err=True)
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps({"seed": seed, "nemeses": names, "aborted": str(e)}))
        sys.exit(1)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(r, indent=1, default=str))
    click.echo(json.dumps(r, default=str) if as_json else _summary_line(r))
    if r.get("violations") and not as_json:
        for cat, msg in r["violations"][:20]:
            click.echo(f"  [{cat}] {msg[:300]}")
        click.echo(f"  reproduce: grenex lab run --seed {seed} --nemesis {','.join(names)}")
    sys.exit(1 if r.get("violations") or r.get("aborted") else 0)


@lab_group.command("soak")
@click.option("--seeds", type=int, default=None, help="Run this many seeds.")
@click.option("--minutes", type=float, default=None, help="Run seeds until this many minutes.")
@click.option("--first-seed", type=int, default=None, help="Default: drawn from the clock.")
@click.option("--faults", type=int, default=8, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR)
@click.option("--code", default=None, help="Run every seed from this git revision.")
@click.option(
    "--patch",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A diff applied to the --code snapshot (see `run --patch`).",
)
def soak_command(
    seeds: int | None,
    minutes: float | None,
    first_seed: int | None,
    faults: int,
    report: Path,
    workdir: Path,
    code: str | None,
    patch: Path | None,
) -> None:
    """Seed after seed (each one a separate ``grenex lab run`` process), until --seeds or
    --minutes; the report (JSON, rewritten after every seed) lists the schedules run, the
    faults injected, the operations, the recoveries and every violation with its seed."""
    if (seeds is None) == (minutes is None):
        raise click.UsageError("give exactly one of --seeds N or --minutes T")
    try:
        preflight()
    except LabError as e:
        click.echo(f"grenex lab: {e}", err=True)
        sys.exit(1)
    code_dir = _code_dir(code, workdir, patch)
    start = time.time()
    seed = first_seed if first_seed is not None else random.Random().randrange(1, 10**6)
    runs: list[dict[str, Any]] = []
    env = dict(os.environ)
    env.pop("GRENEX_LAB_CODE", None)  # the children run from code_dir already
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir)
    i = 0
    while True:
        if seeds is not None and i >= seeds:
            break
        if minutes is not None and time.time() - start >= minutes * 60:
            break
        one = workdir / "soak-runs" / f"seed{seed}.json"
        one.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "grenex", "lab", "run", "--seed", str(seed)]
        argv += ["--faults", str(faults), "--workdir", str(workdir), "--report", str(one)]
        t0 = time.time()
        try:
            p = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=1800, check=False
            )
            out, code_ = p.stdout.strip(), p.returncode
        except subprocess.TimeoutExpired:
            out, code_ = "timed out after 1800 s", -1
        r: dict[str, Any] = {"seed": seed, "exit": code_, "wall_s": round(time.time() - t0, 1)}
        with contextlib.suppress(OSError, ValueError):
            r.update(json.loads(one.read_text()))
        if code_ not in (0, 1) or (code_ == 1 and not r.get("violations")):
            r.setdefault("aborted", out[-500:] or f"exit {code_}")
        runs.append(r)
        click.echo(_summary_line(r), err=False)
        _write_soak_report(report, runs, start)
        seed += 1
        i += 1
    _write_soak_report(report, runs, start)
    bad = [r["seed"] for r in runs if r.get("violations")]
    sys.exit(1 if bad else 0)


def _write_soak_report(path: Path, runs: list[dict[str, Any]], start: float) -> None:
    faults: dict[str, int] = {}
    recov: dict[str, list[float]] = {}
    unavail: dict[str, list[float]] = {}
    ops = {"total": 0, "ok": 0, "unknown": 0, "failed": 0}
    for r in runs:
        for f in r.get("faults", []):
            faults[f["name"]] = faults.get(f["name"], 0) + 1
        for rc in r.get("recovery", []):
            if rc.get("recover_s") is not None:
                recov.setdefault(rc["name"], []).append(rc["recover_s"])
            if rc.get("unavailable_s") is not None:
                unavail.setdefault(rc["name"], []).append(rc["unavailable_s"])
        for k in ops:
            ops[k] += int(r.get("ops", {}).get(k, 0))

    def stats(xs: list[float]) -> dict[str, float]:
        s = sorted(xs)
        return {"n": len(s), "p50": s[len(s) // 2], "max": s[-1]}

    out = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start)),
        "elapsed_min": round((time.time() - start) / 60, 1),
        "runs": len(runs),
        "clean_runs": sum(1 for r in runs if not r.get("violations") and not r.get("aborted")),
        "violating_seeds": [
            {"seed": r["seed"], "nemeses": r.get("nemeses"), "violations": r["violations"][:5]}
            for r in runs
            if r.get("violations")
        ],
        "aborted_seeds": [
            {"seed": r["seed"], "why": str(r.get("aborted"))[:300]}
            for r in runs
            if r.get("aborted")
        ],
        "faults_injected": faults,
        "operations": ops,
        "recover_s": {k: stats(v) for k, v in sorted(recov.items())},
        "unavailable_s": {k: stats(v) for k, v in sorted(unavail.items())},
        "seeds": [
            {
                "seed": r["seed"],
                "nemeses": r.get("nemeses"),
                "violations": len(r.get("violations") or []),
                "ops": r.get("ops", {}).get("total"),
                "wall_s": r.get("wall_s"),
            }
            for r in runs
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    tmp.replace(path)


@lab_group.command("clean")
def clean_command() -> None:
    """Remove namespaces left by lab runs whose runner process is gone (after a kill -9)."""
    try:
        preflight()
    except LabError as e:
        click.echo(f"grenex lab: {e}", err=True)
        sys.exit(1)
    from grenex.lab.net import _run

    removed = []
    for name in list_lab_namespaces():
        parts = name.split("-")
        if len(parts) > 1 and parts[1].isdigit() and Path(f"/proc/{parts[1]}").exists():
            continue  # its runner still runs
        out = _run(["ip", "netns", "pids", name], check=False)
        for pid in [int(x) for x in out.split() if x.isdigit()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        _run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    click.echo(f"removed {len(removed)} namespaces" + (f": {removed}" if removed else ""))


@lab_group.command("nemeses")
def nemeses_command() -> None:
    """List the nemeses (docs/lab.md says what each does)."""
    for name in nem.NEMESES:
        click.echo(name)
