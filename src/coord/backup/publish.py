"""The publish step of one volume, after its group's containers are back:

    decide status -> check the written archive -> rename it and write its manifest (one journaled step,
    coord/publish.py; or, streamed to a remote, rename and manifest there) -> the other targets (upload.py)
    -> retention -> each target's outcome settled (a failed target fails the volume)

An archive spooled while the containers waited (only remote targets: archive.py) is checked like a local one,
then uploaded to every target (the UPLOAD step) and its spool removed, whatever the uploads did.

A failed volume's .partial is removed with its journal entry; retention runs only after this volume's archive
was checked and published, so a failed run deletes nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from coord.anomaly import Baseline, drop_warning, missing_expected
from coord.archive import ArchiveOutcome, remove_partial
from coord.backup.archive import archive_names
from coord.backup.context import RunContext
from coord.backup.job import Job, Written, clear_entry
from coord.backup.manifest import build_manifest
from coord.backup.restic import discard_from_restic, publish_to_restic
from coord.backup.steps import Step, StepKind
from coord.backup.upload import (
    RemoteArchiveCheck,
    clean_up,
    copy_published,
    file_hashes,
    finish,
    give_up,
    manifest_bytes,
    upload_published,
)
from coord.consistency import Verdict
from coord.errors import CoordError, HistoryError, JournalError
from coord.history import History
from coord.manifest import MANIFEST_SUFFIX, manifest_path_for
from coord.policy import OnAtRisk, Policy, Strategy
from coord.problems import WARNING_KINDS, ProblemKind
from coord.publish import publish_archive
from coord.results import Attempt, TargetResult, TargetStatus, VolumeResult, VolumeStatus
from coord.retention import ArchiveHashes, WrittenArchive, prune_volume
from coord.targets.rclone import RemoteError
from coord.verify import ReadBack

log = logging.getLogger("coord")


def decide_status(
    outcome: ArchiveOutcome, verdict: Verdict | None, reasons: list[str], on_at_risk: OnAtRisk
) -> tuple[VolumeStatus, list[str]]:
    """The volume's status from what archiving found and the verdict, and the errors that made it fail."""
    critical = [problem.describe() for problem in outcome.critical]
    if critical:
        return VolumeStatus.FAILED, critical
    if verdict is Verdict.AT_RISK and on_at_risk is OnAtRisk.FAIL:
        return VolumeStatus.FAILED, ["verdict at-risk and the policy says on_at_risk: fail: " + "; ".join(reasons)]
    if verdict is not Verdict.CONSISTENT or any(outcome.of_kind(kind) for kind in WARNING_KINDS):
        return VolumeStatus.WARNING, []
    return VolumeStatus.OK, []


def check_anomalies(result: VolumeResult, outcome: ArchiveOutcome, policy: Policy, baseline: Baseline | None) -> None:
    """The anomaly rules (anomaly.py), once the status is decided: an `expect:` pattern that matched no archived
    entry fails the volume; a fall of the size or entry count beyond `anomaly.max_drop` from `baseline` (the last
    successful archive) makes an ok volume `warning`. The reasons go to the result's errors."""
    if result.status is VolumeStatus.FAILED:
        return
    missing = missing_expected(outcome.expected)
    if missing:
        result.status = VolumeStatus.FAILED
        result.errors.extend(missing)
        return
    warning = drop_warning(outcome.size, outcome.entries, baseline, policy.anomaly.max_drop)
    if warning is not None:
        result.errors.append(warning)
        if result.status is VolumeStatus.OK:
            result.status = VolumeStatus.WARNING


def baseline_of(volume: str, ctx: RunContext) -> Baseline | None:
    """The volume's last successful archive from the history, or None (none yet, or the history cannot be
    read: logged, and the drop rule is skipped rather than failing a backup over it)."""
    try:
        row = History(ctx.request.state_dir).last_success_of(volume)
    except HistoryError as error:
        log.warning("%s: anomaly check skipped: %s", volume, error.message)
        return None
    if row is None or row.size <= 0:
        return None
    return Baseline(row.run_id, row.started_at, row.size, row.entries)


def check_downtime(result: VolumeResult, max_downtime_s: float) -> None:
    """A volume whose containers were paused or stopped longer than `max_downtime_s` is at best `warning`,
    with the figure in its errors (an ok volume with a long outage would hide a slow or hung engine)."""
    longest = max(
        (c for c in result.containers if c.action in ("paused", "stopped")), key=lambda c: c.seconds, default=None
    )
    if longest is None or longest.seconds <= max_downtime_s:
        return
    result.errors.append(
        f"downtime {longest.seconds:.1f}s is longer than max_downtime_s {max_downtime_s:g}: container "
        f"{longest.container} was {longest.action} for {longest.seconds:.1f}s"
    )
    if result.status is VolumeStatus.OK:
        result.status = VolumeStatus.WARNING


