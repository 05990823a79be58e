"""Strategy snapshot, per volume: link its tree while the containers run, bring the links up to date while they
are paused (snapshot.py at the top level does the file work), drop the snapshot once archived. Each snapshot is
journaled: a crash leaves it to `coord recover`."""

from __future__ import annotations

import logging
from pathlib import Path

from coord.backup.archive import COORD_ROOT_PREFIXES
from coord.backup.context import RunContext
from coord.backup.job import Job, TakenSnapshot, clear_entry
from coord.errors import CoordError, JournalError
from coord.fsutil import NotOurs, format_identity, parse_identity
from coord.journal import SNAPSHOT
from coord.snapshot import complete_snapshot, new_snapshot_path, prepare_snapshot, remove_snapshot

log = logging.getLogger("coord")


def link_snapshot(job: Job, ctx: RunContext) -> bool:
    """Journal and link the volume's snapshot while its containers run; False (the reason recorded) if refused.

    The entry is written before the directory is made, and again with the directory's identity as soon as it
    exists (before anything is linked into it): recovery removes only that directory, never what else may be
    at its name."""
    path = new_snapshot_path(job.source)
    try:
        taken = job.snapshot = TakenSnapshot(ctx.journal.record(SNAPSHOT, str(path), SNAPSHOT, job.volume))
    except JournalError as error:
        job.result.errors.append(f"no snapshot made: {error.message}")
        return False

    def journal_identity(identity: tuple[int, int]) -> None:
        taken.entry = ctx.journal.record(SNAPSHOT, str(path), SNAPSHOT, job.volume, format_identity(identity))

    try:
        taken.snapshot = prepare_snapshot(job.source, path, journal_identity, COORD_ROOT_PREFIXES)
    except CoordError as error:
        drop_snapshot(job, ctx)
        job.result.errors.append(error.message)
        return False
    return True


def update_snapshot(job: Job) -> None:
    """While paused: bring the linked snapshot up to date (the pause lasts as long as this)."""
    if job.snapshot is None or job.snapshot.snapshot is None:
        return
    try:
        counts = complete_snapshot(job.source, job.snapshot.snapshot)
    except CoordError as error:
        job.snapshot.snapshot = None  # complete_snapshot removed it; the journal entry goes with drop_snapshot
        job.result.errors.append(error.message)
        return
    log.info(
        "%s: snapshot brought up to date while paused: %d linked, %d removed, %d new directories, %d directory "
        "times set",
        job.volume,
        counts.linked,
        counts.removed,
        counts.copied_directories,
        counts.directories_fixed,
    )


def drop_snapshot(job: Job, ctx: RunContext) -> None:
    """Remove the volume's snapshot directory, if any, and its journal entry. Never raises for the directory:
    something that is not coord's at its name is left alone (and reported); a failure to remove keeps the
    entry for `coord recover` (and is reported)."""
    taken, job.snapshot = job.snapshot, None
    if taken is None:
        return
    if taken.snapshot is not None:
        taken.snapshot.close()
    entry = taken.entry
    try:
        remove_snapshot(Path(entry.key), parse_identity(entry.identity))
    except NotOurs as error:
        job.result.errors.append(f"snapshot {entry.key}: {error.why}; left alone")
    except OSError as error:
        job.result.errors.append(
            f"snapshot {entry.key} could not be removed: {error.strerror or error}; `coord recover` removes it"
        )
        return
    clear_entry(ctx, entry, job.result)
