"""Undo what a crashed coord run left behind, from its journal: containers paused or stopped, partial files."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from coord.archive import remove_partial
from coord.docker_ops import DockerControl
from coord.journal import CONTAINER, PARTIAL, PAUSED, SNAPSHOT, STOPPED, STOPPED_PAUSED, Journal
from coord.snapshot import remove_snapshot
from coord.strategies import put_back

log = logging.getLogger("coord.recovery")


@dataclass
class RecoveryReport:
    restored: list[str] = field(default_factory=list)  # "unpaused X" / "started X" / "X was already back"
    removed_partials: list[str] = field(default_factory=list)  # partial archives and snapshot directories
    errors: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.restored or self.removed_partials or self.errors)

    def to_json(self) -> dict[str, list[str]]:
        return {"restored": self.restored, "removed_partials": self.removed_partials, "errors": self.errors}


def recover(journal: Journal, docker: DockerControl) -> RecoveryReport:
    """Put back every container a dead run left paused or stopped, and remove its partial archives.

    Call only while holding the run lock: then no live run owns these entries. An entry whose container can't
    be put back is kept, so the next recovery tries again, and reported as an error.
    """
    report = RecoveryReport()
    for entry in journal.entries():
        if entry.kind == SNAPSHOT:
            remove_snapshot(Path(entry.key))
            report.removed_partials.append(entry.key)
            journal.clear(entry)
            continue
        if entry.kind == PARTIAL:
            remove_partial(Path(entry.key))
            report.removed_partials.append(entry.key)
            journal.clear(entry)
            continue
        before = docker.container_state(entry.key) if entry.kind == CONTAINER else None
        error = put_back(docker, entry.key, entry.name, entry.action)
        if error is not None and "no longer exists" not in error:
            report.errors.append(error)
            continue
        if error is not None:
            report.restored.append(f"{entry.name}: {error}")
        elif (entry.action == PAUSED and before == "paused") or (
            entry.action in (STOPPED, STOPPED_PAUSED) and before in ("exited", "created")
        ):
            verb = "unpaused" if entry.action == PAUSED else "started"
            report.restored.append(f"{verb} {entry.name} (left {entry.action} by coord pid {entry.pid})")
        else:
            report.restored.append(f"{entry.name} was already {before}: left alone")
        journal.clear(entry)
        log.warning("recovery: %s", report.restored[-1])
    return report
