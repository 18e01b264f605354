"""The waiting policy on its own: places in line, gap windows, stepping aside, back-off.

Each decision is a pure function of what was read and of the clock value passed in, so
these tests need neither a lock holder nor a sleep.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msal_persist import _waiting
from msal_persist._inotify import DirectoryWatch
from msal_persist._waiting import (
    FIRST_POLL,
    GAP_LENGTH,
    GAP_PERIOD,
    MAX_LOCK_FILE_BYTES,
    MAX_PLACE,
    MAX_POLL,
    MAX_WAKE_WAIT,
    NAP_SHARE,
    QUICK_RETRIES,
    STILL_CONTENDED,
    SUSTAINED_CONTENTION,
    TURN,
    YIELD_TIME,
    Contention,
    Ticket,
    Waiter,
    bounded,
    gap_wait,
    mark,
    nap_time,
    next_poll,
    place_in_line,
    poll_pause,
    step_aside_time,
    turn_delay,
    waiters_marked,
)

RECORD = b"4242 /usr/bin/az"


def _sustained(now: float) -> tuple[float, float]:
    """(since, last) of a lock that has contended without a break for a second until now."""
    return now - 1.0, now


# Places in line


def test_place_counts_the_earlier_marks_only() -> None:
    """A waiter's place is the number of marks older than its own; later ones do not count."""
    content = RECORD + mark(100) + mark(200) + mark(300) + mark(400)
    assert place_in_line(content, 250) == 2
    assert place_in_line(content, 100) == 0
    assert place_in_line(content, 401) == 4


def test_own_mark_does_not_count_against_itself() -> None:
    """The waiter's own mark (same start time) puts nobody ahead of it."""
    assert place_in_line(RECORD + mark(7) + mark(5), 7) == 1


def test_holder_record_is_not_a_mark() -> None:
    """The holder's "<pid> <argv0>" record, digits and all, counts for nobody."""
    assert place_in_line(b"1 2 3", 10**18) == 0
    assert place_in_line(b"", 10**18) == 0


@pytest.mark.parametrize(
    "malformed",
    [b"+", b"+abc", b"+-5", b"+1.5", b"+ 3", b"+3 ", b"+0x10", b"+\xd9\xa3", b"++"],
    ids=repr,
)
def test_malformed_marks_are_ignored(malformed: bytes) -> None:
    """Only "+<ascii digits>" is a mark: anything else another process writes counts for nothing."""
    assert place_in_line(RECORD + malformed + mark(1), 10) == 1


def test_flood_of_marks_is_capped() -> None:
    """Thousands of early marks put a waiter at most MAX_PLACE places back."""
    assert place_in_line(RECORD + b"+1" * 50_000, 10**18) == MAX_PLACE


@given(st.binary(max_size=MAX_LOCK_FILE_BYTES), st.integers(min_value=0, max_value=2**63))
def test_any_content_gives_a_place_within_bounds(content: bytes, started_ns: int) -> None:
    """Whatever bytes a lock file holds, the place is between 0 and MAX_PLACE."""
    assert 0 <= place_in_line(content, started_ns) <= MAX_PLACE


@given(st.lists(st.integers(min_value=0, max_value=2**63), max_size=MAX_PLACE), st.integers(0))
def test_marks_written_are_the_marks_counted(starts: list[int], mine: int) -> None:
    """Marks as waiters write them read back as exactly the earlier waiters."""
    content = RECORD + b"".join(mark(s) for s in starts)
    assert place_in_line(content, mine) == sum(1 for s in starts if s < mine)


def test_turns_grow_with_the_place_and_stay_short() -> None:
    """Each place waits one TURN more; even the last place waits less than one kernel wake."""
    assert turn_delay(0) == 0
    assert [turn_delay(p) for p in range(1, 4)] == pytest.approx([TURN, 2 * TURN, 3 * TURN])
    assert turn_delay(MAX_PLACE) < MAX_WAKE_WAIT


# Gap windows


def test_no_gap_without_contention() -> None:
    """A lock that never waited never keeps off, wherever the clock is."""
    fresh = Contention()
    for now in (0.0, 0.1, 1.5, 3.05, 1e6):
        assert gap_wait(now, fresh.since, fresh.last) == 0.0


