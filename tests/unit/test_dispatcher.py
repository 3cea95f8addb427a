"""Unit tests for scheduler.dispatcher: a real thread driven by a fake clock.

The clock only moves when a test moves it, so "due" is decided by the test. The dispatcher
sleeps in real seconds for the fake delay (capped at a minute), so after moving the clock a
test wakes it with ``set_active(True)`` (which notifies its condition variable). Assertions
wait for a condition with a deadline; "X did not fire" is established with a barrier: an
entry that must fire *after* X if X were still due (the loop fires in due order, one batch
per wake-up).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from scheduler.dispatcher import DEFER, Dispatcher
from tests.helpers import wait_until

T0 = 1_000.0
DEADLINE = 5.0


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The fire callback: records (task_id, due); ``plan`` maps task ids to a function of due
    returning the next due time (or raising)."""

    def __init__(self):
        self.fired: list[tuple[str, float]] = []
        self.plan: dict = {}
        self._lock = threading.Lock()

    def __call__(self, task_id: str, due: float):
        with self._lock:
            self.fired.append((task_id, due))
        step = self.plan.get(task_id)
        return step(due) if step else None

    def snapshot(self) -> list[tuple[str, float]]:
        with self._lock:
            return list(self.fired)

    def wait_for(self, count: int) -> list[tuple[str, float]]:
        wait_until(lambda: len(self.snapshot()) >= count, timeout=DEADLINE,
                   message=f"{count} fires (got {self.snapshot()})")
        return self.snapshot()

    def wait_fired(self, task_id: str) -> list[tuple[str, float]]:
        wait_until(lambda: any(t == task_id for t, _ in self.snapshot()), timeout=DEADLINE,
                   message=f"{task_id} to fire (got {self.snapshot()})")
        return self.snapshot()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def dispatcher(clock, recorder):
    d = Dispatcher(clock=clock)
    d.open(recorder)
    yield d
    d.close(2)
    assert not d._thread.is_alive(), "dispatcher thread still running after close()"


def test_does_not_fire_while_inactive_and_fires_once_active(dispatcher, recorder):
    dispatcher.schedule("a", T0 - 10)
    dispatcher.schedule("b", T0 - 5)
    # Negative check: nothing to synchronise on while inactive, so give the thread a moment.
    time.sleep(0.1)
    assert recorder.snapshot() == []
    assert dispatcher.due("a") == T0 - 10
    dispatcher.set_active(True)
    assert recorder.wait_for(2) == [("a", T0 - 10), ("b", T0 - 5)]
    assert dispatcher.due("a") is None and dispatcher.due("b") is None


def test_due_exactly_now_fires(dispatcher, recorder):
    dispatcher.set_active(True)
    dispatcher.schedule("now", T0)
    assert recorder.wait_for(1) == [("now", T0)]


def test_fires_in_due_order(dispatcher, recorder):
    for task_id, due in [("c", T0 - 1), ("a", T0 - 30), ("d", T0), ("b", T0 - 20)]:
        dispatcher.schedule(task_id, due)
    dispatcher.set_active(True)
    assert recorder.wait_for(4) == [("a", T0 - 30), ("b", T0 - 20), ("c", T0 - 1), ("d", T0)]


def test_future_entries_wait_until_the_clock_reaches_them(dispatcher, recorder, clock):
    dispatcher.schedule("future", T0 + 100)
    dispatcher.schedule("barrier", T0 - 1)
    dispatcher.set_active(True)
    recorder.wait_fired("barrier")
    assert recorder.snapshot() == [("barrier", T0 - 1)]
    assert dispatcher.due("future") == T0 + 100

    clock.now = T0 + 99.999
    dispatcher.schedule("barrier2", T0 - 1)  # the new heap top: wakes the thread
    recorder.wait_fired("barrier2")
    assert ("future", T0 + 100) not in recorder.snapshot()

    clock.now = T0 + 100
    dispatcher.set_active(True)  # wake it to look at the clock again
    assert recorder.wait_for(3)[-1] == ("future", T0 + 100)