def publish_job(job: Job, ctx: RunContext) -> None:
    """Decide the volume's status, check its archive, and publish it with its manifest, or remove it; then
    apply retention. Nothing to do when nothing was written (the reason is already on the result)."""
    written, result = job.written, job.result
    if written is None:
        settle_targets(job)
        return
    ctx.record(Step(StepKind.PUBLISH, volume=job.volume))
    policy = job.plan.policy.policy
    _fill_from_outcome(result, written)
    if job.plan.strategy is Strategy.AUTO:
        result.attempts.append(final_attempt(result, written))
    result.status, errors = decide_status(written.outcome, result.verdict, result.verdict_reasons, policy.on_at_risk)
    result.errors.extend(errors)
    check_anomalies(result, written.outcome, policy, baseline_of(job.volume, ctx))
    check_downtime(result, policy.max_downtime_s)
    if result.status is VolumeStatus.OK and result.errors:  # a before hook failed under on_error: continue
        result.status = VolumeStatus.WARNING  # decided here, before the manifest records the status
    read = ReadBack()
    if result.status is not VolumeStatus.FAILED:
        read, mismatches = written.check.read_back(written.partial, written.outcome)
        result.size = read.size
        if mismatches:
            result.status = VolumeStatus.FAILED
            result.errors.extend(f"validation: {problem}" for problem in mismatches)
    if result.status is VolumeStatus.FAILED:
        discard(job, written, ctx)
    elif job.primary.is_restic:
        publish_to_restic(job, written, read, ctx)
    elif written.remote is not None:
        publish_streamed(job, written, read, ctx)
    elif written.spooled:
        upload_spooled(job, written, read, ctx)
    else:
        _rename_with_manifest(job, written, read, ctx)
    published = result.status is not VolumeStatus.FAILED
    if published and not written.spooled:  # a spool went to every target
        send_to_other_targets(job, written, read, ctx)
    result.duration_s = time.monotonic() - written.clock
    if published and written.local and not job.primary.is_restic:
        _apply_retention(job, written, read, ctx)
    if published:
        _apply_target_retention(job, written, read, ctx)
    settle_targets(job)
    log.info("%s: %s, verdict %s, %d entries", job.volume, result.status.value, result.verdict, result.entries)


def final_attempt(result: VolumeResult, written: Written) -> Attempt:
    """Strategy auto: the read that was kept, as the result records it."""
    outcome = written.outcome
    return Attempt(
        strategy=written.strategy,
        verdict=result.verdict,
        verdict_reasons=list(result.verdict_reasons),
        warnings=dict(result.warnings),
        entries=result.entries,
        duration_s=outcome.finished_at - outcome.started_at,
        escalated=None,
    )


def _fill_from_outcome(result: VolumeResult, written: Written) -> None:
    outcome = written.outcome
    result.entries = outcome.entries
    result.size = outcome.size
    for kind in (*WARNING_KINDS, ProblemKind.SKIPPED):
        result.warnings[kind.value] = len(outcome.of_kind(kind))
    if outcome.consistency is not None:
        result.excluded_paths = len(outcome.consistency.excluded)
        result.verdict = outcome.consistency.verdict
        result.verdict_reasons = list(outcome.consistency.reasons)
    modified = written.modified_after_snapshot
    if modified:
        result.verdict = Verdict.AT_RISK
        result.verdict_reasons.append(
            f"{len(modified)} file(s) were modified in place after the snapshot (e.g. {modified[0]}): a hard link "
            "shares their content; use pause or stop here"
        )


