"""Run history and reports: aggregation over several ISO weeks with injected times, crashed runs, the schema."""

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coord.errors import HistoryError, UsageError
from coord.history import CRASHED, FAILED, INTERRUPTED, OK, RUNNING, SCHEMA_VERSION, DrillRow, History, VolumeRow
from coord.report import parse_since, parse_week, render_report, render_status, report_for, status_of, week_of
from coord.results import ContainerAction, RunResult, TargetResult, TargetStatus, VolumeResult, VolumeStatus


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def volume(name: str, status: str, downtime: float = 0.0, policy: str = "db", error: str | None = None):
    result = VolumeResult(volume=name, policy=policy, strategy="pause", status=VolumeStatus(status))
    if downtime:
        result.containers = [ContainerAction("c", "0" * 12, "paused", "running", seconds=downtime)]
    if status in ("ok", "warning"):
        result.archive, result.size, result.verdict = f"/b/{name}.tar.zst", 1000, "consistent"
    if status == "warning":
        result.warnings["vanished"] = 2
    if error:
        result.errors.append(error)
    return result


def record(history: History, started: str, *volumes: VolumeResult, errors: list[str] | None = None) -> int:
    result = RunResult(volumes=list(volumes), errors=list(errors or []))
    run_id = history.start_run("schedule", now=at(started))
    history.finish_run(run_id, OK if result.ok else FAILED, result, now=at(started) + timedelta(minutes=5))
    return run_id


@pytest.fixture
def history(tmp_path: Path) -> History:
    """Three ISO weeks of nightly runs of two volumes, plus one run in the first days of January."""
    history = History(tmp_path / "state")
    # 2026-W47 (Mon 16 Nov .. Sun 22 Nov): pg ok twice; redis ok then failed
    record(history, "2026-11-16T03:00:00", volume("pg", "ok", 0.5), volume("redis", "ok", 0.1, "cache"))
    record(history, "2026-11-22T23:59:59", volume("pg", "ok", 1.5), volume("redis", "failed", 0.3, "cache", "disk"))
    # 2026-W48 (Mon 23 Nov ..): pg warning, failed, ok; redis failed only
    record(history, "2026-11-23T00:00:00", volume("pg", "warning", 1.0), volume("redis", "failed", 0, "cache", "x"))
    record(history, "2026-11-25T03:00:00", volume("pg", "failed", 4.0, error="disk full"), errors=["after hook"])
    record(history, "2026-11-29T03:00:00", volume("pg", "ok", 1.0), volume("tmp", "excluded", policy="caches"))
    # 2027-01-02 is a Saturday of ISO week 2026-W53
    record(history, "2027-01-02T03:00:00", volume("pg", "ok", 2.0))
    return history


def by_volume(report) -> dict[str, dict]:
    return {v.volume: v.to_json() for v in report.volumes}


