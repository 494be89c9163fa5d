"""Where a node's CPU goes: py-spy samples of every node during a load point, split by phase.

``cluster_bench.py --profile DIR`` runs ``py-spy record --format raw`` on each node process for
the point and this module folds the collapsed stacks into phases.  A sample is counted in the
first phase (in the order below) whose marker appears anywhere in its stack, so a signature
check inside the apply counts as ``signature``, TLS inside an HTTP write as ``tls``.
py-spy samples with ``--gil``: only the thread holding the GIL, i.e. Python work and the C
work that keeps the GIL; C work that releases it (libsodium's signature check, part of the
socket and TLS work) is under-counted, so the split is of the interpreter's time, while the
benchmark's CPU figure from ``/proc`` is the whole.
py-spy is not a dependency: install it into the venv to use this (``.venv/bin/pip install
py-spy``); without it the benchmark says so and reports CPU only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (phase, markers): the first phase with a marker in the stack takes the sample
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("gc", ("(gc)", "gc_collect")),
    ("signature", ("nacl/", "verifying.py", "signer.py", "crypto_sign")),
    ("tls", ("ssl.py", "sslproto", "SSLObject", "_ssl")),
    ("engine", ("grenex/engine/",)),
    ("apply (decode, auth, replica)", ("grenex/replica/",)),
    ("consensus", ("grenex/consensus/",)),
    ("storage", ("grenex/storage/",)),
    ("peer codec", ("codec/peer.py", "codec/raft.py", "codec/stamp.py")),
    (
        "peer transport (streams, requests)",
        (
            "grenex/node/peers.py",
            "grenex/node/peer_api.py",
            "grenache/stream.py",
            "client_ws.py",
            "web_ws.py",
            "_websocket/",
        ),
    ),
    ("client api", ("grenex/node/client_api.py", "codec/api.py", "codec/envelope.py")),
    ("events", ("publisher.py", "grenache/ws.py")),
    ("http requests (client API, forwards)", ("aiohttp/", "grenache/")),
    ("driver", ("grenex/node/driving.py",)),
    ("asyncio", ("asyncio/", "uvloop")),
]


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    if here.exists():
        return str(here)
    return shutil.which("py-spy")


def start(pid: int, out: Path, duration_s: float) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(duration_s)))]
    cmd += ["--rate", "250", "--gil", "--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fold(path: Path) -> dict[str, float]:
    """Fractions of samples per phase (``other`` for the rest)."""
    counts: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        for phase, markers in PHASES:
            if any(m in stack for m in markers):
                counts[phase] += k
                break
        else:
            counts["other"] += k
    if not total:
        return {}
    return {p: c / total for p, c in counts.most_common()}