def _rename_with_manifest(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """Rename the checked archive and write its manifest as one journaled step (coord/publish.py); on failure
    (disk full, I/O error, journal not writable) the volume fails and nothing of its archive is left."""
    result, primary = job.result, job.primary
    result.archive = str(written.final)  # the manifest names it
    try:
        manifest = build_manifest(job, written, read)
        result.manifest = str(publish_archive(written.final, manifest, ctx.journal, written.entry, job.volume))
    except JournalError as error:  # nothing was renamed: the partial goes, with its entry if the journal lets us
        remove_partial(written.partial)
        _fail(result, f"could not publish {written.final.name}: {error.message}")
        clear_entry(ctx, written.entry, result)
    except CoordError as error:
        _fail(result, error.message)
    if result.status is VolumeStatus.FAILED:
        result.targets.append(TargetResult(primary.name, TargetStatus.FAILED, error=result.errors[-1]))
    else:
        result.targets.append(TargetResult(primary.name, TargetStatus.OK, primary.ref(job.volume, written.final.name)))


def _fail(result: VolumeResult, message: str) -> None:
    result.status = VolumeStatus.FAILED
    result.archive = result.manifest = None
    result.errors.append(message)


def discard(job: Job, written: Written, ctx: RunContext) -> None:
    """A failed volume's archive goes: its .partial file, what was streamed to the remote, or its snapshot."""
    if job.primary.is_restic:
        discard_from_restic(job, written, ctx)
        return
    if written.remote is None:
        remove_partial(written.partial)
        clear_entry(ctx, written.entry, job.result)
        return
    target = written.remote.target
    own = next((error for error in job.result.errors if error.startswith(f"target {target.name}: ")), None)
    if own is not None:  # the stream to the target failed (rather than the archive): the target's failure
        job.result.targets.append(TargetResult(target.name, TargetStatus.FAILED, error=own))
    rclone = target.rclone()
    try:
        clean_up(rclone, written.remote.location)
    except RemoteError as error:  # the entry stays: `coord recover` removes it later
        job.result.errors.append(f"{error.message} (`coord recover` removes {written.remote.temporary} later)")
        return
    clear_entry(ctx, written.entry, job.result)


def publish_streamed(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """The archive streamed to its remote and checked there: rename it and upload its manifest (upload.py);
    on failure nothing complete-looking is left and the volume fails, naming the target."""
    remote, result = written.remote, job.result
    assert remote is not None
    result.archive = remote.ref  # the manifest names its file
    data = manifest_bytes(build_manifest(job, written, read))
    rclone = remote.target.rclone()
    try:
        finish(rclone, remote, data)
    except CoordError as error:
        message = give_up(rclone, remote, ctx.journal, written.entry, error)
        result.targets.append(TargetResult(remote.target.name, TargetStatus.FAILED, error=message))
        _fail(result, message)
        return
    clear_entry(ctx, written.entry, result)
    result.manifest = remote.ref + MANIFEST_SUFFIX
    result.targets.append(TargetResult(remote.target.name, TargetStatus.OK, remote.ref))


def upload_spooled(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """The archive spooled to a local file while the containers waited, now checked: upload it and its manifest to
    each of the volume's targets (all remote) as a published local archive goes (upload.upload_published), then
    remove the spool, whatever the uploads did. The volume fails when no target got it (a target that failed
    fails it too: settle_targets)."""
    result, name = job.result, remote_name(job, written)
    ctx.record(Step(StepKind.UPLOAD, volume=job.volume, strategy=written.strategy))
    result.archive = job.primary.ref(job.volume, name)  # the manifest names its file
    manifest = manifest_bytes(build_manifest(job, written, read))
    hashes = local_hashes(job, written, written.partial)
    for target in job.targets:
        log.info("%s: uploading the spooled %s to target %s", job.volume, name, target.name)
        remote = job.remote_archive(target, name)
        result.targets.append(upload_published(remote, written.partial, manifest, hashes, ctx.journal))
    remove_spool(job, written, ctx)
    landed = next((item.ref for item in result.targets if item.status is TargetStatus.OK and item.ref), None)
    if landed is None:  # the targets' errors are the volume's (settle_targets)
        result.status, result.archive, result.manifest = VolumeStatus.FAILED, None, None
        return
    result.archive, result.manifest = landed, landed + MANIFEST_SUFFIX


def remote_name(job: Job, written: Written) -> str:
    """The spooled archive's name on the targets: the first of its names free on the primary target (the spool's
    own name was only free locally). A primary that cannot be asked keeps the spool's name: each target's upload
    then reports its own failure, and the others still get the archive."""
    try:
        return next(
            name
            for name in archive_names(job.volume, written.started, job.file_suffix)
            if not job.name_taken_on_primary(name)
        )
    except RemoteError as error:
        log.warning("%s: %s; uploading as %s", job.volume, error.message, written.final.name)
        return written.final.name


def remove_spool(job: Job, written: Written, ctx: RunContext) -> None:
    """Remove the spool file and its journal entry; one that cannot be removed is reported on the volume (at best
    `warning`) and left, with its entry, to `coord recover`."""
    result = job.result
    try:
        remove_partial(written.partial)
    except OSError as error:
        result.errors.append(f"spool {written.partial} could not be removed ({error.strerror}); `coord recover` will")
        if result.status is VolumeStatus.OK:
            result.status = VolumeStatus.WARNING
        return
    clear_entry(ctx, written.entry, job.result)


def send_to_other_targets(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """Upload the published archive and its manifest to the volume's other targets, each on its own: one that
    fails is recorded as failed and the others still get theirs. Containers are back by now."""
    result, check = job.result, written.check
    for target in job.other_targets:
        log.info("%s: uploading %s to target %s", job.volume, written.final.name, target.name)
        if written.remote is not None:
            assert isinstance(check, RemoteArchiveCheck)
            size, _, hashes = check.stored(written.outcome)
            manifest = manifest_bytes(build_manifest(job, written, read))
            remote = job.remote_archive(target, written.remote.file_name)
            outcome = copy_published(written.remote, remote, size, hashes, manifest, ctx.journal)
        else:
            manifest_file = manifest_path_for(written.final)
            hashes = local_hashes(job, written, written.final)
            remote = job.remote_archive(target, written.final.name)
            outcome = upload_published(remote, written.final, manifest_file, hashes, ctx.journal)
        result.targets.append(outcome)


def local_hashes(job: Job, written: Written, path: Path) -> dict[str, str]:
    """The md5/sha1 of the local archive file at `path` (published, or spooled) the targets check uploads by: from
    the archive's own pass when the file is the compressed stream; an encrypted file (gpg wrote it) is hashed for
    them here."""
    if job.encryption is None:
        return dict(written.outcome.hashes)
    try:
        return file_hashes(path, job.extra_hashes)
    except OSError:
        return {}  # the upload reads the file too and reports the error


def settle_targets(job: Job) -> None:
    """Every target of the volume has its entry (`skipped` when not tried); a failed target fails the volume,
    its error (naming the target) among the volume's errors."""
    result = job.result
    recorded = {item.target for item in result.targets}
    result.targets += [TargetResult(t.name, TargetStatus.SKIPPED) for t in job.targets if t.name not in recorded]
    order = {name: index for index, name in enumerate(job.planned_targets)}
    result.targets.sort(key=lambda item: order.get(item.target, len(order)))
    for item in result.targets:
        if item.status is TargetStatus.FAILED:
            result.status = VolumeStatus.FAILED
            if item.error and item.error not in result.errors:
                result.errors.append(item.error)


def _apply_retention(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """Prune the volume's older archives. The archive just written is never pruned by this run and is trusted
    from its own check (as in the manifest)."""
    retention = job.plan.policy.policy.retention
    if retention is None:
        return
    outcome = written.outcome
    this_one = WrittenArchive(written.final, read.size if read.sha256 else outcome.size, read.sha256 or outcome.sha256)
    pruned = prune_volume(
        written.final.parent,  # <dest>/<volume>
        retention,
        datetime.now(UTC),
        written=this_one,
        hashes=ArchiveHashes(ctx.journal.directory.parent),  # the state directory
    )
    result = job.result
    result.pruned = [path for path, _ in pruned.deleted]
    result.retention_warnings = pruned.warnings
    result.retention_errors = pruned.errors


def _apply_target_retention(job: Job, written: Written, read: ReadBack, ctx: RunContext) -> None:
    """Prune the volume's older archives on every other target the archive landed on (targets/prune.py: the
    same rules and decisions as above, the manifest deleted before the archive on a remote). The archive this run
    put there is never deleted; what each target did is added to the volume's result, named by the target."""
    from coord.targets.archives import parse_ref, store_of
    from coord.targets.prune import LandedArchive, prune_store_volume

    retention = job.plan.policy.policy.retention
    if retention is None:
        return
    result, outcome = job.result, written.outcome
    pruned_above = job.primary.name if written.local and not job.primary.is_restic else None
    landed = {item.target: parse_ref(item.ref or "") for item in result.targets if item.status is TargetStatus.OK}
    size, sha256 = (read.size if read.sha256 else outcome.size), (read.sha256 or outcome.sha256)
    for target in job.targets:
        ref = landed.get(target.name)
        if ref is None or target.name == pruned_above:
            continue
        store = store_of(target, ctx.journal.directory.parent)  # the state directory: remembered local hashes
        now = datetime.now(UTC)
        pruned = prune_store_volume(store, job.volume, retention, now, written=LandedArchive(ref.file, size, sha256))
        result.pruned += [path for path, _ in pruned.deleted]
        result.retention_warnings += [f"target {target.name}: {line}" for line in pruned.warnings]
        result.retention_errors += [f"target {target.name}: {line}" for line in pruned.errors]
