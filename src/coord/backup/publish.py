"""The publish step of one volume, after its group's containers are back:

    decide status -> check the written archive -> rename it and write its manifest (one journaled step,
    coord/publish.py) -> retention

A failed volume's .partial is removed with its journal entry; retention runs only after this volume's archive
was checked and published, so a failed run deletes nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from coord.anomaly import Baseline, drop_warning, missing_expected
from coord.archive import ArchiveOutcome, remove_partial
from coord.backup.context import RunContext
from coord.backup.job import Job, Written, clear_entry
from coord.backup.manifest import build_manifest
from coord.backup.steps import Step, StepKind
from coord.consistency import Verdict
from coord.errors import CoordError, HistoryError, JournalError
from coord.history import History
from coord.policy import OnAtRisk, Policy, Strategy
from coord.problems import WARNING_KINDS, ProblemKind
from coord.publish import publish_archive
from coord.results import Attempt, VolumeResult, VolumeStatus
from coord.retention import ArchiveHashes, WrittenArchive, prune_volume
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
        remove_partial(written.partial)
        clear_entry(ctx, written.entry, result)
    else:
        _rename_with_manifest(job, written, read, ctx)
    result.duration_s = time.monotonic() - written.clock
    if result.status is not VolumeStatus.FAILED:
        _apply_retention(job, written, read, ctx)
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
    result = job.result
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


def _fail(result: VolumeResult, message: str) -> None:
    result.status = VolumeStatus.FAILED
    result.archive = result.manifest = None
    result.errors.append(message)


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
