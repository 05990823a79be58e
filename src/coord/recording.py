"""A backup run with its record, its notifications, pings and metrics around it: what `coord backup` and the
daemon call.

    mark crashed runs -> history row `running` -> start pings, notify start -> connect to Docker -> run_backup
        -> history row finalized (ok / failed / interrupted, one row per volume)
        -> run record kept, then published to the run's targets with any kept by earlier runs (run_records.py)
        -> metrics file, end pings, notify success, warning or failure (coord.monitoring)

The runner knows nothing of history or webhooks. The row is finalized whatever happens: a result, a CoordError
(lock held, Docker unreachable, a policy broken since the daemon started), SIGTERM/SIGINT (`interrupted`), or an
unexpected exception (`failed`); only a killed process leaves it `running`, which readers show as `crashed`.
Interrupted runs send no notification: the operator (or the container runtime) asked for the stop; their
dead-man pings say fail, since the backup did not happen.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coord.backup.context import BackupRequest, Progress
from coord.backup.run import run_backup
from coord.delivery import Delivery
from coord.docker_ops import Engine
from coord.errors import CoordError, HistoryError, PolicyError
from coord.history import CRASHED, FAILED, INTERRUPTED, OK, History, RunRow, process_identity
from coord.monitoring import Ending, Monitoring, notification_body
from coord.node import this_node
from coord.notify import LogTail, NotifyEvent
from coord.results import RunResult, VolumeStatus
from coord.run_records import build_record, keep_unpublished, publish_run_record
from coord.signals import Interrupted, deferred, termination_raises
from coord.targets import Target

log = logging.getLogger("coord.recording")

MANUAL = "manual"
SCHEDULE = "schedule"


@dataclass
class RecordedRun:
    """What `run_and_record` did: the run's id in the history, its status, and how the notifications, pings and
    the metrics file went."""

    run_id: int
    status: str = FAILED
    result: RunResult | None = None
    error: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass(frozen=True)
class Watch:
    """What the caller watches a run with: `progress` (the CLI's bar) and `on_start` (the daemon learns the run's
    id as soon as it is recorded)."""

    progress: Progress | None = None
    on_start: Callable[[RecordedRun], None] | None = None


def run_and_record(
    request: BackupRequest,
    connect: Callable[[], Engine],
    history: History,
    monitoring: Monitoring | None = None,
    trigger: str = MANUAL,
    watch: Watch = Watch(),
) -> tuple[RunResult, RecordedRun]:
    """Run one backup (see `run_backup`) and record it; returns its result and record.

    Raises what `run_backup` raises (CoordError, Interrupted), after the run was recorded and notified; raises
    HistoryError before anything is touched when the history cannot be written. A history failure at the end
    becomes a run-level error of the result (the archives are kept; the run exits 1).
    """
    crashed = history.mark_crashed()
    if crashed:
        log.warning("earlier run(s) %s ended without being recorded as finished: shown as crashed", crashed)
        _keep_crashed_records(request, history, crashed)
    started = datetime.now(UTC)
    record = RecordedRun(history.start_run(trigger, request.policy_names, started))
    monitoring = monitoring or Monitoring()
    tail = LogTail(monitoring.notifier.settings.log_lines)
    scopes = monitoring.scopes(request)
    try:
        with tail.capturing(), termination_raises():
            try:
                if watch.on_start:
                    watch.on_start(record)
                record.deliveries += monitoring.started(scopes)
                _notify(monitoring, NotifyEvent.START, record, _ending(record, started, tail), request)
                record.result = run_backup(request, connect(), watch.progress)
                record.status = OK if record.result.ok else FAILED
            except Interrupted as interruption:
                record.status, record.error = INTERRUPTED, f"interrupted by {interruption}"
                raise
            except PolicyError as error:
                record.error = "; ".join(error.problems)
                raise
            except CoordError as error:
                record.error = error.message
                raise
            except Exception as error:
                record.error = f"unexpected error: {type(error).__name__}: {error}"
                raise
            finally:
                with deferred():  # a second signal must not cut the record short
                    _finish(history, record)
    finally:  # outside the signal handling: a SIGTERM now does not turn a recorded success into an interruption
        _publish_record(request, history, record, started, trigger)
        ending = _ending(record, started, tail)
        record.deliveries += monitoring.finished(scopes, ending, request, history)
        if record.status != INTERRUPTED:
            event = NotifyEvent.SUCCESS if record.status == OK else NotifyEvent.FAILURE
            _notify(monitoring, event, record, ending, request)
    assert record.result is not None
    return record.result, record


def _finish(history: History, record: RecordedRun) -> None:
    try:
        history.finish_run(record.run_id, record.status, record.result, [record.error] if record.error else [])
    except HistoryError as error:
        log.error("%s", error.message)
        if record.result is not None:
            record.result.errors.append(f"the run could not be recorded: {error.message}")
            record.status = FAILED


def _keep_crashed_records(request: BackupRequest, history: History, crashed: list[int]) -> None:
    """A run killed before it finished (SIGKILL, out of memory, power cut) published no record: its record
    (status crashed, no volume: its history has none) is kept now and goes out with this run's."""
    try:
        targets = request.run_targets()
        runs = [run for run in history.runs(status=CRASHED) if run.id in crashed]
    except CoordError as error:  # no target (this run fails for it), or the history unreadable
        log.warning("crashed runs' records not kept: %s", error.message)
        return
    for run in runs:
        for problem in keep_unpublished(request.state_dir, targets, build_record(this_node(), run, None)):
            log.warning("%s", problem)


