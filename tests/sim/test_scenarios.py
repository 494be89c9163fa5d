"""Scripted simulator scenarios (grenex.sim.scenarios) on the real replica and consensus code.

Proves, for the interleaving of issue 10 item 9 (c cut off, commands acknowledged by a and b,
a and b crash with b's disk lost, b restarts empty, c comes back): with the consensus rule b
never votes for c, nobody leads while a is down, and once a is back b is re-admitted (demoted,
caught up, promoted) with every acknowledged command kept; without the rule (b bootstraps
anew, the old node behaviour) the checker catches the lost commands.  Deterministic: the same
run twice gives the same log.
"""

from __future__ import annotations

import pytest

from grenex.sim.checker import SimFailure
from grenex.sim.scenarios import lost_disk_voter


def test_lost_disk_voter_with_the_rule_keeps_every_acknowledged_command() -> None:
    res = lost_disk_voter(rejoin_rule=True)
    assert res.acknowledged == 6
    assert res.leaders_while_a_down == []
    assert res.readmitted
    assert any("demoted to learner" in line for line in res.log)
    assert any("promoted again" in line for line in res.log)


def test_lost_disk_voter_without_the_rule_loses_acknowledged_commands() -> None:
    with pytest.raises(SimFailure, match=r"applied 6|acknowledged command lost|without"):
        lost_disk_voter(rejoin_rule=False)


def test_the_scenario_is_deterministic() -> None:
    assert lost_disk_voter().log == lost_disk_voter().log