def test_deactivating_stops_firing_but_keeps_due_times(dispatcher, recorder, clock):
    dispatcher.set_active(True)
    dispatcher.schedule("a", T0 - 1)
    recorder.wait_fired("a")
    dispatcher.set_active(False)
    dispatcher.schedule("b", T0 - 1)
    time.sleep(0.1)  # negative check, see test_does_not_fire_while_inactive...
    assert recorder.snapshot() == [("a", T0 - 1)]
    assert dispatcher.due("b") == T0 - 1
    dispatcher.set_active(True)
    assert recorder.wait_for(2)[-1] == ("b", T0 - 1)


def test_rescheduling_supersedes_the_old_entry(dispatcher, recorder):
    dispatcher.schedule("a", T0 - 50)
    dispatcher.schedule("a", T0 - 20)        # replaces T0 - 50
    dispatcher.schedule("moved", T0 - 40)
    dispatcher.schedule("moved", T0 + 1000)  # moved into the future
    dispatcher.schedule("barrier", T0 - 1)
    dispatcher.set_active(True)
    recorder.wait_fired("barrier")
    assert recorder.snapshot() == [("a", T0 - 20), ("barrier", T0 - 1)]
    assert dispatcher.due("moved") == T0 + 1000


def test_schedule_none_cancels(dispatcher, recorder):
    dispatcher.schedule("gone", T0 - 30)
    dispatcher.schedule("gone", None)
    dispatcher.schedule("never", None)  # cancelling an unknown task is harmless
    dispatcher.schedule("barrier", T0 - 1)
    dispatcher.set_active(True)
    recorder.wait_fired("barrier")
    assert recorder.snapshot() == [("barrier", T0 - 1)]
    assert dispatcher.due("gone") is None


def test_callback_return_value_reschedules(dispatcher, recorder, clock):
    clock.now = 1000.0
    recorder.plan["a"] = lambda due: due + 100 if due < 500 else None
    recorder.plan["b"] = lambda due: 5000.0  # the future: stays scheduled
    dispatcher.schedule("a", 100.0)
    dispatcher.schedule("b", 50.0)
    dispatcher.set_active(True)
    fired = recorder.wait_for(6)
    assert [f for f in fired if f[0] == "a"] == [("a", t) for t in (100.0, 200.0, 300.0, 400.0, 500.0)]
    assert [f for f in fired if f[0] == "b"] == [("b", 50.0)]
    assert dispatcher.due("a") is None
    assert dispatcher.due("b") == 5000.0

    clock.now = 5000.0
    dispatcher.set_active(True)
    assert recorder.wait_for(7)[-1] == ("b", 5000.0)


def test_schedule_during_the_callback_wins_over_its_return_value(dispatcher, recorder):
    def reschedule_inside(due):
        dispatcher.schedule("a", T0 + 777)  # e.g. an update while the slot fires
        return T0 + 60

    recorder.plan["a"] = reschedule_inside
    dispatcher.schedule("a", T0 - 1)
    dispatcher.schedule("barrier", T0 - 0.5)
    dispatcher.set_active(True)
    recorder.wait_fired("barrier")
    assert dispatcher.due("a") == T0 + 777


def test_cancel_during_the_callback_is_not_undone(dispatcher, recorder):
    entered, release = threading.Event(), threading.Event()

    def slow(due):
        entered.set()
        assert release.wait(DEADLINE)
        return T0 + 60

    recorder.plan["a"] = slow
    dispatcher.schedule("a", T0 - 1)
    dispatcher.set_active(True)
    assert entered.wait(DEADLINE)
    dispatcher.schedule("a", None)  # e.g. the task is removed or paused meanwhile
    release.set()
    dispatcher.schedule("barrier", T0 - 1)  # fires only after the loop handled a's return
    recorder.wait_fired("barrier")
    assert dispatcher.due("a") is None


def test_an_exception_in_the_callback_is_logged_and_the_loop_goes_on(dispatcher, recorder, clock,
                                                                     caplog):
    def boom(due):
        raise RuntimeError("kaboom")

    recorder.plan["bad"] = boom
    dispatcher.schedule("bad", T0 - 10)
    dispatcher.schedule("good", T0 - 5)
    with caplog.at_level(logging.ERROR, logger="scheduler.dispatcher"):
        dispatcher.set_active(True)
        assert recorder.wait_for(2) == [("bad", T0 - 10), ("good", T0 - 5)]
        logged = lambda: [r for r in caplog.records if r.name == "scheduler.dispatcher"]  # noqa: E731
        wait_until(logged, timeout=DEADLINE, message="the exception to be logged")
    [record] = logged()
    assert record.levelno == logging.ERROR and "'bad'" in record.getMessage()
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)
    assert dispatcher.due("bad") == T0 - 10  # the failed slot stays planned, for a retry

    # the thread is still alive and serving later entries
    dispatcher.schedule("later", T0)
    assert recorder.wait_for(3)[-1] == ("later", T0)


