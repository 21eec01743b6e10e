"""The app-wide Palette pace (``shared.state.pace``) against Azurite's Table service.

Two ``SharedPace`` objects on one table stand for two instances of the app. Their clocks are one
frozen fake clock, so the slots they hand out are exact numbers, not wall times: whichever instance
and thread takes a slot, the slots of a prefix form one schedule, ``burst`` at once and then one
per interval, with no slot given twice.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from shared.state.pace import SharedPace

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from devstack.stack import Stack

NOW = 1_800_000_000.0


class _Frozen:
    """A clock that stands still and a sleep that only records what it was asked to wait."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def clock(self) -> float:
        return NOW

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def _table(stack: Stack, name: str, **kwargs: object) -> TableClient:
    from azure.data.tables import TableClient

    return TableClient.from_connection_string(stack.settings["AzureWebJobsStorage"], table_name=name, **kwargs)


def _settled(pace: SharedPace, key: str) -> float:
    """The slot ``pace`` took ahead for ``key``, once its background take is done."""
    for _ in range(200):
        slot = pace.taken_ahead(key)
        if slot is not None:
            return slot
        threading.Event().wait(0.01)
    raise AssertionError(f"no slot was taken ahead for {key}")


def test_two_instances_share_one_schedule_per_prefix(stack: Stack) -> None:
    name = "pace" + uuid.uuid4().hex[:8]
    time = _Frozen()
    instances = [SharedPace(_table(stack, name), 10, 3, clock=time.clock, sleep=time.sleep) for _ in range(2)]
    key = "/v1/cloudaccounts"
    try:
        def take(n: int) -> float:
            return instances[n % 2].acquire(key)

        with ThreadPoolExecutor(8) as pool:
            waits = list(pool.map(take, range(24)))
        ahead = [_settled(pace, key) - NOW for pace in instances]
        # Every slot of the schedule went to one caller or was kept ahead by one instance: the
        # burst of three (0.2 and 0.1 s in the past, and now), then one every 0.1 s, none twice.
        used = sorted(waits)
        assert used[:3] == [0.0, 0.0, 0.0] or set(ahead) & {-0.2, -0.1, 0.0}
        handed = sorted([w for w in used if w > 0] + [a for a in ahead if a > 0])
        assert handed == pytest.approx([0.1 * k for k in range(1, len(handed) + 1)], abs=1e-4)
        assert len(handed) == 24 + 2 - 3
        assert sorted(time.slept) == pytest.approx([w for w in used if w > 0], abs=1e-4)
        # Another prefix has a schedule of its own.
        assert instances[1].acquire("/v1/users") == 0.0
    finally:
        for pace in instances:
            pace.close()


def test_the_next_call_uses_the_slot_taken_ahead_and_a_new_instance_never_gets_it(stack: Stack) -> None:
    name = "pace" + uuid.uuid4().hex[:8]
    time = _Frozen()
    key = "/v1/apiKeys"
    first = SharedPace(_table(stack, name), 5, 1, clock=time.clock, sleep=time.sleep)
    assert first.acquire(key) == 0.0
    assert _settled(first, key) == pytest.approx(NOW + 0.2)
    assert first.acquire(key) == pytest.approx(0.2)  # the slot taken ahead, no round trip first
    assert _settled(first, key) == pytest.approx(NOW + 0.4)
    first.close()
    # A fresh process reads where the schedule stands (the slot the first kept is not given again).
    later = SharedPace(_table(stack, name), 5, 1, clock=time.clock, sleep=time.sleep)
    assert later.acquire(key) == pytest.approx(0.6)
    later.close()


def test_a_slot_taken_ahead_too_long_ago_is_not_used(stack: Stack) -> None:
    from shared.state.pace import MAX_LATE_SECONDS

    name = "pace" + uuid.uuid4().hex[:8]
    now = [NOW]
    time = _Frozen()
    pace = SharedPace(_table(stack, name), 5, 1, clock=lambda: now[0], sleep=time.sleep)
    key = "/v1/users"
    pace.acquire(key)
    kept = _settled(pace, key)
    now[0] = kept + MAX_LATE_SECONDS + 1
    pace.acquire(key)
    assert pace.taken_ahead(key) != kept  # dropped; a slot was taken for this call instead
    assert _settled(pace, key) > now[0]
    pace.close()


