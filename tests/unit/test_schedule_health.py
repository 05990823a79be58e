"""Cron schedules (seconds field, macros, jitter bounds) and the health verdict (failed, overdue, ok)."""

import random
import re
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from coord.daemon import missed_fire_times, sleep_until
from coord.errors import UsageError
from coord.health import RunView, check_health
from coord.history import CRASHED, FAILED, INTERRUPTED, OK, RUNNING
from coord.schedule import MAX_JITTER_S, parse_schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NOW = at("2026-11-27T10:00:00")


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * *", "2026-11-27T03:00:00", "2026-11-28T03:00:00"),  # strictly after
        ("0 3 * * *", "2026-11-27T02:59:59", "2026-11-27T03:00:00"),
        ("*/2 * * * * *", "2026-11-27T03:00:01", "2026-11-27T03:00:02"),  # six fields: seconds first
        ("30 0 3 * * *", "2026-11-27T00:00:00", "2026-11-27T03:00:30"),
        ("@daily", "2026-11-27T12:00:00", "2026-11-28T00:00:00"),
        ("  0   3 * *   MON ", "2026-11-27T00:00:00", "2026-11-30T03:00:00"),  # spaces are normalized
    ],
)
def test_next_fire_time(expression: str, after: str, expected: str) -> None:
    schedule = parse_schedule(expression, zone=UTC)
    assert schedule.next_after(at(after)) == at(expected)


def test_fire_times_follow_the_time_zone() -> None:
    schedule = parse_schedule("0 3 * * *", zone=ZoneInfo("Europe/Berlin"))
    assert schedule.next_after(at("2026-11-27T00:00:00")).astimezone(UTC) == at("2026-11-27T02:00:00")
    assert schedule.previous_before(at("2026-11-27T02:00:00")).astimezone(UTC) == at("2026-11-27T02:00:00")


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 3 * *", "expected 5 cron fields .* got 4 field"),
        ("0 0 3 * * * 2026", "got 7 field"),
        ("61 * * * *", "out of range"),
        ("70 3 * * * *", "out of range"),  # the seconds field is checked too
        ("@sometimes", "got 1 field"),
        ("", "got 0 field"),
    ],
)
def test_bad_schedules_are_usage_errors(expression: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_schedule(expression)


@pytest.mark.parametrize("jitter", [-1, MAX_JITTER_S + 1])
def test_jitter_out_of_bounds(jitter: float) -> None:
    with pytest.raises(UsageError, match="jitter"):
        parse_schedule("0 3 * * *", jitter)


def test_jitter_delays_stay_within_bounds() -> None:
    schedule = parse_schedule("0 3 * * *", 90)
    rng = random.Random(5)
    delays = [schedule.delay(rng) for _ in range(2000)]
    assert all(0 <= delay <= 90 for delay in delays)
    assert max(delays) > 80 and min(delays) < 10  # spread over the whole range
    assert parse_schedule("0 3 * * *").delay() == 0


def test_missed_fire_times_while_a_run_was_going() -> None:
    schedule = parse_schedule("*/2 * * * * *", zone=UTC)
    assert missed_fire_times(schedule, at("2026-11-27T03:00:00"), at("2026-11-27T03:00:01")) == 0
    assert missed_fire_times(schedule, at("2026-11-27T03:00:00"), at("2026-11-27T03:00:07")) == 3


def test_sleep_until_stops_early_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    assert sleep_until(datetime.now(UTC) + timedelta(hours=1), stop) is True
    assert sleep_until(datetime.now(UTC) - timedelta(seconds=1), threading.Event()) is False


def run(run_id: int, started: str, status: str = OK, *errors: str) -> RunView:
    return RunView(run_id, at(started), status, errors)


DAILY = parse_schedule("0 3 * * *", zone=UTC)


@pytest.mark.parametrize(
    ("runs", "schedule", "daemon_started", "healthy", "reason"),
    [
        pytest.param([run(1, "2026-11-27T03:00:01")], None, None, True, "last run 1 .* ok", id="ok"),
        pytest.param(
            [run(1, "2026-11-26T03:00:00"), run(2, "2026-11-27T03:00:00", FAILED, "db: disk full")],
            None,
            None,
            False,
            r"last run 2 \(2026-11-27 03:00:00Z\) failed: db: disk full",
            id="last-failed",
        ),
        pytest.param([run(3, "2026-11-27T03:00:00", CRASHED)], None, None, False, "crashed", id="crashed"),
        pytest.param([run(3, "2026-11-27T03:00:00", INTERRUPTED)], None, None, False, "interrupted", id="interrupted"),
        pytest.param([], None, None, False, "no backup run recorded yet", id="never"),
        pytest.param(
            [run(1, "2026-11-27T03:00:02")], DAILY, None, True, "next run due 2026-11-28 03:00:00Z", id="on-schedule"
        ),
        pytest.param(
            [run(1, "2026-11-26T03:00:02")],
            DAILY,
            None,
            False,
            "overdue: a scheduled run was due at 2026-11-27 03:00:00Z",
            id="overdue",
        ),
        pytest.param([], DAILY, at("2026-11-27T09:00:00"), True, "no run yet", id="daemon-just-started"),
        pytest.param([], DAILY, at("2026-11-25T09:00:00"), False, "overdue", id="daemon-never-ran"),
        pytest.param(
            [run(1, "2026-11-26T03:00:00"), run(2, "2026-11-27T03:00:00", RUNNING)],
            DAILY,
            None,
            True,
            "run 2 in progress",
            id="long-run-in-progress",
        ),
        pytest.param(
            [run(1, "2026-11-27T03:00:00", FAILED), run(2, "2026-11-27T04:00:00")], None, None, True, "ok", id="fixed"
        ),
    ],
)
def test_health(runs, schedule, daemon_started, healthy, reason) -> None:
    health = check_health(runs, NOW, schedule, daemon_started, grace_s=300)
    assert health.healthy is healthy, health.reason
    assert re.search(reason, health.reason), health.reason


def test_the_last_run_to_end_decides() -> None:
    scheduled = RunView(1, at("2026-11-27T03:00:00"), OK, (), at("2026-11-27T03:40:00"))  # long, ended ok
    manual = RunView(2, at("2026-11-27T03:10:00"), FAILED, ("lock held",), at("2026-11-27T03:10:01"))
    assert check_health([scheduled, manual], NOW).healthy
    later = RunView(3, at("2026-11-27T04:00:00"), FAILED, ("disk full",), at("2026-11-27T04:00:05"))
    assert check_health([scheduled, manual, later], NOW).reason.startswith("last run 3")


def test_overdue_allows_jitter_and_grace() -> None:
    schedule = parse_schedule("0 3 * * *", jitter_s=3600, zone=UTC)
    runs = [run(1, "2026-11-26T03:10:00")]
    assert check_health(runs, at("2026-11-27T04:04:00"), schedule, grace_s=300).healthy
    assert not check_health(runs, at("2026-11-27T04:06:00"), schedule, grace_s=300).healthy
