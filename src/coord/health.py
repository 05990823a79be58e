"""`coord health`: is the backup healthy? For a Docker HEALTHCHECK or a monitoring probe; reads only the history.

Healthy when the last run to end (scheduled or manual) succeeded and, under a schedule, the next run is not
overdue: a run must have started within jitter + grace seconds of the first fire time after the later of the
last run's start and the daemon's start. A run in progress is never overdue. Unhealthy with the reason otherwise:
the last run failed, was interrupted or crashed, no run was ever recorded, or a scheduled run is overdue.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from coord.history import OK, RUN_WARNING, RUNNING, History
from coord.render import short_time
from coord.schedule import Schedule, parse_schedule

DEFAULT_GRACE_S = 300.0


@dataclass(frozen=True)
class RunView:
    """What health needs of a run: its id, start, effective status (crashed already decided), errors, end."""

    id: int
    started_at: datetime
    status: str
    errors: Sequence[str] = ()
    finished_at: datetime | None = None  # None while running, and for a crashed run

    @property
    def ended_at(self) -> datetime:
        return self.finished_at or self.started_at


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"ok": self.healthy, "healthy": self.healthy, "reason": self.reason}


def check_health(
    runs: Sequence[RunView],
    now: datetime,
    schedule: Schedule | None = None,
    daemon_started: datetime | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> Health:
    """Decide health from the recent runs (any order), the schedule (if any) and when the daemon started."""
    ordered = sorted(runs, key=lambda run: (run.started_at, run.id), reverse=True)
    running = [run for run in ordered if run.status == RUNNING]
    # The last run to *end* decides: a manual run that gave up on the lock while a scheduled one was going
    # must not outlive that run's success.
    finished = sorted((run for run in ordered if run.status != RUNNING), key=lambda run: run.ended_at, reverse=True)
    last = finished[0] if finished else None
    if last is not None and last.status != OK:
        problem = "; ".join(last.errors)
        return Health(
            False,
            f"last run {last.id} ({short_time(last.started_at)}) {last.status}" + (f": {problem}" if problem else ""),
        )
    if schedule is None:
        if last is None:
            return Health(False, "no backup run recorded yet")
        return Health(True, f"last run {last.id} ({short_time(last.started_at)}) ok")
    if running:
        return Health(True, f"run {running[0].id} in progress since {short_time(running[0].started_at)}")
    starts = [run.started_at for run in ordered[:1]] + ([daemon_started] if daemon_started else [])
    if not starts:
        return Health(False, "no backup run recorded yet, and no daemon has started")
    reference = max(starts)
    due = schedule.next_after(reference)
    deadline = due + timedelta(seconds=schedule.jitter_s + grace_s)
    if now > deadline:
        return Health(
            False,
            f"overdue: a scheduled run was due at {short_time(due)} (schedule {schedule.describe()}, grace "
            f"{grace_s:g}s) and none has started since {short_time(reference)}; is `coord daemon` running?",
        )
    head = f"last run {last.id} ({short_time(last.started_at)}) ok" if last else "no run yet"
    return Health(True, f"{head}; next run due {short_time(due)}")


def health_of(
    history: History, now: datetime, schedule: Schedule | None = None, grace_s: float = DEFAULT_GRACE_S
) -> Health:
    """Health from the history database. Without `schedule`, the daemon's (if one runs or died) is used."""
    daemon = history.daemon()
    if daemon is not None and daemon.stopped_at is None:
        if schedule is None:
            schedule = parse_schedule(daemon.schedule, daemon.jitter_s)
        started = daemon.started_at
    else:
        started = None
    here = socket.gethostname()
    views = []
    latest_finished_seen = False
    for run in history.recent_runs(50):
        status = run.effective_status(here)
        problems = [error for error in run.errors if not error.startswith(RUN_WARNING)]
        if status != RUNNING and not latest_finished_seen:
            latest_finished_seen = True
            if status != OK:  # the latest run to end did not end well: say which volumes failed and why, also
                # while a newer run is in progress
                failed = [v for v in history.volume_runs_of(run.id) if v.status == "failed"]
                problems += [f"{v.volume}: {v.error}" for v in failed]
        problems += [error for error in run.errors if error.startswith(RUN_WARNING)]  # after why it failed
        views.append(RunView(run.id, run.started_at, status, problems, run.finished_at))
    return check_health(views, now, schedule, started, grace_s)