def test_an_unreachable_table_lets_the_call_go_ahead_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from azure.data.tables import TableClient

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={'A' * 88};"
                  f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    time = _Frozen()
    pace = SharedPace(TableClient.from_connection_string(connection, table_name="ratelimits", retry_total=0),
                      10, 1, clock=time.clock, sleep=time.sleep)
    with caplog.at_level(logging.WARNING, logger="shared.state.pace"):
        assert pace.acquire("/v1/cloudaccounts") == 0.0
    assert "goes ahead unpaced" in caplog.text and time.slept == []
    pace.close()


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_pace_needs_a_positive_rate_and_burst(stack: Stack, rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        SharedPace(_table(stack, "ratelimits"), rate, burst)


class _Moving:
    """A clock that moves only when a caller sleeps (so background waits are exact numbers)."""

    def __init__(self) -> None:
        self.now = NOW

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _background_slots(pace: SharedPace, key: str, clock: _Moving, count: int) -> list[float]:
    """When each of ``count`` background calls went out (one after another)."""
    from shared.state.pace import background_work

    sent = []
    with background_work():
        for _ in range(count):
            pace.acquire(key)
            sent.append(round(clock.now - NOW, 3))
    return sent


def test_background_work_alone_takes_the_whole_rate_but_leaves_the_burst(stack: Stack) -> None:
    clock = _Moving()
    pace = SharedPace(_table(stack, "pace" + uuid.uuid4().hex[:8]), 5, 3, background_share=0.5,
                      clock=clock.clock, sleep=clock.sleep)
    key = "/v1/cloudaccounts"
    # An idle schedule: background goes at once, then once per interval (0.2 s), never using the burst.
    assert _background_slots(pace, key, clock, 4) == [0.0, 0.2, 0.4, 0.6]
    # An interactive caller arriving now still finds burst - 1 calls that go out at once.
    waits = [pace.acquire(key) for _ in range(2)]
    assert waits == [0.0, 0.0]
    pace.close()


def test_background_work_keeps_to_its_share_while_interactive_work_is_about(stack: Stack) -> None:
    clock = _Moving()
    pace = SharedPace(_table(stack, "pace" + uuid.uuid4().hex[:8]), 5, 1, background_share=0.25,
                      clock=clock.clock, sleep=clock.sleep)
    key = "/v1/cloudaccounts"
    pace.acquire(key)  # interactive work, just now
    sent = _background_slots(pace, key, clock, 3)
    # A quarter of 5/s: one background call each 0.8 s while interactive work was seen in the last 10 s.
    assert [round(b - a, 3) for a, b in itertools.pairwise(sent)] == [0.8, 0.8]
    clock.now += 30  # interactive work has gone quiet: all of the rate again
    sent = _background_slots(pace, key, clock, 3)
    assert [round(b - a, 3) for a, b in itertools.pairwise(sent)] == [0.2, 0.2]
    pace.close()


def test_a_slow_down_seen_by_one_instance_slows_every_instance_until_it_ends(stack: Stack) -> None:
    name = "pace" + uuid.uuid4().hex[:8]
    clock = _Moving()
    one = SharedPace(_table(stack, name), 10, 1, clock=clock.clock, sleep=clock.sleep)
    other = SharedPace(_table(stack, name), 10, 1, clock=clock.clock, sleep=clock.sleep)
    key = "graph-writes"
    one.slow_down(key, 0.25, 5.0)
    from shared.state.pace import background_work

    with background_work():  # no slot taken ahead: each wait is the schedule's
        other.acquire(key)
        assert other.acquire(key) == pytest.approx(0.4)  # a quarter of 10/s
        clock.now += 6
        other.acquire(key)
        assert other.acquire(key) == pytest.approx(0.1)
    one.close()
    other.close()
