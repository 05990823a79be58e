"""`coord daemon`: run backups on a cron schedule in the foreground, one line per event on stdout.

    record the daemon -> recover what a dead run left -> loop: wait for the next fire time (+ jitter)
        -> run_and_record (one run at a time: this loop is sequential, and the run lock keeps manual runs apart)

With `--drill-schedule`, restore drills (drill.py) run in the same loop on their own schedule: whichever is due
first runs first, so a drill never overlaps a backup. A backup whose time passed while a drill was going runs as
soon as the drill ends (it is not skipped); a drill's fire times that pass during a backup give one late drill.

SIGTERM/SIGINT while waiting end the daemon at once; during a run they interrupt it the way they interrupt
`coord backup` (every container coord changed is put back first, the run is recorded `interrupted`), then the
daemon ends. Either way it exits 0: it stopped cleanly, as asked. Fire times missed while a long run was still
going are skipped (and logged), never caught up in a burst. Policies are re-read for every run; the defaults
file (notifications, pings, metrics) is read when the daemon starts. With `--metrics-addr`, a background thread
serves the metrics (coord.metrics, read from the history at each scrape) until the daemon stops.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from coord.delivery import Delivery
from coord.docker_ops import Engine
from coord.drill import DrillRequest, drill_volumes
from coord.encrypt import Decryption
from coord.errors import CoordError
from coord.history import History
from coord.journal import Journal
from coord.lock import run_lock
from coord.metrics import MetricsServer
from coord.monitoring import Monitoring
from coord.node import namespace_node
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


@dataclass(frozen=True)
class ScheduledDrills:
    """`coord daemon --drill-schedule`: restore drills of `request`'s volumes on their own schedule."""

    schedule: Schedule
    request: DrillRequest
    decryption: Callable[[], Decryption] | None = None


@dataclass
class _Upcoming:
    """What the daemon waits for: the next backup (its fire time, and its start with the jitter) and the next
    drill, each announced once and kept until it ran."""

    backup: tuple[datetime, datetime] | None = None
    drill: datetime | None = None


def run_daemon(
    request: BackupRequest,
    schedule: Schedule,
    connect: Callable[[], Engine],
    monitoring: Monitoring | None,
    events: EventLog,
    extras: DaemonExtras | None = None,
) -> int:
    """Run backups on `schedule` (and drills on theirs, `extras.drills`) until SIGTERM/SIGINT, serving the
    metrics on `extras.metrics_addr` (HOST:PORT) when given; returns the exit code (0). Raises UsageError when
    the metrics address cannot be listened on."""
    extras = extras or DaemonExtras()
    history = History(request.state_dir)
    monitoring = monitoring or Monitoring()
    monitoring.on_delivery(lambda delivery: _emit_delivery(events, delivery))
    server = MetricsServer.start(extras.metrics_addr, history, request.policies_dir) if extras.metrics_addr else None
    try:
        return _run_schedule(request, schedule, connect, monitoring, events, _Alongside(server, extras.drills))
    finally:
        if server is not None:
            server.close()


@dataclass(frozen=True)
class DaemonExtras:
    """What the daemon may do besides backups: serve metrics (HOST:PORT), run restore drills on their schedule."""

    metrics_addr: str | None = None
    drills: ScheduledDrills | None = None


@dataclass(frozen=True)
class _Alongside:
    server: MetricsServer | None
    drills: ScheduledDrills | None


def _run_schedule(
    request: BackupRequest,
    schedule: Schedule,
    connect: Callable[[], Engine],
    monitoring: Monitoring,
    events: EventLog,
    alongside: _Alongside,
) -> int:
    drills, server = alongside.drills, alongside.server
    history = History(request.state_dir)
    with stop_on_signals() as stop:
        history.daemon_started(schedule.expression, schedule.jitter_s)
        _announce_start(request, schedule, drills, events)
        if server is not None:
            events.emit("metrics-serving", f"metrics on http://{server.address}/metrics", address=server.address)
        try:
            _recover_at_start(request, connect, events)
            previous_due: datetime | None = None
            upcoming = _Upcoming()
            while not stop.event.is_set():
                now = datetime.now(UTC)
                if upcoming.backup is None:
                    upcoming.backup = _announce_backup(schedule, previous_due, now, history, events)
                due, start_at = upcoming.backup
                if drills is not None:
                    upcoming.drill = upcoming.drill or _announce_drill(drills.schedule, now, events)
                    if upcoming.drill < start_at:
                        if sleep_until(upcoming.drill, stop.event):
                            break
                        upcoming.drill = None
                        _scheduled_drills(drills, connect, events)
                        continue
                if sleep_until(start_at, stop.event):
                    break
                previous_due, upcoming.backup = due, None
                _scheduled_run(request, connect, history, monitoring, events)
        except Interrupted as interruption:
            stop.signal_name = str(interruption)
        finally:
            history.daemon_stopped()
            events.emit("daemon-stopped", f"stopped by {stop.signal_name or 'request'}", signal=stop.signal_name)
    return 0