def _publish_record(
    request: BackupRequest, history: History, record: RecordedRun, started: datetime, trigger: str
) -> None:
    """The run's record to its targets (run_records.py), after its history row is final. An interrupted run's
    record is only kept: the process was asked to stop, and the next run publishes it. What could not be
    published is a warning of the run (its output, JSON `warnings`, and its history row), never a failure."""
    try:
        targets = _record_targets(request.run_targets(), record.result)
    except CoordError:  # nowhere to publish to: the run itself failed for that, and its history says so
        return
    document = build_record(this_node(), _run_row(request, record, started, trigger), record.result)
    if record.status == INTERRUPTED:
        warnings = keep_unpublished(request.state_dir, targets, document)
    else:
        warnings = publish_run_record(request.state_dir, targets, document)
    if not warnings:
        return
    if record.result is not None:
        record.result.warnings += warnings
    try:
        history.note_run(record.run_id, warnings)
    except HistoryError as error:
        log.error("%s", error.message)


def _record_targets(targets: list[Target], result: RunResult | None) -> list[Target]:
    """Where a run's record goes: the targets its volumes' archives went to or were meant for (a policy's
    `targets:`, --target), else, when no volume got as far as a target, every target of the run (a run that failed
    early is recorded wherever it could have written)."""
    used = {target.target for volume in (result.volumes if result else []) for target in volume.targets}
    return [target for target in targets if target.name in used] or targets


def _run_row(request: BackupRequest, record: RecordedRun, started: datetime, trigger: str) -> RunRow:
    """The run as its history row now holds it (History.finish_run): the same model, for its run record."""
    volumes = record.result.volumes if record.result else []
    pid = os.getpid()
    return RunRow(
        id=record.run_id,
        started_at=started,
        finished_at=datetime.now(UTC),
        status=record.status,
        trigger=trigger,
        pid=pid,
        process=process_identity(pid),
        host=socket.gethostname(),
        policies=list(request.policy_names),
        errors=[*(record.result.errors if record.result else []), *([record.error] if record.error else [])],
        volume_count=len(volumes),
        failed_count=sum(1 for volume in volumes if volume.status is VolumeStatus.FAILED),
    )


def _ending(record: RecordedRun, started: datetime, tail: LogTail) -> Ending:
    return Ending(record.run_id, record.status, record.result, record.error, started, list(tail.lines))


def _notify(
    monitoring: Monitoring, event: NotifyEvent, record: RecordedRun, ending: Ending, request: BackupRequest
) -> None:
    """The `webhooks:` of the defaults that want `event`."""
    notifier = monitoring.notifier
    if notifier.wants(event):
        record.deliveries += notifier.send(event, notification_body(event, ending, ending.result, request))