def test_a_failed_slot_is_retried_after_a_growing_back_off(dispatcher, recorder, clock, caplog):
    outcomes = iter([RuntimeError("store down"), RuntimeError("still down"), T0 + 100,
                     RuntimeError("down again"), None])

    def flaky(due):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    recorder.plan["a"] = flaky
    dispatcher.schedule("a", T0 - 10)
    dispatcher.set_active(True)
    recorder.wait_for(1)
    wait_until(lambda: dispatcher.due("a") == T0 - 10, timeout=DEADLINE,
               message="the retry to be planned")

    def fires_of_a():
        return [f for f in recorder.snapshot() if f[0] == "a"]

    def move_and_check(now, barrier):
        """Move the clock, then wait for a barrier slot fired after anything due by now."""
        clock.now = now
        dispatcher.schedule(barrier, T0 - 100)
        recorder.wait_fired(barrier)

    # The first retry waits RETRY_FIRST (1 s) from the failure; the slot is the same.
    move_and_check(T0 + 0.999, "b1")
    assert fires_of_a() == [("a", T0 - 10)]
    move_and_check(T0 + 1, "b2")
    wait_until(lambda: len(fires_of_a()) == 2, timeout=DEADLINE, message="the first retry")
    assert fires_of_a() == [("a", T0 - 10)] * 2
    # It failed again: the next try is 2 s later, then it succeeds and plans its next slot.
    move_and_check(T0 + 2.999, "b3")
    assert len(fires_of_a()) == 2
    move_and_check(T0 + 3, "b4")
    wait_until(lambda: dispatcher.due("a") == T0 + 100, timeout=DEADLINE,
               message="the next slot after the successful retry")
    assert fires_of_a() == [("a", T0 - 10)] * 3

    # Success resets the back-off: a new failure is retried after 1 s again.
    move_and_check(T0 + 100, "b5")
    wait_until(lambda: len(fires_of_a()) == 4, timeout=DEADLINE, message="the next slot")
    wait_until(lambda: dispatcher._fire_at.get("a") == T0 + 101, timeout=DEADLINE,
               message="a retry after one second")
    assert dispatcher.due("a") == T0 + 100
    move_and_check(T0 + 101, "b6")
    wait_until(lambda: len(fires_of_a()) == 5, timeout=DEADLINE, message="the retry")
    assert fires_of_a()[-1] == ("a", T0 + 100)
    assert dispatcher.due("a") is None


def test_the_back_off_is_capped(clock):
    failures = []

    def always_fails(task_id, due):
        failures.append(clock.now)
        raise RuntimeError("store down")

    d = Dispatcher(clock=clock)
    d.open(always_fails)
    try:
        d.schedule("a", T0)
        d.set_active(True)
        expected = [T0]
        for delay in [1, 2, 4, 8, 16, 32, 60, 60]:
            wait_until(lambda: len(failures) == len(expected), timeout=DEADLINE,
                       message=f"failure {len(expected)}")
            wait_until(lambda: d._fire_at.get("a") is not None, timeout=DEADLINE)
            assert d._fire_at["a"] == clock.now + delay
            clock.now += delay
            expected.append(clock.now)
            d.set_active(True)
        wait_until(lambda: len(failures) == len(expected), timeout=DEADLINE)
        assert failures == expected and d.due("a") == T0
    finally:
        d.close(2)


def test_rescheduling_a_failed_task_supersedes_its_retry(dispatcher, recorder, clock):
    def boom(due):
        raise RuntimeError("store down")

    recorder.plan["a"] = boom
    dispatcher.schedule("a", T0 - 10)
    dispatcher.set_active(True)
    recorder.wait_fired("a")
    wait_until(lambda: dispatcher.due("a") == T0 - 10, timeout=DEADLINE,
               message="the retry to be planned")
    dispatcher.schedule("a", T0 + 50)  # e.g. the task was updated meanwhile
    recorder.plan.pop("a")
    clock.now = T0 + 10
    dispatcher.schedule("barrier", T0)
    recorder.wait_fired("barrier")
    assert recorder.snapshot() == [("a", T0 - 10), ("barrier", T0)]
    assert dispatcher.due("a") == T0 + 50
    clock.now = T0 + 50
    dispatcher.set_active(True)
    assert recorder.wait_for(3)[-1] == ("a", T0 + 50)


