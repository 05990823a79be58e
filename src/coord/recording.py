"""A backup run with its record, its notifications, pings and metrics around it: what `coord backup` and the
daemon call.

    mark crashed runs -> history row `running` -> start pings, notify start -> connect to Docker -> run_backup
        -> history row finalized (ok / failed / interrupted, one row per volume)
        -> metrics file, end pings, notify success, warning or failure (coord.monitoring)

The runner knows nothing of history or webhooks. The row is finalized whatever happens: a result, a CoordError
(lock held, Docker unreachable, a policy broken since the daemon started), SIGTERM/SIGINT (`interrupted`), or an
unexpected exception (`failed`); only a killed process leaves it `running`, which readers show as `crashed`.
Interrupted runs send no notification: the operator (or the container runtime) asked for the stop; their
dead-man pings say fail, since the backup did not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coord.backup.context import BackupRequest, Progress
from coord.backup.run import run_backup
from coord.delivery import Delivery
from coord.docker_ops import Engine
from coord.errors import CoordError, HistoryError, PolicyError
from coord.history import FAILED, INTERRUPTED, OK, History
from coord.monitoring import Ending, Monitoring, notification_body
from coord.notify import LogTail, NotifyEvent
from coord.results import RunResult
from coord.signals import Interrupted, deferred, termination_raises

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


def _ending(record: RecordedRun, started: datetime, tail: LogTail) -> Ending:
    return Ending(record.run_id, record.status, record.result, record.error, started, list(tail.lines))


def _notify(
    monitoring: Monitoring, event: NotifyEvent, record: RecordedRun, ending: Ending, request: BackupRequest
) -> None:
    """The `webhooks:` of the defaults that want `event`."""
    notifier = monitoring.notifier
    if notifier.wants(event):
        record.deliveries += notifier.send(event, notification_body(event, ending, ending.result, request))
