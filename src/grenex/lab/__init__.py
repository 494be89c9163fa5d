"""The fault lab: real ``grenex node`` processes on separate network stacks under real faults.

Each host is a network namespace with its own Grape and node, joined by a bridge in a
namespace of its own (:mod:`grenex.lab.net`); seeded nemeses partition, pause, kill, wipe and
fill disks (:mod:`grenex.lab.nemesis`); clients in the hosts' namespaces record a history
(:mod:`grenex.lab.workload`) that the checker holds against the committed log and a fresh
replay (:mod:`grenex.lab.checker`).  ``grenex lab run|soak|clean`` (:mod:`grenex.lab.cli`);
docs/lab.md.  Needs root and iproute2; nodes are only ever started as processes.
"""