def test_cancelling_a_failed_task_drops_its_retry(dispatcher, recorder, clock):
    def boom(due):
        raise RuntimeError("store down")

    recorder.plan["a"] = boom
    dispatcher.schedule("a", T0 - 10)
    dispatcher.set_active(True)
    recorder.wait_fired("a")
    wait_until(lambda: dispatcher.due("a") == T0 - 10, timeout=DEADLINE,
               message="the retry to be planned")
    dispatcher.schedule("a", None)  # e.g. the task was removed or paused
    clock.now = T0 + 100
    dispatcher.schedule("barrier", T0)
    recorder.wait_fired("barrier")
    assert recorder.snapshot() == [("a", T0 - 10), ("barrier", T0)]
    assert dispatcher.due("a") is None


def test_close_ends_the_thread_promptly_while_waiting_far_ahead(clock, recorder):
    d = Dispatcher(clock=clock)
    d.open(recorder)
    d.schedule("far", T0 + 10 * 365 * 86400)
    d.set_active(True)
    wait_until(lambda: d.due("far") is not None, timeout=DEADLINE)
    started = time.monotonic()
    d.close(1.0)
    assert not d._thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert recorder.snapshot() == []


def test_close_ends_an_inactive_idle_thread_promptly(clock, recorder):
    d = Dispatcher(clock=clock)
    d.open(recorder)
    d.close(1.0)
    assert not d._thread.is_alive()


def test_nothing_fires_after_close(clock, recorder):
    d = Dispatcher(clock=clock)
    d.open(recorder)
    d.close(1.0)
    d.schedule("a", T0 - 1)
    d.set_active(True)
    assert not d._thread.is_alive()
    assert recorder.snapshot() == []


def test_schedule_many_replaces_everything(dispatcher, recorder):
    dispatcher.schedule("old1", T0 - 100)
    dispatcher.schedule("old2", T0 - 90)
    dispatcher.schedule("c", T0 - 80)
    dispatcher.schedule_many({"c": T0 - 20, "d": T0 - 10, "later": T0 + 50})
    assert dispatcher.due("old1") is None and dispatcher.due("c") == T0 - 20
    dispatcher.set_active(True)
    recorder.wait_fired("d")
    assert recorder.snapshot() == [("c", T0 - 20), ("d", T0 - 10)]
    assert dispatcher.due("later") == T0 + 50


def test_many_reschedules_keep_only_the_latest(dispatcher, recorder):
    # enough pushes to trigger heap compaction; only the last due time of each task counts
    for i in range(300):
        dispatcher.schedule(f"t{i % 3}", T0 - 1000 + i)
    dispatcher.set_active(True)
    assert recorder.wait_for(3) == [("t0", T0 - 703), ("t1", T0 - 702), ("t2", T0 - 701)]
    dispatcher.schedule("barrier", T0)
    recorder.wait_fired("barrier")
    assert len(recorder.snapshot()) == 4


# --- jitter -------------------------------------------------------------------------------

def test_a_jittered_slot_fires_at_its_start_and_passes_the_slot(dispatcher, recorder, clock):
    from scheduler.jitter import jitter_offset
    slot = T0 + 100
    start = slot + jitter_offset("j", slot, 50)
    assert start > slot  # this task id and slot draw a non-zero offset
    dispatcher.schedule("j", slot, jitter=50)
    dispatcher.set_active(True)
    clock.now = start - 0.01
    dispatcher.schedule("barrier", clock.now)
    recorder.wait_fired("barrier")
    assert ("j", slot) not in recorder.snapshot()
    assert dispatcher.due("j") == slot
    clock.now = start
    dispatcher.set_active(True)
    assert recorder.wait_fired("j")[-1] == ("j", slot)


