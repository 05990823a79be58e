"""Undo what a crashed coord run left behind, from its journal: containers paused or stopped, partial files.

Each journal entry is handled on its own by the handler for its kind (`HANDLERS`): one entry that cannot be
handled (a file it names is now a link, the engine refuses, the entry is from a newer coord) is reported as an
error and kept for the next recovery, and never stops the others from being handled.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coord.archive import remove_partial
from coord.backup.quiesce import put_back
from coord.backup.upload import clean_up
from coord.docker_ops import Engine
from coord.errors import CoordError
from coord.fsutil import NotOurs, parse_identity
from coord.journal import (
    CLAIM,
    CONTAINER,
    PARTIAL,
    PAUSED,
    PUBLISH,
    REMOTE_PUBLISH,
    RESTORE,
    SERVICE,
    SNAPSHOT,
    STOPPED,
    STOPPED_PAUSED,
    Journal,
    JournalEntry,
)
from coord.publish import recover_publish
from coord.restore_swap import recover_restore
from coord.snapshot import remove_snapshot
from coord.swarm import Claim, release_claim, scale_back
from coord.targets.rclone import Rclone

log = logging.getLogger("coord.recovery")


@dataclass
class RecoveryReport:
    restored: list[str] = field(default_factory=list)  # "unpaused X" / "started X" / "X was already back"
    removed_partials: list[str] = field(default_factory=list)  # partial archives and snapshot directories
    errors: list[str] = field(default_factory=list)
    # what an entry named but coord could not prove it made (a link planted at a snapshot's name): untouched,
    # the entry cleared, since it is not coord's to put right
    left_alone: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.restored or self.removed_partials or self.errors or self.left_alone)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "restored": self.restored,
            "removed_partials": self.removed_partials,
            "errors": self.errors,
            "left_alone": self.left_alone,
        }


class EntryNotDone(Exception):
    """A handler could not complete its entry; the message says why and what the operator can do."""


# A handler puts right what one entry records, adding what it did to the report. It returns normally when the
# entry is done with (it is then cleared) and raises EntryNotDone (or OSError/CoordError) to keep it.
Handler = Callable[[JournalEntry, Engine, RecoveryReport], None]


def recover(journal: Journal, docker: Engine) -> RecoveryReport:
    """Put back every container a dead run left paused or stopped, and remove its partial archives.

    Call only while holding the run lock: then no live run owns these entries. An entry that can't be handled
    is kept, so the next recovery tries again, and reported as an error; the other entries are handled anyway.
    """
    report = RecoveryReport()
    # Files first, containers last: a volume's half-done work (a restore swap, a publish) is completed or rolled
    # back before any container that uses it runs again. Claims are released after the services they guard are
    # scaled back, and kept while a service could not be (no other node should act on it meanwhile).
    order = {CONTAINER: 1, SERVICE: 1, CLAIM: 2}
    kept: set[str] = set()
    for entry in sorted(journal.entries(), key=lambda item: order.get(item.kind, 0)):
        handler = HANDLERS.get(entry.kind)
        if handler is None:
            report.errors.append(f"journal entry {entry.file_name}: unknown kind {entry.kind!r} (kept)")
            continue
        if entry.kind == CLAIM and entry.key in kept:
            report.errors.append(f"claim on service {entry.name}: kept while the service is not scaled back")
            continue
        error = _handle(handler, entry, docker, report)
        if error is not None:
            report.errors.append(error)
            kept.add(entry.key)
            continue
        journal.clear(entry)
    return report


def _handle(handler: Handler, entry: JournalEntry, docker: Engine, report: RecoveryReport) -> str | None:
    """Run one entry's handler: None when the entry is done with, else why it is kept."""
    try:
        handler(entry, docker, report)
    except EntryNotDone as error:
        return str(error)
    except CoordError as error:
        return f"{entry.kind} {entry.name or entry.key}: {error.message} (kept for next recovery)"
    except OSError as error:
        return f"{entry.kind} {entry.key}: {error.strerror or error} (kept for the next `coord recover`)"
    return None


