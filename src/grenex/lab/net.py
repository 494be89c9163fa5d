"""The lab's network: one network namespace per host, joined by a bridge that lives in a
namespace of its own, and partitions made of silent per-destination drops.

Layout (``P`` is the run's unique prefix, ``glab-<pid>-<n>-``)::

    namespace P br:  bridge br0 (10.213.0.254/24)  ── the runner lives here (setns), so it
       │              reaches every host and no host's partition can hide one from it
       ├── veth v-n1 ── namespace P n1: eth0 10.213.0.1/24   (Grape, node n1, client of n1)
       ├── veth v-n2 ── namespace P n2: eth0 10.213.0.2/24
       └── …

The /24 exists only inside these namespaces: no default route anywhere, nothing attached to
the root namespace, so no packet can leave the lab.  Both ends of every veth are created
directly inside their namespaces, so two labs can run at once with the same addresses.

Partitions: ``tc`` is all this kernel offers (no iptables, nft, netem, act_gact), but HTB and
the ``blackhole`` qdisc are there.  Every host's ``eth0`` gets ``htb default 1`` with class
1:1 (everything) and class 1:2 whose leaf is ``blackhole``; ``block(a, b)`` adds a u32 filter
on ``a``'s ``eth0`` steering IP packets for ``b``'s address into 1:2.  So a cut is *silent*
(a connection attempt times out, exactly like a pulled cable or a dead host), per direction
(a one-way cut is one filter), and ARP still works.  ``heal`` deletes every filter.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["SUBNET", "LabError", "LabNet", "preflight", "setns_path"]

SUBNET: Final = "10.213.0"  # the lab's private /24, only inside the lab's namespaces
BRIDGE_IP: Final = f"{SUBNET}.254"
NS_ROOT: Final = "glab-"  # every namespace a lab creates starts with this
_CLONE_NEWNET: Final = 0x40000000


class LabError(RuntimeError):
    """The lab cannot run here, or a setup step failed (the message says which)."""


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 20.0) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"{' '.join(argv)}: {e}") from None
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[:500]}")
    return p.stdout


def preflight() -> None:
    """Raise :class:`LabError` saying what is missing: root, ``ip``, ``ip netns``, ``tc``."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, veths, tc and tmpfs mounts need it)")
    for tool in ("ip", "tc", "mount", "umount"):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` program (iproute2 / util-linux)")
    if not missing:
        probe = f"{NS_ROOT}probe-{os.getpid()}"
        try:
            _run(["ip", "netns", "add", probe])
        except LabError as e:
            missing.append(f"working `ip netns` ({e})")
        else:
            _run(["ip", "netns", "del", probe], check=False)
    if missing:
        raise LabError("the fault lab cannot run: it needs " + "; ".join(missing))


def setns_path(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (setns(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def list_lab_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(NS_ROOT)]


@dataclass
class LabNet:
    """The namespaces, bridge and veths of one lab run; see the module docstring."""

    prefix: str
    hosts: list[str]
    created: list[str] = field(default_factory=list)  # namespaces, in creation order
    blocked: set[tuple[str, str]] = field(default_factory=set)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}br"

    def ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def in_ns(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.created.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def setup(self) -> None:
        br = self.bridge_ns
        self._add_ns(br)
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", br, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])
        for host in self.hosts:
            ns = self.ns(host)
            self._add_ns(ns)
            # both ends created in place: nothing ever appears in the root namespace
            _run(
                [
                    "ip",
                    "-n",
                    br,
                    "link",
                    "add",
                    f"v-{host}",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                ]
            )
            _run(["ip", "-n", br, "link", "set", f"v-{host}", "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            tc = ["ip", "netns", "exec", ns, "tc"]
            _run(
                [*tc, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"]
            )
            for cls in ("1:1", "1:2"):
                _run(
                    [
                        *tc,
                        "class",
                        "add",
                        "dev",
                        "eth0",
                        "parent",
                        "1:",
                        "classid",
                        cls,
                        "htb",
                        "rate",
                        "10gbit",
                        "quantum",
                        "60000",
                    ]
                )
            _run(
                [*tc, "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "20:", "blackhole"]
            )

    # ------------------------------------------------------------------ partitions

    def block(self, src: str, dst: str) -> None:
        """Drop every IP packet ``src`` sends to ``dst`` (silently; one direction)."""
        if (src, dst) in self.blocked or src == dst:
            return
        prio = str(self.hosts.index(dst) + 1)
        _run(
            [
                "ip",
                "netns",
                "exec",
                self.ns(src),
                "tc",
                "filter",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                prio,
                "u32",
                "match",
                "ip",
                "dst",
                f"{self.ip(dst)}/32",
                "flowid",
                "1:2",
            ]
        )
        self.blocked.add((src, dst))

    def unblock(self, src: str, dst: str) -> None:
        if (src, dst) not in self.blocked:
            return
        prio = str(self.hosts.index(dst) + 1)
        _run(
            [
                "ip",
                "netns",
                "exec",
                self.ns(src),
                "tc",
                "filter",
                "del",
                "dev",
                "eth0",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                prio,
            ],
            check=False,
        )
        self.blocked.discard((src, dst))

    def cut(self, a: str, b: str) -> None:
        self.block(a, b)
        self.block(b, a)

    def isolate(self, host: str) -> None:
        for other in self.hosts:
            if other != host:
                self.cut(host, other)

    def split(self, side_a: Sequence[str], side_b: Sequence[str]) -> None:
        for a in side_a:
            for b in side_b:
                self.cut(a, b)

    def heal(self) -> None:
        for src, dst in sorted(self.blocked):
            self.unblock(src, dst)
        self.blocked.clear()

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> list[str]:
        """Delete every namespace this run created (and any left with its prefix); the
        errors, if any."""
        errors: list[str] = []
        names = list(dict.fromkeys([*reversed(self.created), *self._leftovers()]))
        for name in names:
            try:
                _run(["ip", "netns", "del", name])
            except LabError as e:
                errors.append(str(e))
        self.created.clear()
        return errors

    def _leftovers(self) -> list[str]:
        return [n for n in list_lab_namespaces() if n.startswith(self.prefix)]

    def pids_inside(self) -> list[int]:
        """PIDs of processes still inside this run's namespaces (``ip netns pids``)."""
        pids: list[int] = []
        for name in [*self.created, *self._leftovers()]:
            out = _run(["ip", "netns", "pids", name], check=False)
            pids += [int(x) for x in out.split() if x.isdigit()]
        return sorted(set(pids))