def test_the_next_slot_keeps_the_jitter_and_schedule_many_takes_it(dispatcher, recorder, clock):
    from scheduler.jitter import jitter_offset
    recorder.plan["j"] = lambda due: due + 1000
    dispatcher.schedule_many({"j": T0 - 200, "plain": T0 + 50}, {"j": 50})
    dispatcher.set_active(True)
    assert recorder.wait_fired("j") == [("j", T0 - 200)]
    following = T0 + 800
    wait_until(lambda: dispatcher.due("j") == following, timeout=DEADLINE)
    with dispatcher._cond:
        assert dispatcher._when("j") == following + jitter_offset("j", following, 50)
        assert dispatcher._when("plain") == T0 + 50  # no jitter: at the slot itself


# --- lead time and DEFER ------------------------------------------------------------------

@pytest.fixture
def ahead(clock, recorder):
    """A dispatcher that fires each slot up to a second ahead of its start."""
    d = Dispatcher(clock=clock, lead=1.0)
    d.open(recorder)
    yield d
    d.close(2)
    assert not d._thread.is_alive(), "dispatcher thread still running after close()"


def fire_time(d: Dispatcher, task_id: str) -> float | None:
    with d._cond:
        return d._when(task_id)


def test_lead_fires_a_slot_ahead_of_its_start_and_passes_the_slot(ahead, recorder, clock):
    ahead.schedule("a", T0 + 100)
    ahead.set_active(True)
    assert fire_time(ahead, "a") == T0 + 99
    clock.now = T0 + 98.999
    ahead.schedule("barrier", clock.now)
    recorder.wait_fired("barrier")
    assert ("a", T0 + 100) not in recorder.snapshot()
    clock.now = T0 + 99
    ahead.set_active(True)
    assert recorder.wait_fired("a")[-1] == ("a", T0 + 100)


def test_the_lead_is_at_most_half_the_gap_between_starts(ahead, recorder, clock):
    recorder.plan["a"] = lambda due: due + 1  # every second
    ahead.schedule("a", T0 + 1)
    assert fire_time(ahead, "a") == T0 + 0.5  # half the time from now to the slot
    ahead.set_active(True)
    clock.now = T0 + 0.5
    ahead.set_active(True)
    recorder.wait_fired("a")
    wait_until(lambda: ahead.due("a") == T0 + 2, timeout=DEADLINE, message="the next slot")
    # Fired half a second early, not a whole one: never before the previous slot's start.
    assert fire_time(ahead, "a") == T0 + 1.5


def test_a_long_gap_gets_the_whole_lead(ahead, recorder, clock):
    recorder.plan["a"] = lambda due: due + 60
    ahead.schedule("a", T0 + 10)
    ahead.set_active(True)
    clock.now = T0 + 9
    ahead.set_active(True)
    recorder.wait_fired("a")
    wait_until(lambda: ahead.due("a") == T0 + 70, timeout=DEADLINE, message="the next slot")
    assert fire_time(ahead, "a") == T0 + 69


def test_a_jittered_slot_is_fired_ahead_of_its_jittered_start(ahead, recorder, clock):
    from scheduler.jitter import jitter_offset
    slot = T0 + 100
    start = slot + jitter_offset("j", slot, 50)
    ahead.schedule("j", slot, jitter=50)
    assert fire_time(ahead, "j") == start - 1
    clock.now = start - 1
    ahead.set_active(True)
    assert recorder.wait_fired("j")[-1] == ("j", slot)


@pytest.mark.parametrize("jitter", [None, 0.25, 0.5])
def test_no_slot_is_fired_before_the_previous_start_of_its_task(clock, jitter):
    """Every second with up to half a second of jitter and a lead far longer than that:
    each slot is fired after the previous one started, and not after its own start."""
    from scheduler.jitter import jitter_offset
    d = Dispatcher(clock=clock, lead=30.0)
    fired: list[float] = []
    d.open(lambda task_id, due: fired.append(clock.now) or due + 1)
    try:
        d.schedule("a", T0 + 1, jitter=jitter)
        d.set_active(True)
        for k in range(1, 21):
            slot = T0 + k
            at = fire_time(d, "a")
            start = slot + jitter_offset("a", slot, jitter)
            previous = slot - 1 + jitter_offset("a", slot - 1, jitter) if k > 1 else T0
            assert previous < at < start
            clock.now = at
            d.set_active(True)
            wait_until(lambda: d.due("a") == slot + 1, timeout=DEADLINE,
                       message=f"slot {k} to fire")
        assert len(fired) == 20
    finally:
        d.close(2)