def test_no_gap_before_contention_is_sustained() -> None:
    """Contention shorter than SUSTAINED_CONTENTION keeps nobody off, even inside a window."""
    now = 1000 * GAP_PERIOD + GAP_LENGTH / 2
    assert gap_wait(now, now - SUSTAINED_CONTENTION / 2, now) == 0.0


def test_no_gap_once_contention_has_paused() -> None:
    """A pause longer than STILL_CONTENDED ends the spell: no more gaps."""
    now = 1000 * GAP_PERIOD + GAP_LENGTH / 2
    assert gap_wait(now, now - 5.0, now - 2 * STILL_CONTENDED) == 0.0


def test_sustained_contention_keeps_off_until_the_window_ends() -> None:
    """Inside a window, the wait ends exactly when the window does; outside, there is none."""
    start = 1000 * GAP_PERIOD
    for offset in (0.0, 0.05, GAP_LENGTH / 2, GAP_LENGTH - 0.01):
        now = start + offset
        wait = gap_wait(now, *_sustained(now))
        assert wait == pytest.approx(GAP_LENGTH - offset, abs=1e-9)
    for offset in (GAP_LENGTH + 0.001, GAP_LENGTH + 0.01, GAP_PERIOD - 0.01):
        now = start + offset
        assert gap_wait(now, *_sustained(now)) == 0.0


@pytest.mark.parametrize("poll_every", [0.1, 0.25])
def test_every_polling_peer_finds_a_window_before_it_gives_up(poll_every: float) -> None:
    """A peer polling every 0.1-0.25 s and giving up after 5 s polls inside some gap window."""
    for first_poll in (i * 0.01 for i in range(int(GAP_PERIOD * 100))):
        polls = [first_poll + k * poll_every for k in range(int(5.0 / poll_every) + 1)]
        assert any(gap_wait(t, *_sustained(t)) > 0 for t in polls), first_poll


def test_contention_spells_start_after_a_pause() -> None:
    """Contended acquisitions close together form one spell; a pause starts a new one."""
    contention = Contention()
    contention.note(10.0)
    contention.note(10.0 + STILL_CONTENDED / 2)
    assert contention.since == 10.0
    later = 10.0 + STILL_CONTENDED / 2 + 2 * STILL_CONTENDED
    contention.note(later)
    assert (contention.since, contention.last) == (later, later)


# Napping through releases further back in line


def test_the_next_in_line_and_a_waiter_without_a_measure_never_nap() -> None:
    """Place 0 and 1 watch every release; without a measured period nobody naps."""
    assert nap_time(0, 0.002) == 0.0
    assert nap_time(1, 0.002) == 0.0
    assert nap_time(5, 0.0) == 0.0


def test_a_nap_covers_a_share_of_the_releases_ahead_and_stays_bounded() -> None:
    """A waiter at place p sleeps through NAP_SHARE of the p - 1 releases before its turn."""
    assert nap_time(2, 0.002) == pytest.approx(NAP_SHARE * 0.002)
    assert nap_time(9, 0.002) == pytest.approx(8 * NAP_SHARE * 0.002)
    # Back before its turn: strictly less than the time the line needs to reach it.
    for place in range(2, MAX_PLACE + 1):
        assert nap_time(place, 0.003) < (place - 1) * 0.003
    assert nap_time(MAX_PLACE, 1.0) == MAX_WAKE_WAIT


def test_release_period_follows_back_to_back_releases_only() -> None:
    """The period is measured from releases close together; a long pause measures nothing."""
    contention = Contention()
    contention.saw_release(10.0)
    assert contention.period == 0.0  # one release: no interval yet
    contention.saw_release(10.004)
    assert contention.period == pytest.approx(0.004)
    contention.saw_release(10.006)
    assert contention.period == pytest.approx(0.003)
    contention.saw_release(20.0)  # a pause: not a measure of the line's pace
    assert contention.period == pytest.approx(0.003)
    contention.forget()
    assert contention.period == 0.0


# Stepping aside


def test_only_marks_past_the_record_mean_someone_waited() -> None:
    """A lock file holding just its record asks for no courtesy; any byte more does."""
    assert not waiters_marked(len(RECORD), len(RECORD))
    assert not waiters_marked(0, len(RECORD))
    assert waiters_marked(len(RECORD + mark(1)), len(RECORD))


