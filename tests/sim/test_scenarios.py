"""Scripted simulator scenarios (grenex.sim.scenarios) on the real replica and consensus code.

Proves, for the interleaving of issue 10 item 9 (c cut off, commands acknowledged by a and b,
a and b crash with b's disk lost, b restarts empty, c comes back): with the consensus rule b
never votes for c, nobody leads while a is down, and once a is back b is re-admitted (demoted,
caught up, promoted) with every acknowledged command kept; without the rule (b bootstraps
anew, the old node behaviour) the checker catches the lost commands.  Deterministic: the same
run twice gives the same log.  A member restarted with a stale configuration, whose leader is
now a node added after it, catches up once a member it knows vouches for the configuration (and
never without).

And SPEC §8 on the real node path (receiving-node checks, gateway, driver, replica; a quiet
simulated cluster driven by scripted clients, every entry held to the model): a lost reply's
retries — the same bytes, to any node — are answered from the window with the first outcome,
and a copy appended to the log anyway runs nothing; an account rotates its key and trades on,
while envelopes signed by the old key (new ones, and retries of ones that ran) are refused
``bad_signature``; an account with 70 envelopes in flight has its oldest nonces evicted
(``stale_nonce`` on retry, never run twice) while another account's retries still get their
first outcome.
"""

from __future__ import annotations

import pytest

from grenex.sim.checker import SimFailure
from grenex.sim.scenarios import (
    key_rotation,
    lost_disk_voter,
    lost_replies,
    nonce_window_eviction,
    stale_member,
)


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


def test_a_member_with_a_stale_configuration_catches_up_on_a_members_word() -> None:
    """c comes back knowing a, b, c while e (added meanwhile) leads: it asks a member it knows,
    steps e's messages and catches up (same log, same state, e in its configuration)."""
    res = stale_member(vouching=True)
    assert res.acknowledged == 4
    assert any("c takes" in line and "a,b,c,e" in line for line in res.log)
    assert res.log[-1].endswith("voters a,b,c,e")


def test_without_vouching_the_stale_member_never_catches_up() -> None:
    with pytest.raises(SimFailure, match="c catches up"):
        stale_member(vouching=False)


# -- SPEC §8 on the real node path (gateway, driver, replica) ------------------------------------


def test_lost_replies_are_answered_from_the_window_with_the_first_outcome() -> None:
    res = lost_replies()
    (first,) = [d for lab, k, d in res.answers if k == "index"]
    for label in ("retry at another follower", "retry at the leader", "retry where it was sent"):
        assert res.kinds(label) == [("dup", first)]  # before the log: the first outcome's seq
    assert res.kinds("the next order") == [("ok", ["Accepted", "Resting"])]
    # the copy appended anyway ran nothing (the checker holds its duplicate outcome)
    assert res.executed == 5  # 2 markets, register, o1, o2: nothing twice


def test_a_rotated_key_trades_on_and_the_old_key_signs_nothing() -> None:
    res = key_rotation()
    assert res.kinds("rotate") == [("ok", ["KeyRotated"])]
    assert res.kinds("o2 with the new key") == [("ok", ["Accepted", "Resting"])]
    assert res.kinds("cancel o2 with the new key") == [("ok", ["Cancelled"])]
    for label in (
        "o3 with the old key",
        "o3 with the old key, at the leader",
        "o1 again after the rotation",  # ran before: the signer is checked before the window
        "the rotation again",
    ):
        assert res.kinds(label) == [("invalid", "bad_signature")], label


def test_more_than_64_in_flight_evicts_only_that_accounts_oldest_nonces() -> None:
    res = nonce_window_eviction()
    burst = [res.kinds(f"b{i}")[0] for i in range(70)]
    assert all(k == "ok" for k, _ in burst)  # 70 in flight, each ran once
    assert res.kinds("b0 again") == [("invalid", "stale_nonce")]  # may have run: ask `order`
    assert res.kinds("b69 again")[0][0] == "dup"
    assert res.kinds("w1 again")[0][0] == "dup" and res.kinds("w1 once more")[0][0] == "dup"
    late = res.kinds("late burst")
    assert len(late) == 69 and all(k == "ok" for k, _ in late)
    assert res.kinds("l0 after 69 higher nonces") == [("invalid", "stale_nonce")]
    assert res.stale >= 3  # b0 again, l0 before the log and at apply


def test_the_trust_scenarios_are_deterministic() -> None:
    assert key_rotation().answers == key_rotation().answers