def test_defer_fires_the_same_slot_again_at_its_start(ahead, recorder, clock):
    answers = iter([DEFER, T0 + 110])
    recorder.plan["a"] = lambda due: next(answers)
    ahead.schedule("a", T0 + 10)
    clock.now = T0 + 9
    ahead.set_active(True)
    recorder.wait_fired("a")
    wait_until(lambda: fire_time(ahead, "a") == T0 + 10, timeout=DEADLINE,
               message="the slot planned again at its start")
    assert ahead.due("a") == T0 + 10

    clock.now = T0 + 9.999
    ahead.schedule("barrier", T0)
    recorder.wait_fired("barrier")
    assert recorder.snapshot() == [("a", T0 + 10), ("barrier", T0)]
    clock.now = T0 + 10
    ahead.set_active(True)
    assert recorder.wait_for(3)[-1] == ("a", T0 + 10)
    wait_until(lambda: ahead.due("a") == T0 + 110, timeout=DEADLINE, message="the next slot")
    assert fire_time(ahead, "a") == T0 + 109  # the next slot gets its lead again


def test_a_deferred_jittered_slot_fires_again_at_its_jittered_start(ahead, recorder, clock):
    from scheduler.jitter import jitter_offset
    slot = T0 + 100
    start = slot + jitter_offset("j", slot, 50)
    answers = iter([DEFER, None])
    recorder.plan["j"] = lambda due: next(answers)
    ahead.schedule("j", slot, jitter=50)
    clock.now = start - 1
    ahead.set_active(True)
    recorder.wait_fired("j")
    wait_until(lambda: fire_time(ahead, "j") == start, timeout=DEADLINE,
               message="the slot planned again at its jittered start")
    clock.now = start
    ahead.set_active(True)
    assert recorder.wait_for(2) == [("j", slot), ("j", slot)]


def test_a_change_while_deferring_wins_over_the_deferral(ahead, recorder, clock):
    def reschedule_inside(due):
        ahead.schedule("a", T0 + 500)  # e.g. an update while the slot fires
        return DEFER

    recorder.plan["a"] = reschedule_inside
    ahead.schedule("a", T0 + 10)
    clock.now = T0 + 9
    ahead.set_active(True)
    recorder.wait_fired("a")
    ahead.schedule("barrier", T0)
    recorder.wait_fired("barrier")
    assert ahead.due("a") == T0 + 500


def test_defer_at_the_start_itself_is_retried_as_a_failure(dispatcher, recorder, clock, caplog):
    """Without lead there is nothing to wait for: a DEFER would fire the slot again at once,
    for ever; it is logged and retried after the back-off instead."""
    recorder.plan["a"] = lambda due: DEFER
    with caplog.at_level(logging.ERROR, logger="scheduler.dispatcher"):
        dispatcher.schedule("a", T0)
        dispatcher.set_active(True)
        recorder.wait_fired("a")
        wait_until(lambda: fire_time(dispatcher, "a") == T0 + 1, timeout=DEADLINE,
                   message="the retry after a second")
    assert dispatcher.due("a") == T0
    assert any("deferred a slot whose start has come" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info)


def test_a_failed_early_fire_is_retried_no_earlier_than_its_start(ahead, recorder, clock):
    def boom(due):
        raise RuntimeError("store down")

    recorder.plan["a"] = boom
    ahead.schedule("a", T0 + 10)
    clock.now = T0 + 9
    ahead.set_active(True)
    recorder.wait_fired("a")
    # The back-off counts from the start the slot was planned for, not from the early fire.
    wait_until(lambda: fire_time(ahead, "a") == T0 + 11, timeout=DEADLINE,
               message="the retry one second after the start")
    assert ahead.due("a") == T0 + 10


def test_schedule_many_plans_with_the_lead(ahead, recorder, clock):
    ahead.schedule_many({"far": T0 + 100, "near": T0 + 1, "past": T0 - 5})
    assert fire_time(ahead, "far") == T0 + 99
    assert fire_time(ahead, "near") == T0 + 0.5
    assert fire_time(ahead, "past") == T0 - 5  # due already: fired at once, at its slot
