"""A backup run with its record and its notifications around it: what `coord backup` and the daemon call.

    mark crashed runs -> history row `running` -> notify start -> connect to Docker -> run_backup
        -> history row finalized (ok / failed / interrupted, one row per volume) -> notify success or failure

The runner knows nothing of history or webhooks. The row is finalized whatever happens: a result, a CoordError
(lock held, Docker unreachable, a policy broken since the daemon started), SIGTERM/SIGINT (`interrupted`), or an
unexpected exception (`failed`); only a killed process leaves it `running`, which readers show as `crashed`.
Interrupted runs send no notification: the operator (or the container runtime) asked for the stop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from coord import __version__
from coord.backup.context import BackupRequest, Progress
from coord.backup.run import run_backup
from coord.docker_ops import Engine
from coord.errors import CoordError, HistoryError, PolicyError
from coord.history import FAILED, INTERRUPTED, OK, History
from coord.notify import Delivery, LogTail, Notifier, NotifyEvent
from coord.render import run_line
from coord.results import RunResult
from coord.signals import Interrupted, deferred, termination_raises
from coord.timestamps import utc_iso

log = logging.getLogger("coord.recording")

MANUAL = "manual"
SCHEDULE = "schedule"


@dataclass
class RecordedRun:
    """What `run_and_record` did: the run's id in the history, its status, and how the notifications went."""

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
    notifier: Notifier | None = None,
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
    tail = LogTail(notifier.settings.log_lines if notifier else 0)
    try:
        with tail.capturing(), termination_raises():
            try:
                if watch.on_start:
                    watch.on_start(record)
                _notify(notifier, NotifyEvent.START, record, started, tail, request)
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
        if record.status != INTERRUPTED:
            event = NotifyEvent.SUCCESS if record.status == OK else NotifyEvent.FAILURE
            _notify(notifier, event, record, started, tail, request)
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


def _notify(
    notifier: Notifier | None,
    event: NotifyEvent,
    record: RecordedRun,
    started: datetime,
    tail: LogTail,
    request: BackupRequest,
) -> None:
    if notifier is None or not notifier.wants(event):
        return
    record.deliveries += notifier.send(event, notification_body(event, record, started, list(tail.lines), request))


def notification_body(
    event: NotifyEvent, record: RecordedRun, started: datetime, log_tail: list[str], request: BackupRequest
) -> dict[str, Any]:
    """The JSON a webhook receives (besides `event`): a one-line `text` for chat tools, the run, its result."""
    result = record.result
    if event is NotifyEvent.START:
        text = f"coord on {socket.gethostname()}: backup run {record.run_id} started"
    elif result is not None:
        text = f"coord on {socket.gethostname()}: backup {run_line(record.run_id, record.status, result)}"
    else:
        text = f"coord on {socket.gethostname()}: backup run {record.run_id} could not be done: {record.error}"
    return {
        "text": text,
        "tool": "coord",
        "tool_version": __version__,
        "host": socket.gethostname(),
        "run": {
            "id": record.run_id,
            "status": "running" if event is NotifyEvent.START else record.status,
            "started_at": utc_iso(started),
            "policies": list(request.policy_names),
            "error": record.error,
        },
        "result": result.to_json() if result is not None else None,
        "log_tail": log_tail,
    }
