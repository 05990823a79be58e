"""The archive step: one volume (or its snapshot) to its .partial file, journaled so a crash of coord leaves
nothing behind; the archive's final name is decided here, its publish in publish.py.

With no local target the archive streams to the first remote target while it is written, except when it is read
while the containers wait (pause, stop: `spool`): an upload's speed must not bound their downtime, so it goes to a
local spool file, <state dir>/uploads/<volume>/<file>.partial, journaled like any partial, which publish.py
uploads once the containers are back and then removes."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from coord.archive import ArchiveSettings, compressor_command, create_archive
from coord.backup.context import RunContext
from coord.backup.job import Job, Written, clear_entry
from coord.backup.restic import ResticArchiveCheck, ResticSink, archive_tags
from coord.backup.upload import RemoteArchive, RemoteArchiveCheck, RemoteStore, record_upload
from coord.errors import JournalError
from coord.excludes import ExcludeMatcher
from coord.journal import PARTIAL, WRITING, JournalEntry
from coord.policy import Strategy
from coord.restore_swap import STAGING_PREFIX
from coord.signals import deferred
from coord.snapshot import SNAPSHOT_PREFIX
from coord.targets.rclone import RemoteError
from coord.timestamps import file_stamp
from coord.verify import WrittenArchiveCheck

log = logging.getLogger("coord")

# coord's own directories at a volume root (snapshots, restore staging): never archived, never copied into a
# snapshot, whatever a container planted there.
COORD_ROOT_PREFIXES = (SNAPSHOT_PREFIX, STAGING_PREFIX)
UPLOADS_DIRECTORY = "uploads"  # <state dir>/uploads/<volume>: spooled archives; names only when streamed


def archive_names(volume: str, started: datetime, suffix: str) -> Iterator[str]:
    """The names an archive of `volume` started at `started` may take, in order: <volume>-<UTC stamp><suffix>,
    then with a counter (-1, -2, ...) for a second already taken. Archives are ordered by their manifest's
    start time, never by name."""
    stamp = file_stamp(started)
    yield f"{volume}-{stamp}{suffix}"
    for counter in itertools.count(1):
        yield f"{volume}-{stamp}-{counter}{suffix}"


def _taken_nowhere_else(file_name: str) -> bool:
    return False


def archive_path(
    dest: Path, volume: str, started: datetime, suffix: str, taken: Callable[[str], bool] = _taken_nowhere_else
) -> Path:
    """<dest>/<volume>/<first of archive_names> that is neither there (as an archive or its .partial) nor
    `taken` (on the remote target the archive streams to: Job.name_taken_on_primary)."""
    directory = dest / volume
    return next(
        directory / name
        for name in archive_names(volume, started, suffix)
        if not ((directory / name).exists() or (directory / f"{name}.partial").exists() or taken(name))
    )


def matcher_of(job: Job) -> ExcludeMatcher:
    """The policy's excludes, plus coord's own directories at the volume root (a snapshot left by a dead run, a
    restore's staging directory, or links a container planted at those names): never archived."""
    return ExcludeMatcher.of([*job.plan.policy.policy.exclude, *(f"/{prefix}*" for prefix in COORD_ROOT_PREFIXES)])


def _check_for(job: Job, remote: RemoteArchive | None, final: Path, started: datetime) -> WrittenArchiveCheck:
    """How the archive is stored and checked: to its local .partial file, streamed to the remote, or streamed
    into a restic repository (backup/restic.py)."""
    compression = job.compression
    if job.primary.is_restic:
        return ResticArchiveCheck(ResticSink(job.primary, final.name, archive_tags(job, started.isoformat())))
    if remote is None:
        return WrittenArchiveCheck(compression, job.encryption)
    return RemoteArchiveCheck(compression, job.encryption, RemoteStore(remote, job.encryption, job.extra_hashes))


def _record_archive(job: Job, ctx: RunContext, partial: Path, remote: RemoteArchive | None) -> JournalEntry:
    """Journal the archive about to be written (its local partial, or its remote upload). A SIGTERM while the
    entry is written is held until it is on disk, then the local entry is cleared and the signal raised; a
    remote entry is left to `coord recover` (no network work while interrupted). Raises JournalError."""
    recorded: JournalEntry | None = None
    try:
        with deferred():
            if remote is None:
                recorded = ctx.journal.record(PARTIAL, str(partial), WRITING, job.volume)
            else:
                recorded = record_upload(ctx.journal, remote)
    except JournalError:
        raise
    except BaseException:
        if recorded is not None and remote is None:
            clear_entry(ctx, recorded, job.result)
        raise
    return recorded


def _final_path(job: Job, ctx: RunContext, started: datetime, *, spooled: bool, streamed: bool) -> Path | None:
    """The archive's final path: in the primary target's directory, or with no local target the same name decided
    in a directory of coord's own (the spool's, if any). None, with the problem recorded on the result, when the
    destination cannot be written or the remote asked."""
    dest = job.local_dest or ctx.request.state_dir / UPLOADS_DIRECTORY
    try:
        if spooled:
            (dest / job.volume).mkdir(mode=0o700, parents=True, exist_ok=True)
        # Streamed, the name must be free on the remote too. Spooled, publish.py asks once the containers are back:
        # a lookup on the network would lengthen their downtime.
        taken = job.name_taken_on_primary if streamed else _taken_nowhere_else
        return archive_path(dest, job.volume, started, job.file_suffix, taken)
    except OSError as error:
        job.result.errors.append(f"{'spool directory' if spooled else 'destination'} {dest}: {error.strerror}")
    except RemoteError as error:  # the target cannot be reached: nothing is written for it
        job.result.errors.append(f"nothing archived: {error.message}")
    return None


def archive_job(
    job: Job, ctx: RunContext, strategy: Strategy, source: Path | None = None, *, spool: bool = False
) -> None:
    """Archive the job's volume (or its snapshot, `source`) to its .partial file, or stream it to its remote
    target; with `spool` (read inside the window) and no local target, to a local spool file instead.
    `job.written` is set when archiving ran. A destination or journal problem is recorded on the result (nothing
    written); an exception of archiving is raised after the journal entry was cleared."""
    policy = job.plan.policy.policy
    started, clock = datetime.now(UTC), time.monotonic()
    spooled = spool and job.local_dest is None and not job.primary.is_restic  # restic reads the stream itself
    streamed = job.local_dest is None and not spooled and not job.primary.is_restic
    final = _final_path(job, ctx, started, spooled=spooled, streamed=streamed)
    if final is None:
        return
    partial = final.with_name(final.name + ".partial")
    remote = job.remote_archive(job.primary, final.name) if streamed else None
    check = _check_for(job, remote, final, started)
    try:
        entry = _record_archive(job, ctx, partial, remote)
    except JournalError as error:  # not recorded, so not written: the volume fails, the containers go back
        job.result.errors.append(f"nothing archived: {error.message}")
        return
    snapshot = job.snapshot.snapshot if source is not None and job.snapshot else None
    try:
        log.info("%s: archiving %s (policy %s)", job.volume, job.source, job.plan.policy.name)
        if ctx.progress:
            ctx.progress.begin(job.volume)
        settings = ArchiveSettings(
            matcher_of(job),
            compressor_command(job.compression, policy.compression_level, policy.compression_threads),
            check.write,
            policy.consistency,
            content_unchanged=snapshot.content_unchanged if snapshot else None,
            on_progress=ctx.progress.update if ctx.progress else None,
            expect=tuple(policy.expect),
            extra_hashes=job.extra_hashes,
        )
        outcome = create_archive(source or job.source, partial, settings)
    except BaseException:
        if remote is None:  # a remote temporary is left to `coord recover`: no network work while interrupted
            clear_entry(ctx, entry, job.result)  # never in place of the error being raised
        raise
    finally:
        check.end_writing()
        if ctx.progress:
            ctx.progress.end()
    job.written = Written(final, entry, outcome, check, strategy, started, clock, remote=remote, spooled=spooled)
    if spooled:
        log.info("%s: spooled to %s; uploaded once the containers are back", job.volume, partial)
