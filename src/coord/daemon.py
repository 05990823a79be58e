"""`coord daemon`: run backups on a cron schedule in the foreground, one line per event on stdout.

    record the daemon -> recover what a dead run left -> loop: wait for the next fire time (+ jitter)
        -> run_and_record (one run at a time: this loop is sequential, and the run lock keeps manual runs apart)

SIGTERM/SIGINT while waiting end the daemon at once; during a run they interrupt it the way they interrupt
`coord backup` (every container coord changed is put back first, the run is recorded `interrupted`), then the
daemon ends. Either way it exits 0: it stopped cleanly, as asked. Fire times missed while a long run was still
going are skipped (and logged), never caught up in a burst. Policies are re-read for every run; the defaults
file (notifications) is read when the daemon starts.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from coord.docker_ops import Engine
from coord.errors import CoordError
from coord.history import History
from coord.journal import Journal
from coord.lock import run_lock
from coord.notify import Delivery, Notifier
from coord.recording import SCHEDULE, RecordedRun, Watch, run_and_record
from coord.recovery import recover
from coord.render import archived_line, run_line
from coord.results import RunResult, VolumeResult, VolumeStatus
from coord.runner import BackupRequest
from coord.schedule import Schedule
from coord.signals import Interrupted, termination_raises
from coord.timestamps import utc_iso

log = logging.getLogger("coord.daemon")

LOG_FORMATS = ("text", "json")
MAX_NAP_S = 30.0  # wake up at least this often, so a changed wall clock (NTP step, suspend) is noticed


class EventLog:
    """One line per event: `<UTC time> <event>: <message>`, or a JSON object with the same and more fields."""

    def __init__(self, stream: TextIO, log_format: str = "text") -> None:
        self.stream = stream
        self.json = log_format == "json"

    def emit(self, event: str, message: str, **fields: Any) -> None:
        now = utc_iso(datetime.now(UTC), "milliseconds")
        if self.json:
            line = json.dumps({"time": now, "event": event, "message": message, **fields})
        else:
            line = f"{now} {event}: {message}"
        self.stream.write(line + "\n")
        self.stream.flush()


@dataclass
class StopRequest:
    """Set by SIGTERM/SIGINT while the daemon waits; the signal's name for the log."""

    event: threading.Event
    signal_name: str | None = None

    def set(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGTERM and SIGINT set the returned request instead of killing the process (main thread only)."""
    request = StopRequest(threading.Event())
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: request.set(signum)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def sleep_until(
    moment: datetime, stop: threading.Event, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> bool:
    """Wait until the wall clock reaches `moment`; True when `stop` was set first."""
    while True:
        remaining = (moment - clock()).total_seconds()
        if remaining <= 0:
            return stop.is_set()
        if stop.wait(min(remaining, MAX_NAP_S)):
            return True


def missed_fire_times(schedule: Schedule, due: datetime, now: datetime, limit: int = 1000) -> int:
    """How many fire times after `due` already passed by `now` (skipped because a run was still going)."""
    count, moment = 0, due
    while count < limit:
        moment = schedule.next_after(moment)
        if moment > now:
            break
        count += 1
    return count


def run_daemon(
    request: BackupRequest,
    schedule: Schedule,
    connect: Callable[[], Engine],
    notifier: Notifier | None,
    events: EventLog,
) -> int:
    """Run backups on `schedule` until SIGTERM/SIGINT; returns the exit code (0)."""
    history = History(request.state_dir)
    if notifier is not None:
        notifier.on_delivery = lambda delivery: _emit_delivery(events, delivery)
    with stop_on_signals() as stop:
        history.daemon_started(schedule.expression, schedule.jitter_s)
        events.emit(
            "daemon-started",
            f"schedule {schedule.describe()}, policies {', '.join(request.policy_names) or 'all'}, "
            f"targets {', '.join(target.describe() for target in request.run_targets())}",
            schedule=schedule.expression,
            jitter_s=schedule.jitter_s,
            policies=list(request.policy_names),
            dest=str(request.dest) if request.dest is not None else None,
            targets=[target.name for target in request.run_targets()],
        )
        try:
            _recover_at_start(request, connect, events)
            previous_due: datetime | None = None
            while not stop.event.is_set():
                now = datetime.now(UTC)
                if previous_due is not None and (missed := missed_fire_times(schedule, previous_due, now)):
                    events.emit(
                        "missed",
                        f"{missed} scheduled run(s) passed while the previous run was going: skipped",
                        missed=missed,
                    )
                due = schedule.next_after(now)
                start_at = due + timedelta(seconds=schedule.delay())
                history.daemon_next_run(start_at)
                events.emit("next-run", f"next run at {_time(start_at)}", at=_time(start_at), due=_time(due))
                if sleep_until(start_at, stop.event):
                    break
                previous_due = due
                _scheduled_run(request, connect, history, notifier, events)
        except Interrupted as interruption:
            stop.signal_name = str(interruption)
        finally:
            history.daemon_stopped()
            events.emit("daemon-stopped", f"stopped by {stop.signal_name or 'request'}", signal=stop.signal_name)
    return 0


def _recover_at_start(request: BackupRequest, connect: Callable[[], Engine], events: EventLog) -> None:
    """`coord recover`: put back what a killed run left paused or stopped, before the first scheduled run."""
    try:
        with run_lock(request.state_dir, request.lock_timeout_s), termination_raises():
            report = recover(Journal(request.state_dir), connect())
    except CoordError as error:
        events.emit("recover-failed", f"{error.message} (the first run recovers again)", error=error.message)
        return
    for line in report.restored:
        events.emit("recovered", line)
    for path in report.removed_partials:
        events.emit("recovered", f"removed partial archive {path}")
    for line in report.left_alone:
        events.emit("recovered", line)
    for problem in report.errors:
        events.emit("recover-failed", problem, error=problem)
    if report.nothing_to_do:
        events.emit("recovered", "nothing to recover")


def _scheduled_run(
    request: BackupRequest,
    connect: Callable[[], Engine],
    history: History,
    notifier: Notifier | None,
    events: EventLog,
) -> None:
    """One scheduled run and its events. Interrupted propagates (the daemon stops); other errors are logged."""
    run: int | None = None  # the run's id once its history row exists

    def on_start(record: RecordedRun) -> None:
        nonlocal run
        run = record.run_id
        events.emit("run-started", f"run {run}", run=run)

    try:
        result, record = run_and_record(request, connect, history, notifier, SCHEDULE, Watch(on_start=on_start))
        _emit_result(events, result, record)
    except Interrupted as interruption:
        events.emit(
            "run-interrupted",
            f"run {run} interrupted by {interruption}; every container coord changed was put back",
            run=run,
            signal=str(interruption),
        )
        raise
    except CoordError as error:
        events.emit("run-failed", f"run {run} could not be done: {error.message}", run=run, error=error.message)
    except Exception as error:  # a bug must not stop the schedule; the run is recorded as failed
        log.exception("run failed unexpectedly")
        events.emit(
            "run-failed",
            f"run {run}: unexpected error {type(error).__name__}: {error}",
            run=run,
            error=f"{type(error).__name__}: {error}",
        )


def _emit_delivery(events: EventLog, delivery: Delivery) -> None:
    fields = {"target": delivery.target, "notification": delivery.event}
    if delivery.error:
        events.emit(
            "notify-failed", f"{delivery.event} to {delivery.target}: {delivery.error}", **fields, error=delivery.error
        )
    else:
        events.emit("notified", f"{delivery.event} to {delivery.target}", **fields)


def _emit_result(events: EventLog, result: RunResult, record: RecordedRun) -> None:
    for volume in result.volumes:
        fields = volume.to_json()
        fields.pop("containers")
        fields.pop("hooks")
        events.emit(
            "volume",
            f"{volume.status.value} {volume.volume} (policy {volume.policy}, {volume.strategy}): "
            + _volume_detail(volume),
            run=record.run_id,
            **fields,
        )
    for line in result.recovered:
        events.emit("recovered", line, run=record.run_id)
    failed = sum(1 for v in result.volumes if v.status is VolumeStatus.FAILED)
    events.emit(
        "run-finished",
        run_line(record.run_id, record.status, result),
        run=record.run_id,
        status=record.status,
        volumes=len(result.volumes),
        failed=failed,
        errors=list(result.errors),
    )


def _volume_detail(volume: VolumeResult) -> str:
    if volume.status is VolumeStatus.FAILED:
        return "; ".join(volume.errors)
    if not volume.archive:
        return volume.status.value
    return archived_line(volume.size, volume.verdict, volume.downtime_s, volume.archive)


def _time(moment: datetime) -> str:
    return utc_iso(moment, "seconds")