def test_release_to_waiters_steps_aside_for_yield_time() -> None:
    """After a release others waited for, the holder keeps off for YIELD_TIME, then not."""
    contention = Contention()
    contention.released_to_waiters(50.0)
    assert step_aside_time(50.0, contention.yield_until, None) == pytest.approx(YIELD_TIME)
    assert step_aside_time(50.0 + YIELD_TIME, contention.yield_until, None) <= 0
    assert contention.last == 50.0  # a release to waiters is contention too


def test_step_aside_never_outlasts_the_deadline() -> None:
    """Stepping aside ends by the acquisition's deadline."""
    assert step_aside_time(50.0, 50.0 + YIELD_TIME, 50.001) == pytest.approx(0.001)
    assert step_aside_time(50.0, 50.0 + YIELD_TIME, 49.0) <= 0


def test_no_step_aside_without_a_release_to_waiters() -> None:
    """A lock that never released to waiters, or forgot it after fork, never steps aside."""
    contention = Contention()
    assert step_aside_time(time.monotonic(), contention.yield_until, None) <= 0
    contention.released_to_waiters(time.monotonic())
    contention.forget()
    assert step_aside_time(time.monotonic(), contention.yield_until, None) <= 0
    assert (contention.since, contention.last) == (-1.0, -1.0)


# Back-off


def test_poll_interval_doubles_up_to_the_cap() -> None:
    """Polls start at FIRST_POLL, double, and settle at MAX_POLL within a few steps."""
    intervals = [FIRST_POLL]
    for _ in range(20):
        intervals.append(next_poll(intervals[-1]))
    assert intervals[1] == 2 * FIRST_POLL
    assert max(intervals) == MAX_POLL
    assert intervals.index(MAX_POLL) <= 5
    assert all(b >= a for a, b in itertools.pairwise(intervals))


def test_poll_pause_stays_within_its_jitter_and_the_time_left() -> None:
    """A poll sleeps between half and one and a half of its interval, never past the deadline."""
    random.seed(1)
    pauses = [poll_pause(MAX_POLL, 1.0) for _ in range(2000)]
    assert min(pauses) >= 0.5 * MAX_POLL
    assert max(pauses) <= 1.5 * MAX_POLL
    assert len({round(p, 6) for p in pauses}) > 100  # jittered, not lockstep
    assert all(poll_pause(MAX_POLL, 0.001) <= 0.001 for _ in range(100))


def test_bounded_never_sleeps_past_the_deadline_nor_negative() -> None:
    """A sleep is cut to the time left before the deadline, and never below zero."""
    assert bounded(0.5, None) == 0.5
    assert bounded(0.5, time.monotonic() - 1) == 0.0
    assert bounded(0.5, time.monotonic() + 0.01) <= 0.01


def test_quick_retries_pause_once_every_quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries after the lock file vanished go at once, with a short pause every QUICK_RETRIES."""
    sleeps: list[float] = []
    monkeypatch.setattr(_waiting.time, "sleep", sleeps.append)
    lock_path = Path("unused.lockfile")  # retrying touches no file and opens no watch
    waiter = Waiter(lock_path, Contention(), DirectoryWatch(lock_path), None)
    for _ in range(3 * QUICK_RETRIES):
        waiter.retry_soon()
    assert sleeps == [FIRST_POLL] * 3


# Tickets, on a real file: the marks above are what they write and read


def test_ticket_reads_its_place_after_the_holder_deleted_the_file(tmp_path: Path) -> None:
    """A ticket still reads the marks of a lock file its holder has already deleted."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    lock_path.write_bytes(RECORD + mark(1) + mark(2))
    ticket = Ticket(10)
    try:
        ticket.hand_in(lock_path)
        os.unlink(lock_path)
        assert ticket.place() == 2
    finally:
        ticket.close()


def test_ticket_adds_no_mark_to_a_full_lock_file(tmp_path: Path) -> None:
    """A lock file at MAX_LOCK_FILE_BYTES takes no more marks, so a flood cannot grow it."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    lock_path.write_bytes(RECORD.ljust(MAX_LOCK_FILE_BYTES, b" "))
    ticket = Ticket(10)
    ticket.hand_in(lock_path)
    ticket.close()
    assert lock_path.stat().st_size == MAX_LOCK_FILE_BYTES
    assert ticket.place() == 0
