"""Publishing to a restic target (targets/restic.py): only the sink after tar changes.

A volume whose targets are restic only: coord's **uncompressed** tar stream (compression `none`: restic
compresses, encrypts and deduplicates) goes into `restic backup --stdin` while tar writes it (`ResticSink`), and
is listed on its way as for every target (`ResticArchiveCheck`: entries and member list against tar's index; the
bytes restic says it read against the bytes coord sent). Then, once the status is decided, the manifest goes in as
a second small snapshot tagged with the archive snapshot's id (`publish_to_restic`): without it the archive is not
complete. A failed volume's archive snapshot is forgotten (`discard_from_restic`).

A restic target is a volume's only target (job.admit_targets says so otherwise): it takes the uncompressed stream,
which no other target wants.
"""

from __future__ import annotations

import logging
from pathlib import Path

from coord.archive import ArchiveOutcome
from coord.backup.context import RunContext
from coord.backup.job import Job, Written, clear_entry
from coord.backup.manifest import build_manifest
from coord.backup.upload import manifest_bytes
from coord.errors import CoordError
from coord.manifest import MANIFEST_SUFFIX
from coord.policy import Compression
from coord.results import TargetResult, TargetStatus, VolumeStatus
from coord.stream_types import ByteStream
from coord.targets import Target
from coord.targets.restic import TAG_ARCHIVE, TAG_COORD, TAG_MANIFEST, BackupSummary, tag
from coord.verify import Expected, ReadBack, WrittenArchiveCheck, compare

log = logging.getLogger("coord")


def archive_tags(job: Job, written_at: str) -> list[str]:
    """The tags of a volume's archive snapshot: coord finds it by them (volume, policy, the run's start)."""
    return [
        TAG_COORD,
        TAG_ARCHIVE,
        tag("volume", job.volume),
        tag("policy", job.plan.policy.name),
        tag("run", written_at),
    ]


class ResticSink:
    """The StreamWriter of a volume whose primary target is a restic repository: the stream goes to `restic
    backup --stdin` as `/<file_name>`; `summary` is set once restic made the snapshot."""

    def __init__(self, target: Target, file_name: str, tags: list[str]) -> None:
        self.target = target
        self.file_name = file_name
        self.tags = tags
        self.summary: BackupSummary | None = None

    def __call__(self, stream: ByteStream, _local: Path) -> None:
        self.summary = self.target.repository().backup_stream(stream, self.file_name, self.tags)


class ResticArchiveCheck(WrittenArchiveCheck):
    """The in-line listing of the uncompressed stream on its way to restic; then the size restic read checked
    against what coord sent (restic's own hashes guarantee what it stored is what it read)."""

    def __init__(self, sink: ResticSink) -> None:
        super().__init__(Compression.NONE, None, sink)
        self.sink = sink

    def read_back(self, partial: Path, outcome: ArchiveOutcome) -> tuple[ReadBack, list[str]]:
        read = self.listed or ReadBack()
        summary = self.sink.summary
        if summary is None:
            read.errors.append(f"target {self.sink.target.name}: restic made no snapshot")
        else:
            read.size = summary.bytes_processed
            if summary.bytes_processed != outcome.size:
                read.errors.append(
                    f"target {self.sink.target.name}: restic read {summary.bytes_processed} bytes, coord sent "
                    f"{outcome.size}"
                )
        expected = Expected(sha256=None, entries=outcome.entries, entries_digest=outcome.entries_digest)
        return read, compare(read, expected)


def sink_of(written: Written) -> ResticSink | None:
    check = written.check
    return check.sink if isinstance(check, ResticArchiveCheck) else None


def manifest_tags(job: Job, written: Written, archive_id: str, manifest: dict[str, object]) -> list[str]:
    """The manifest snapshot's tags: what `coord list` shows, read with one `restic snapshots` call."""
    return [
        TAG_COORD,
        TAG_MANIFEST,
        tag("volume", job.volume),
        tag("of", archive_id),
        tag("status", manifest.get("status")),
        tag("verdict", manifest.get("verdict")),
        tag("size", manifest.get("size")),
        tag("entries", manifest.get("entries")),
        tag("started", written.started.isoformat()),
    ]


def store_manifest(job: Job, written: Written, target: Target, archive_id: str, read: ReadBack) -> str:
    """Write the manifest snapshot for the archive snapshot `archive_id`. Returns the ref; raises CoordError."""
    result = job.result
    result.archive = target.ref(job.volume, written.final.name)  # the manifest names its file
    manifest = build_manifest(job, written, read)
    file_name = written.final.name + MANIFEST_SUFFIX
    target.repository().backup_bytes(
        manifest_bytes(manifest), file_name, manifest_tags(job, written, archive_id, manifest)
    )
    return target.ref(job.volume, written.final.name)


def publish_to_restic(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """The archive snapshot is checked: add its manifest snapshot. On failure the archive snapshot is forgotten
    and the volume fails, naming the target."""
    sink, result, target = sink_of(written), job.result, job.primary
    assert sink is not None and sink.summary is not None
    try:
        ref = store_manifest(job, written, target, sink.summary.snapshot_id, read)
    except CoordError as error:
        forget_quietly(target, sink.summary.snapshot_id)
        result.targets.append(TargetResult(target.name, TargetStatus.FAILED, error=error.message))
        result.status = VolumeStatus.FAILED
        result.archive = result.manifest = None
        result.errors.append(error.message)
        clear_entry(ctx, written.entry, result)
        return
    clear_entry(ctx, written.entry, result)
    result.manifest = ref + MANIFEST_SUFFIX
    result.targets.append(TargetResult(target.name, TargetStatus.OK, ref))
    log.info("%s: %s stored in restic (%d bytes added)", job.volume, ref, sink.summary.data_added)


def forget_quietly(target: Target, snapshot_id: str) -> None:
    """Forget an archive snapshot that will never be complete; a failure only leaves it unlisted (logged)."""
    try:
        target.repository().forget(snapshot_id)
    except CoordError as error:
        log.warning("%s (an incomplete snapshot %s stays unlisted)", error.message, snapshot_id[:8])


def discard_from_restic(job: Job, written: Written, ctx: RunContext) -> None:
    """A failed volume: forget its archive snapshot (if restic made one); the target's own failure is named."""
    sink = sink_of(written)
    assert sink is not None
    own = next((error for error in job.result.errors if error.startswith(f"target {sink.target.name}: ")), None)
    if own is not None:
        job.result.targets.append(TargetResult(sink.target.name, TargetStatus.FAILED, error=own))
    if sink.summary is not None:
        forget_quietly(sink.target, sink.summary.snapshot_id)
    clear_entry(ctx, written.entry, job.result)