def _recover_snapshot(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    """Remove the snapshot directory a dead run left, only if it is the one it made (the journaled identity);
    whatever else is at that name (a link a container planted) is never followed, and is left alone."""
    try:
        removed = remove_snapshot(Path(entry.key), parse_identity(entry.identity))
    except NotOurs as error:
        report.left_alone.append(f"{entry.key}: {error.why}; left alone (not coord's: remove it by hand if unwanted)")
        log.warning("recovery: %s", report.left_alone[-1])
        return
    if removed:
        report.removed_partials.append(entry.key)


def _recover_partial(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    existed = os.path.lexists(entry.key)
    remove_partial(Path(entry.key))
    if existed:
        report.removed_partials.append(entry.key)


def _recover_publish(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    """An archive a dead run was publishing: complete it (its whole manifest was written) or remove it."""
    done = recover_publish(entry)
    for archive in done.completed:
        report.restored.append(f"published {archive} (coord pid {entry.pid} died after writing its manifest)")
        log.warning("recovery: %s", report.restored[-1])
    report.removed_partials.extend(done.removed)


def _recover_remote_publish(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    """An upload a dead run left on a target: its temporaries go, and the archive too when its manifest never
    landed (backup/upload.py). The target is reached with the rclone configuration of that run (its config file,
    or this process's RCLONE_CONFIG_* environment); unreachable, the entry is kept for the next recovery."""
    try:
        identity = json.loads(entry.identity)
        target, config = str(identity["target"]), identity.get("config")
    except (ValueError, KeyError, TypeError):
        raise EntryNotDone(f"journal entry {entry.file_name}: unreadable target {entry.identity!r} (kept)") from None
    rclone = Rclone(target, Path(config) if config else None)
    removed = clean_up(rclone, entry.key)  # RemoteError (a CoordError): kept, reported
    report.removed_partials.extend(f"target {target}: {path}" for path in removed)


def _recover_restore(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    # A restore killed while extracting: its staging directory goes. Killed during the swap: the swap is
    # completed, so the volume holds the whole restored tree before its containers start again.
    done = recover_restore(entry)
    report.removed_partials.append(done)
    log.warning("recovery: %s", done)


def _recover_container(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    before = docker.container_state(entry.key)
    error = put_back(docker, entry.key, entry.name, entry.action)
    if error is not None and "no longer exists" not in error:
        raise EntryNotDone(error)
    if error is not None:
        report.restored.append(f"{entry.name}: {error}")
    elif (entry.action == PAUSED and before == "paused") or (
        entry.action in (STOPPED, STOPPED_PAUSED) and before in ("exited", "created")
    ):
        verb = "unpaused" if entry.action == PAUSED else "started"
        report.restored.append(f"{verb} {entry.name} (left {entry.action} by coord pid {entry.pid})")
    else:
        report.restored.append(f"{entry.name} was already {before}: left alone")
    log.warning("recovery: %s", report.restored[-1])


def _recover_service(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    """A replicated Swarm service a dead run scaled to 0: back to the replica count journaled, if still at 0."""
    try:
        replicas = int(entry.identity)
    except ValueError:
        unreadable = f"journal entry {entry.file_name}: unreadable replica count {entry.identity!r} (kept)"
        raise EntryNotDone(unreadable) from None
    before = docker.service(entry.key)
    error = scale_back(docker, entry.key, entry.name, replicas)
    if error is not None:
        raise EntryNotDone(error)
    if before is None:
        report.restored.append(f"service {entry.name} no longer exists; nothing to scale back")
    elif before.replicas == 0:
        report.restored.append(f"scaled service {entry.name} back to {replicas} (left at 0 by coord pid {entry.pid})")
    else:
        report.restored.append(f"service {entry.name} was already at {before.replicas} replicas: left alone")
    log.warning("recovery: %s", report.restored[-1])


def _recover_claim(entry: JournalEntry, docker: Engine, report: RecoveryReport) -> None:
    """A Swarm service claim a dead run held: removed if the service still carries that very claim."""
    claim = Claim.from_label(entry.identity)
    if claim is None:
        raise EntryNotDone(f"journal entry {entry.file_name}: unreadable claim {entry.identity!r} (kept)")
    error = release_claim(docker, entry.key, claim)
    if error is not None:
        raise EntryNotDone(error)
    report.restored.append(f"released the claim on service {entry.name} (held by coord pid {entry.pid})")
    log.warning("recovery: %s", report.restored[-1])


HANDLERS: dict[str, Handler] = {
    SNAPSHOT: _recover_snapshot,
    PARTIAL: _recover_partial,
    PUBLISH: _recover_publish,
    REMOTE_PUBLISH: _recover_remote_publish,
    RESTORE: _recover_restore,
    CONTAINER: _recover_container,
    SERVICE: _recover_service,
    CLAIM: _recover_claim,
}