def _announce_start(
    request: BackupRequest, schedule: Schedule, drills: ScheduledDrills | None, events: EventLog
) -> None:
    drilling = f", drills {drills.schedule.describe()}" if drills else ""
    targets = request.run_targets()
    events.emit(
        "daemon-started",
        f"schedule {schedule.describe()}, policies {', '.join(request.policy_names) or 'all'}, "
        f"targets {', '.join(target.describe() for target in targets)}{drilling}",
        schedule=schedule.expression,
        jitter_s=schedule.jitter_s,
        policies=list(request.policy_names),
        dest=str(request.dest) if request.dest is not None else None,
        targets=[target.name for target in targets],
        drill_schedule=drills.schedule.expression if drills else None,
    )


def _announce_backup(
    schedule: Schedule, previous_due: datetime | None, now: datetime, history: History, events: EventLog
) -> tuple[datetime, datetime]:
    """The next backup's fire time and start (with its jitter), recorded and logged; fire times that passed
    while the previous run was going are logged as missed."""
    if previous_due is not None and (missed := missed_fire_times(schedule, previous_due, now)):
        events.emit(
            "missed", f"{missed} scheduled run(s) passed while the previous run was going: skipped", missed=missed
        )
    due = schedule.next_after(now)
    start_at = due + timedelta(seconds=schedule.delay())
    history.daemon_next_run(start_at)
    events.emit("next-run", f"next run at {_time(start_at)}", at=_time(start_at), due=_time(due))
    return due, start_at


def _announce_drill(schedule: Schedule, now: datetime, events: EventLog) -> datetime:
    start_at = schedule.next_after(now) + timedelta(seconds=schedule.delay())
    events.emit("next-drill", f"next drill at {_time(start_at)}", at=_time(start_at))
    return start_at


def _scheduled_drills(drills: ScheduledDrills, connect: Callable[[], Engine], events: EventLog) -> None:
    """One scheduled round of drills and its events. Interrupted propagates (the daemon stops, the scratch
    volume was removed); other errors are logged and the schedule goes on."""
    events.emit("drill-started", "restore drills")
    try:
        docker = connect() if drills.request.sources.volumes_root is None else None
        node = namespace_node(lambda: docker or connect())  # on a Swarm node, drills read the node's own archives
        results = drill_volumes(replace(drills.request, trigger=SCHEDULE, node=node), docker, drills.decryption)
    except CoordError as error:
        events.emit("drill-failed", f"drills could not be done: {error.message}", error=error.message)
        return
    for result in results:
        events.emit("drill", result.line(), **result.to_json())


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
    monitoring: Monitoring,
    events: EventLog,
) -> None:
    """One scheduled run and its events. Interrupted propagates (the daemon stops); other errors are logged."""
    run: int | None = None  # the run's id once its history row exists

    def on_start(record: RecordedRun) -> None:
        nonlocal run
        run = record.run_id
        events.emit("run-started", f"run {run}", run=run)

    try:
        result, record = run_and_record(request, connect, history, monitoring, SCHEDULE, Watch(on_start=on_start))
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


DELIVERY_EVENTS = {  # kind -> (event when delivered, event when it failed)
    "notify": ("notified", "notify-failed"),
    "ping": ("pinged", "ping-failed"),
    "metrics": ("metrics-written", "metrics-failed"),
}


def _emit_delivery(events: EventLog, delivery: Delivery) -> None:
    done, failed = DELIVERY_EVENTS.get(delivery.kind, DELIVERY_EVENTS["notify"])
    fields = {"target": delivery.target, "notification": delivery.event}
    if delivery.kind == "metrics":
        message = f"{delivery.target}: {delivery.error}" if delivery.error else delivery.target
    else:
        message = f"{delivery.event} to {delivery.target}" + (f": {delivery.error}" if delivery.error else "")
    if delivery.error:
        events.emit(failed, message, **fields, error=delivery.error)
    else:
        events.emit(done, message, **fields)


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
        warnings=list(result.warnings),
    )


def _volume_detail(volume: VolumeResult) -> str:
    if volume.status is VolumeStatus.FAILED:
        return "; ".join(volume.errors)
    if not volume.archive:
        return volume.status.value
    return archived_line(volume.size, volume.verdict, volume.downtime_s, volume.archive)


def _time(moment: datetime) -> str:
    return utc_iso(moment, "seconds")