def test_each_iso_week_counts_only_its_own_runs(history: History) -> None:
    w47 = by_volume(report_for(history, parse_week("2026-W47")))
    assert {k: w47["pg"][k] for k in w47["pg"] if k not in ("policy", "volume", "last_status", "last_error")} == {
        "runs": 2,
        "successes": 2,
        "warnings": 0,
        "failures": 0,
        "excluded": 0,
        "success_rate": 1.0,
        "downtime_mean_s": 1.0,
        "downtime_max_s": 1.5,
        "last_success": "2026-11-22T23:59:59Z",
        "gone": None,
        "last_drill": None,
        "targets": {},
    }
    assert (w47["redis"]["runs"], w47["redis"]["failures"], w47["redis"]["success_rate"]) == (2, 1, 0.5)

    report = report_for(history, parse_week("2026-W48"))
    w48 = by_volume(report)
    assert {k: w48["pg"][k] for k in ("runs", "successes", "warnings", "failures", "downtime_max_s")} == {
        "runs": 3,
        "successes": 2,
        "warnings": 1,
        "failures": 1,
        "downtime_max_s": 4.0,
    }
    assert w48["pg"]["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert w48["pg"]["downtime_mean_s"] == 2.0
    assert w48["pg"]["last_success"] == "2026-11-29T03:00:00Z"
    # redis only failed this week: its last success is the one of the week before
    assert (w48["redis"]["successes"], w48["redis"]["last_success"]) == (0, "2026-11-16T03:00:00Z")
    assert w48["redis"]["last_error"] == "x"
    assert (w48["tmp"]["runs"], w48["tmp"]["excluded"], w48["tmp"]["success_rate"]) == (0, 1, None)
    assert report.runs.to_json() == {"total": 3, "ok": 1, "failed": 2, "interrupted": 0, "crashed": 0, "running": 0}
    assert [(v.policy, v.volume) for v in report.volumes] == [("cache", "redis"), ("caches", "tmp"), ("db", "pg")]


def test_a_week_at_the_turn_of_the_year_and_an_empty_week(history: History) -> None:
    w53 = report_for(history, parse_week("2026-W53"))
    assert [(v.volume, v.runs) for v in w53.volumes] == [("pg", 1)]
    assert w53.period.start == at("2026-12-28T00:00:00") and w53.period.end == at("2027-01-04T00:00:00")
    empty = report_for(history, parse_week("2026-W50"))
    assert empty.volumes == [] and empty.runs.total == 0
    assert render_report(empty)[1] == "no volume outcomes recorded in this period"


def test_since_a_date_spans_weeks(history: History) -> None:
    report = report_for(history, parse_since("2026-11-22", at("2026-12-01T00:00:00")))
    assert by_volume(report)["pg"]["runs"] == 4  # 22 Nov (W47) and the three of W48
    assert report.runs.total == 4


def test_text_report_has_one_row_per_policy_and_volume(history: History) -> None:
    lines = render_report(report_for(history, parse_week("2026-w48")))
    assert lines[0] == (
        "coord report 2026-W48 (2026-11-23 00:00:00Z .. 2026-11-30 00:00:00Z): 3 run(s): 1 ok, 2 failed"
    )
    assert lines[1].split() == [
        "policy", "volume", "runs", "ok", "warn", "fail", "rate", "downtime", "mean", "max", "last", "success",
        "last", "drill",
    ]  # fmt: skip
    assert lines[4].split()[:10] == ["db", "pg", "3", "1", "1", "1", "67%", "2.00s", "4.00s", "2026-11-29"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [("2026-48", "expected an ISO week"), ("2026-W54", "has no ISO week 54"), ("2025-W53", "has no ISO week 53")],
)
def test_bad_weeks_are_usage_errors(text: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_week(text)


def test_current_week_and_since_in_the_future() -> None:
    assert week_of(at("2026-11-29T23:59:59")).label == "2026-W48"
    assert week_of(at("2026-11-30T00:00:00")).label == "2026-W49"
    with pytest.raises(UsageError, match="in the future"):
        parse_since("2030-01-01", at("2026-11-29T00:00:00"))


def child(history: History, code: str) -> list[str]:
    """A Python command line that runs `code` with `h`, the same history, in another process."""
    setup = (
        f"from coord.history import History; from pathlib import Path; h = History(Path({str(history.path.parent)!r}))"
    )
    return [sys.executable, "-c", f"{setup}; {code}"]


def run_in_child(history: History, code: str) -> int:
    """Start a run from a child process that then dies without finishing it; returns the child's pid."""
    done = subprocess.run(child(history, f"{code}; import os; print(os.getpid())"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_run_whose_process_died_is_crashed_and_the_next_run_stores_it(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    pid = run_in_child(history, "h.start_run('schedule')")
    mine = history.start_run("manual")
    dead, alive = history.runs()
    assert (dead.pid, dead.status, dead.effective_status()) == (pid, RUNNING, CRASHED)
    assert alive.id == mine and alive.effective_status() == RUNNING
    assert history.mark_crashed() == [dead.id]
    assert history.runs()[0].status == CRASHED and "ended before it finished" in history.runs()[0].errors[0]
    report = report_for(history, week_of(datetime.now(UTC)))
    assert (report.runs.by_status[CRASHED], report.runs.by_status[RUNNING]) == (1, 1)
    lines = render_status(history.latest_run(), history.latest_run().effective_status(), [])
    assert lines == [lines[0]] and lines[0].endswith(": running")


def test_a_reused_pid_does_not_hide_a_crash(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    run_id = history.start_run("manual")
    with sqlite3.connect(history.path) as connection:  # same pid, but another process's start time
        connection.execute("UPDATE runs SET process = 'other-boot/1' WHERE id = ?", (run_id,))
    assert history.latest_run().effective_status() == CRASHED


def test_schema_version_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    record(history, "2026-11-16T03:00:00", volume("pg", "ok"))
    with sqlite3.connect(history.path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = connection.execute("SELECT warnings, warning_count, archive FROM volume_runs").fetchone()
        assert (json.loads(row[0])["vanished"], row[1], row[2]) == (0, 0, "/b/pg.tar.zst")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer than this coord knows"):
        history.latest_run()


def test_reading_a_missing_history_creates_nothing(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    assert history.runs() == [] and history.latest_per_volume() == [] and history.daemon() is None
    assert render_status(None, None, []) == ["no backup run recorded yet"]
    assert not (tmp_path / "state").exists()


def test_concurrent_writers_from_several_processes(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    code = "[h.finish_run(h.start_run('manual'), 'ok') for _ in range(20)]"
    processes = [subprocess.Popen(child(history, code)) for _ in range(4)]
    assert [process.wait(timeout=60) for process in processes] == [0, 0, 0, 0]
    runs = history.runs()
    assert len(runs) == 80 and {run.status for run in runs} == {OK}


def test_health_names_the_failed_volume_also_while_a_newer_run_is_in_progress(tmp_path: Path) -> None:
    from coord.health import health_of

    history = History(tmp_path / "state")
    record(history, "2026-11-25T03:00:00", volume("pg", "failed", error="disk full"))
    history.start_run("schedule", now=at("2026-11-26T03:00:00"))  # still running
    verdict = health_of(history, at("2026-11-26T03:01:00"))
    assert not verdict.healthy
    assert verdict.reason.endswith("failed: pg: disk full"), verdict.reason


def test_status_marks_volumes_no_longer_backed_up_instead_of_their_stale_failure(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    record(history, "2026-11-20T03:00:00", volume("pg", "ok"), volume("old", "failed", error="disk"))
    record(history, "2026-11-21T03:00:00", volume("pg", "ok"))  # policy db ran again without 'old'
    record(history, "2026-11-21T04:00:00", volume("cache1", "failed", policy="retired", error="x"))

    found = status_of(history, ["db"])
    assert found["gone"] == {
        ("db", "old"): "run 2 ran policy db without it: the volume was removed or the policy no longer selects it",
        ("retired", "cache1"): "policy retired no longer exists",
    }
    lines = render_status(history.latest_run(), OK, found["volumes"], found["gone"])
    assert any(line.startswith("GONE old (policy db) last failed") for line in lines), lines
    assert not any(line.startswith("FAIL old") for line in lines)
    assert any(line.startswith("OK   pg (policy db") for line in lines)

    # Without the policy names, only what the history itself shows is marked.
    assert set(status_of(history)["gone"]) == {("db", "old")}


def test_an_interrupted_run_without_a_volume_does_not_make_it_gone(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    record(history, "2026-11-20T03:00:00", volume("pg", "ok"), volume("wal", "ok"))
    run_id = history.start_run("schedule", now=at("2026-11-21T03:00:00"))
    history.finish_run(run_id, INTERRUPTED, RunResult(volumes=[volume("pg", "ok")]), now=at("2026-11-21T03:01:00"))
    assert status_of(history, ["db"])["gone"] == {}


def test_the_report_marks_gone_volumes(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    record(history, "2026-11-23T03:00:00", volume("pg", "ok"), volume("old", "failed", error="disk"))
    record(history, "2026-11-24T03:00:00", volume("pg", "ok"))
    report = report_for(history, parse_week("2026-W48"), ["db"])
    assert by_volume(report)["old"]["gone"].startswith("run 2 ran policy db without it")
    assert by_volume(report)["pg"]["gone"] is None
    assert render_report(report)[-1].startswith("gone: old (policy db): run 2 ran policy db without it")


def test_skipped_entries_are_not_counted_as_warnings() -> None:
    """problems.WARNING_KINDS decides what warning_count sums (the history schema says: skipped are not warnings)."""
    warnings = {"vanished": 2, "changed": 1, "shrank": 1, "skipped": 5}
    row = VolumeRow(1, datetime(2026, 11, 16, tzinfo=UTC), "pg", "pg", "live", "warning", warnings=warnings)
    assert row.warning_count == 4


def with_targets(result: VolumeResult, *outcomes: tuple[str, str]) -> VolumeResult:
    """`result` sent to targets: (name, status) each; a failed one's error names it, as publish.py's does."""
    for name, status in outcomes:
        error = f"target {name}: writing x failed: connection refused" if status == "failed" else None
        ref = f"{name}:{result.volume}/x.tar.zst" if status == "ok" else None
        result.targets.append(TargetResult(name, TargetStatus(status), ref, error))
    return result


def test_target_outcomes_are_recorded_shown_by_status_and_counted_by_the_report(tmp_path: Path) -> None:
    history = History(tmp_path / "state")
    both = with_targets(volume("pg", "ok"), ("local", "ok"), ("offsite", "ok"))
    record(history, "2026-11-23T03:00:00", both, with_targets(volume("one", "ok"), ("local", "ok")))
    down = with_targets(volume("pg", "failed", error="target offsite: writing x failed: connection refused"))
    down.archive = "/b/pg.tar.zst"  # the local target holds it
    record(history, "2026-11-24T03:00:00", with_targets(down, ("local", "ok"), ("offsite", "failed")))

    (one, pg) = history.latest_per_volume()
    assert [(t["target"], t["status"], t["ref"]) for t in pg.targets] == [
        ("local", "ok", "local:pg/x.tar.zst"),
        ("offsite", "failed", None),
    ]
    assert pg.targets[1]["error"] == "target offsite: writing x failed: connection refused"
    assert pg.to_json()["targets"] == pg.targets
    lines = render_status(history.latest_run(), OK, [one, pg])
    assert lines[0].endswith(": 1.0 KB, verdict consistent -> /b/one.tar.zst")  # one target, ok: nothing more
    assert lines[1].endswith(": target offsite: writing x failed: connection refused; targets local ok, offsite failed")

    report = report_for(history, parse_week("2026-W48"))
    assert by_volume(report)["pg"]["targets"] == {
        "local": {"ok": 2, "failed": 0, "skipped": 0},
        "offsite": {"ok": 1, "failed": 1, "skipped": 0},
    }
    assert render_report(report)[-1] == "targets: pg (policy db): offsite failed in 1 of 2 runs"
    from coord.report_html import render_html

    page = render_html(report, history.volume_runs(), at("2026-11-30T00:00:00"), node="<node-a>")
    assert '<div class="error">targets: pg (policy db): offsite failed in 1 of 2 runs</div>' in page
    assert '<div class="period">node <span class="node">&lt;node-a&gt;</span>; ' in page  # the node, escaped


def test_a_history_of_version_2_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    from coord.history import MIGRATIONS

    path = tmp_path / "state" / "history.sqlite3"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as connection:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            connection.execute(statement)
        connection.execute("PRAGMA user_version = 2")
        connection.execute(
            "INSERT INTO runs (started_at, status, trigger, pid, host, policies) "
            "VALUES ('2026-11-20T03:00:00.000000Z', 'ok', 'manual', 1, 'h', '[]')"
        )
        connection.execute(
            "INSERT INTO volume_runs (run_id, started_at, volume, policy, strategy, status, warnings, warning_count, "
            "downtime_s, size, duration_s, entries) "
            "VALUES (1, '2026-11-20T03:00:00.000000Z', 'pg', 'db', 'live', 'ok', '{}', 0, 0, 10, 1, 3)"
        )
        connection.execute(
            "INSERT INTO drills (started_at, finished_at, volume, status, trigger, entries, files_hashed, "
            "bytes_hashed, duration_s, problems) "
            "VALUES ('2026-11-20T04:00:00.000000Z', '2026-11-20T04:00:01.000000Z', 'pg', 'ok', 'manual', 3, 1, 5, "
            "1, '[]')"
        )
        connection.commit()
    history = History(tmp_path / "state")
    (row,) = history.latest_per_volume()
    assert (row.volume, row.entries, row.targets) == ("pg", 3, [])
    assert history.last_drills()["pg"].target is None
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def drill_row(target: str, status: str, minute: int) -> DrillRow:
    started = at("2026-11-20T04:00:00") + timedelta(minutes=minute)
    problems = [] if status == "ok" else [f"target {target}: listing x failed"]
    return DrillRow(0, started, started, "pg", None, status, "manual", 0, 0, 0, 0.0, problems, target)


def test_a_volumes_last_drill_is_a_failure_on_any_target_until_that_target_passes(tmp_path: Path) -> None:
    """Drills run per target; a pass on one target after a failure on another must not hide the failure."""
    history = History(tmp_path / "state")
    history.record_drill(drill_row("cloud", "failed", 0))
    history.record_drill(drill_row("local", "ok", 1))
    last = history.last_drills()["pg"]
    assert (last.target, last.status) == ("cloud", "failed")
    history.record_drill(drill_row("cloud", "ok", 2))
    last = history.last_drills()["pg"]
    assert (last.target, last.status) == ("cloud", "ok")
    from coord.report import drill_cell

    assert drill_cell(drill_row("cloud", "failed", 3)) == "FAIL 2026-11-20 04:03:00Z (cloud)"
