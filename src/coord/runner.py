"""One backup run from start to finish.

    load policies -> plan -> lock -> recover what a dead run left -> for each quiesce group:
        before hooks -> pause/stop (journaled) -> archive each volume to .partial -> unpause/start -> after hooks
        -> per volume: decide status -> read back and compare -> publish (rename) -> write manifest

Policy problems are raised before anything is touched. Problems of one volume fail that volume, not the run;
containers or after hooks that could not be put right are run-level errors (exit 1, loud).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from coord import __version__
from coord.archive import ArchiveOutcome, archive_suffix, compressor_command, create_archive, remove_partial
from coord.consistency import Verdict
from coord.docker_ops import DockerControl
from coord.encrypt import DEFAULT_STATE_DIR, GPG_SUFFIX, Encryption, encryption_for, warm_up
from coord.errors import CoordError, JournalError
from coord.excludes import ExcludeMatcher
from coord.fsutil import NotOurs, format_identity, open_directory, parse_identity
from coord.hooks import HookRun, run_hook
from coord.journal import PARTIAL, SNAPSHOT, WRITING, Journal, JournalEntry
from coord.lock import run_lock
from coord.manifest import MANIFEST_FORMAT
from coord.plan import QuiesceGroup, VolumePlan, group_volumes, plan_volumes
from coord.policy import LoadedPolicy, OnAtRisk, OnHookError, Strategy, load_policies
from coord.problems import ProblemKind
from coord.publish import publish_archive
from coord.recovery import recover
from coord.restore_swap import STAGING_PREFIX
from coord.results import ContainerAction, RunResult, VolumeResult, VolumeStatus
from coord.retention import ArchiveHashes, WrittenArchive, prune_volume
from coord.signals import termination_raises
from coord.snapshot import (
    SNAPSHOT_PREFIX,
    Snapshot,
    complete_snapshot,
    new_snapshot_path,
    prepare_snapshot,
    remove_snapshot,
)
from coord.sources import HOST, VolumeSources, own_container_id
from coord.strategies import quiesced
from coord.verify import ReadBack, WrittenArchiveCheck

log = logging.getLogger("coord")

# coord's own directories at a volume root (snapshots, restore staging): never archived, never copied into a
# snapshot, whatever a container planted there.
COORD_ROOT_PREFIXES = (SNAPSHOT_PREFIX, STAGING_PREFIX)


class Progress(Protocol):
    """Where the runner reports progress on long work (the CLI draws it; tests pass nothing)."""

    def begin(self, volume: str) -> None: ...
    def update(self, entries: int, written_bytes: int) -> None: ...
    def end(self) -> None: ...


@dataclass(frozen=True)
class BackupRequest:
    policies_dir: Path
    dest: Path
    policy_names: Sequence[str] = ()
    state_dir: Path = DEFAULT_STATE_DIR
    lock_timeout_s: float = 0.0
    sources: VolumeSources = HOST
    passphrase_file: Path | None = None  # symmetric encryption for policies without `encrypt:`


def archive_path(dest: Path, volume: str, started: datetime, suffix: str) -> Path:
    """<dest>/<volume>/<volume>-<UTC timestamp><suffix>, with a counter if that second is already taken."""
    directory = dest / volume
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = directory / f"{volume}-{stamp}{suffix}"
    counter = 1
    while candidate.exists() or candidate.with_name(candidate.name + ".partial").exists():
        candidate = directory / f"{volume}-{stamp}-{counter}{suffix}"
        counter += 1
    return candidate


def check_destination(directory: Path) -> None:
    """Make sure archives can be written into `directory` (created if missing) before any hook runs or container
    is touched. Raises CoordError saying why not."""
    probe = directory / f".coord-write-probe-{secrets.token_hex(8)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise CoordError(
            f"destination {directory} is not writable ({error.strerror}); nothing was run, paused or stopped"
        ) from None


def decide_status(
    outcome: ArchiveOutcome, verdict: Verdict | None, reasons: list[str], on_at_risk: OnAtRisk
) -> tuple[VolumeStatus, list[str]]:
    """The volume's status from what archiving found and the verdict, and the errors that made it fail."""
    critical = [problem.describe() for problem in outcome.critical]
    if critical:
        return VolumeStatus.FAILED, critical
    if verdict is Verdict.AT_RISK and on_at_risk is OnAtRisk.FAIL:
        return VolumeStatus.FAILED, ["verdict at-risk and the policy says on_at_risk: fail: " + "; ".join(reasons)]
    if verdict is not Verdict.CONSISTENT or any(
        outcome.of_kind(kind) for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK)
    ):
        return VolumeStatus.WARNING, []
    return VolumeStatus.OK, []


def run_backup(request: BackupRequest, docker: DockerControl, progress: Progress | None = None) -> RunResult:
    """Back up every volume the selected policies cover.

    Raises PolicyError/UsageError before anything is touched, LockError when another run holds the state
    directory, Interrupted on SIGTERM/SIGINT (after every container was put back).
    """
    policies = load_policies(request.policies_dir, request.policy_names or None)
    plans = plan_volumes(policies, docker.volume_names(), request.policy_names or None)
    journal = Journal(request.state_dir)
    result = RunResult()
    with run_lock(request.state_dir, request.lock_timeout_s), termination_raises():
        recovery = recover(journal, docker)
        result.recovered = recovery.restored + [f"removed {path}" for path in recovery.removed_partials]
        result.recovered += [f"left alone {line}" for line in recovery.left_alone]
        result.errors.extend(recovery.errors)
        for group in group_volumes(plans, docker, own_container_id()):
            volumes, errors = back_up_group(group, request, docker, journal, progress)
            result.volumes.extend(volumes)
            result.errors.extend(errors)
    return result


@dataclass
class _Job:
    """One volume's way through its group: plan, result so far, and where its archive goes."""

    plan: VolumePlan
    result: VolumeResult
    source: Path | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.monotonic)
    final: Path | None = None
    partial_entry: JournalEntry | None = None
    outcome: ArchiveOutcome | None = None
    snapshot: Snapshot | None = None
    snapshot_entry: JournalEntry | None = None
    used: Strategy | None = None  # the strategy of the read that produced `outcome`
    encryption: Encryption | None = None
    check: WrittenArchiveCheck | None = None  # how the archive is stored (encrypted or not) and checked
    modified_after_snapshot: list[str] = field(default_factory=list)

    @property
    def partial(self) -> Path:
        assert self.final is not None
        return self.final.with_name(self.final.name + ".partial")


def back_up_group(
    group: QuiesceGroup,
    request: BackupRequest,
    docker: DockerControl,
    journal: Journal,
    progress: Progress | None = None,
) -> tuple[list[VolumeResult], list[str]]:
    """Back up the volumes of one quiesce group.

    Returns their results and the run-level errors: containers or after hooks that could not be put right,
    which the operator must act on. Containers come back as soon as the data is read, before validation.
    """
    jobs = [_Job(plan, _new_result(plan)) for plan in group.volumes]
    runnable: list[_Job] = []
    for job in jobs:
        if job.plan.error or job.plan.volume in group.errors:
            job.result.errors.append(job.plan.error or group.errors[job.plan.volume])
        elif job.plan.strategy is Strategy.EXCLUDE:
            job.result.status = VolumeStatus.EXCLUDED
        else:
            try:
                job.source = request.sources.path_of(job.plan.volume, docker)
                refuse_unfinished_restore(job.plan.volume, job.source)
                job.encryption = encryption_for(
                    job.plan.policy.policy.encrypt, request.state_dir, request.passphrase_file
                )
                if job.encryption is not None:
                    warm_up(job.encryption)
                check_destination(request.dest / job.plan.volume)
                runnable.append(job)
            except CoordError as error:
                job.result.errors.append(error.message)
                log.error("%s: %s", job.plan.volume, error.message)  # notifications carry the log's tail
    if not runnable:
        return [job.result for job in jobs], []

    policies = list({job.plan.policy.name: job.plan.policy for job in runnable}.values())
    hook_runs, hooked, blocked = _run_before_hooks(policies, docker)
    actions: list[ContainerAction] = []
    quiesce_error: str | None = None
    attempted = group.strategy
    try:
        if blocked is None and group.strategy is Strategy.AUTO:
            for job in runnable:
                job.used = Strategy.LIVE
                _archive(job, request.dest, journal, progress)
            escalating = [job for job in runnable if _escalate_if_needed(job, journal)]
            if escalating:
                attempted = Strategy(escalating[0].plan.policy.policy.escalate_to.value)
                _quiesced_pass(group, attempted, escalating, request.dest, docker, journal, progress, actions)
        elif blocked is None:
            _quiesced_pass(group, group.strategy, runnable, request.dest, docker, journal, progress, actions)
    except CoordError as error:
        verb = "stop" if attempted is Strategy.STOP else "pause"
        quiesce_error = f"could not {verb} containers: {error.message}"
    finally:
        for item in reversed(hooked):
            for hook in item.policy.hooks.after:
                hook_runs.append(run_hook(hook, "after", item.name, docker))

    run_errors = [f"container {a.container}: {a.error}" for a in actions if not a.restored and a.error]
    run_errors += [f"policy {run.policy}: {run.error}" for run in hook_runs if run.phase == "after" and run.error]
    for job in runnable:
        name = job.plan.policy.name
        job.result.containers = actions
        job.result.hooks = [run.to_json() for run in hook_runs if run.policy == name]
        job.result.errors += [r.error for r in hook_runs if r.policy == name and r.phase == "before" and r.error]
        if blocked or quiesce_error:
            if quiesce_error:
                job.result.errors.append(quiesce_error)
            continue
        _finish(job, journal)
    return [job.result for job in jobs], run_errors


def _quiesced_pass(
    group: QuiesceGroup,
    strategy: Strategy,
    jobs: list[_Job],
    dest: Path,
    docker: DockerControl,
    journal: Journal,
    progress: Progress | None,
    actions: list[ContainerAction],
) -> None:
    """Quiesce the group's containers per `strategy` and read the volumes: inside the window (pause, stop), or
    from snapshots made current inside it and read once the containers run again (snapshot)."""
    for job in jobs:
        job.used = strategy
    if strategy is Strategy.SNAPSHOT:
        _snapshot_pass(group, jobs, dest, docker, journal, progress, actions)
        return
    with quiesced(group, docker, journal, actions, strategy):
        for job in jobs:
            _archive(job, dest, journal, progress)


def _snapshot_pass(
    group: QuiesceGroup,
    jobs: list[_Job],
    dest: Path,
    docker: DockerControl,
    journal: Journal,
    progress: Progress | None,
    actions: list[ContainerAction],
) -> None:
    """strategy snapshot: link each volume's tree while the containers run, pause them only to bring the links
    up to date (snapshot.py), and archive from the snapshots once they run again. Snapshots are removed however
    this ends; a crash leaves them to `coord recover` through the journal."""
    try:
        prepared = [job for job in jobs if _prepare_snapshot(job, journal)]
        if not prepared:
            return  # every volume refused: nothing to pause for
        with quiesced(group, docker, journal, actions, Strategy.SNAPSHOT):
            for job in prepared:
                _complete_snapshot(job)
            unpause_started_ns = time.time_ns()  # a write after this point is a write after the snapshot
        for job in prepared:
            if job.snapshot is None:
                continue
            job.snapshot.unpaused_at_ns = unpause_started_ns
            _archive(job, dest, journal, progress, source=job.snapshot.read_path)
            job.modified_after_snapshot = job.snapshot.modified_since_unpause(_matcher(job))
            _drop_snapshot(job, journal)
    finally:
        for job in jobs:
            _drop_snapshot(job, journal)


def _prepare_snapshot(job: _Job, journal: Journal) -> bool:
    """Journal and link the volume's snapshot while its containers run; False (the reason recorded) if refused.

    The entry is written before the directory is made, and again with the directory's identity as soon as it
    exists (before anything is linked into it): recovery removes only that directory, never what else may be
    at its name."""
    assert job.source is not None
    path = new_snapshot_path(job.source)
    volume = job.plan.volume
    try:
        job.snapshot_entry = journal.record(SNAPSHOT, str(path), SNAPSHOT, volume)
    except JournalError as error:
        job.result.errors.append(f"no snapshot made: {error.message}")
        return False

    def journal_identity(identity: tuple[int, int]) -> None:
        job.snapshot_entry = journal.record(SNAPSHOT, str(path), SNAPSHOT, volume, format_identity(identity))

    try:
        job.snapshot = prepare_snapshot(job.source, path, journal_identity, COORD_ROOT_PREFIXES)
    except CoordError as error:
        _drop_snapshot(job, journal)
        job.result.errors.append(error.message)
        return False
    return True


def _complete_snapshot(job: _Job) -> None:
    """While paused: bring the prepared snapshot up to date (the pause lasts as long as this)."""
    assert job.source is not None and job.snapshot is not None
    try:
        counts = complete_snapshot(job.source, job.snapshot)
    except CoordError as error:
        job.snapshot = None  # complete_snapshot removed it; the journal entry goes with _drop_snapshot
        job.result.errors.append(error.message)
        return
    log.info(
        "%s: snapshot brought up to date while paused: %d linked, %d removed, %d new directories, %d directory "
        "times set",
        job.plan.volume,
        counts.linked,
        counts.removed,
        counts.copied_directories,
        counts.directories_fixed,
    )


def _drop_snapshot(job: _Job, journal: Journal) -> None:
    """Remove the volume's snapshot directory, if any, and its journal entry. Never raises for the directory:
    something that is not coord's at its name is left alone (and reported); a failure to remove keeps the
    entry for `coord recover` (and is reported)."""
    if job.snapshot is not None:
        job.snapshot.close()
    entry = job.snapshot_entry
    if entry is None:
        return
    try:
        remove_snapshot(Path(entry.key), parse_identity(entry.identity))
    except NotOurs as error:
        job.result.errors.append(f"snapshot {entry.key}: {error.why}; left alone")
    except OSError as error:
        job.result.errors.append(
            f"snapshot {entry.key} could not be removed: {error.strerror or error}; `coord recover` removes it"
        )
        job.snapshot_entry = None
        return
    _clear_entry(journal, entry, job.result)
    job.snapshot_entry = None


def _escalate_if_needed(job: _Job, journal: Journal) -> bool:
    """strategy auto: keep the live archive, or record it as a first attempt and discard it (True)."""
    outcome = job.outcome
    if outcome is None or outcome.critical or outcome.consistency is None:
        return False  # a failure a quieter read would not fix: report it as it is
    policy = job.plan.policy.policy
    vanished = len(outcome.of_kind(ProblemKind.VANISHED))
    reason = None
    if outcome.consistency.verdict is Verdict.AT_RISK:
        reason = "verdict at-risk"
    elif policy.max_vanished is not None and vanished > policy.max_vanished:
        reason = f"{vanished} entries vanished, more than max_vanished {policy.max_vanished}"
    if reason is None:
        return False
    job.result.attempts.append(
        {
            "strategy": Strategy.LIVE.value,
            "verdict": outcome.consistency.verdict.value,
            "verdict_reasons": list(outcome.consistency.reasons),
            "warnings": {k.value: len(outcome.of_kind(k)) for k in ProblemKind if k is not ProblemKind.CRITICAL},
            "entries": outcome.entries,
            "duration_s": round(outcome.finished_at - outcome.started_at, 3),
            "escalated": f"{reason}: retried with {policy.escalate_to.value}",
        }
    )
    remove_partial(job.partial)
    if job.partial_entry is not None:
        _clear_entry(journal, job.partial_entry, job.result)
    job.outcome = job.final = job.partial_entry = None
    log.warning("%s: live read not good enough (%s); escalating to %s", job.plan.volume, reason, policy.escalate_to)
    return True


def _run_before_hooks(
    policies: list[LoadedPolicy], docker: DockerControl
) -> tuple[list[HookRun], list[LoadedPolicy], str | None]:
    """Run before hooks in policy order. Returns the runs, the policies whose hooks started (their after hooks
    must run), and the error that blocks archiving (a failing hook under on_error: fail), if any."""
    runs: list[HookRun] = []
    hooked: list[LoadedPolicy] = []
    for item in policies:
        hooked.append(item)
        for hook in item.policy.hooks.before:
            run = run_hook(hook, "before", item.name, docker)
            runs.append(run)
            if run.error and item.policy.hooks.on_error is OnHookError.FAIL:
                run.error += " (nothing archived: hooks.on_error is fail)"
                return runs, hooked, run.error
    return runs, hooked, None


def _new_result(plan: VolumePlan) -> VolumeResult:
    return VolumeResult(
        volume=plan.volume, policy=plan.policy.name, strategy=plan.strategy.value, status=VolumeStatus.FAILED
    )


def _archive(job: _Job, dest: Path, journal: Journal, progress: Progress | None, source: Path | None = None) -> None:
    """Archive one volume (or its snapshot, `source`) to its .partial file, journaled so a crash of coord
    leaves nothing behind."""
    policy = job.plan.policy.policy
    job.started = datetime.now(UTC)
    job.clock = time.monotonic()
    try:
        suffix = archive_suffix(policy.compression) + (GPG_SUFFIX if job.encryption else "")
        job.final = archive_path(dest, job.plan.volume, job.started, suffix)
    except OSError as error:
        job.result.errors.append(f"destination {dest}: {error.strerror}")
        return
    assert job.source is not None
    job.check = WrittenArchiveCheck(policy.compression, job.encryption)
    try:
        job.partial_entry = journal.record(PARTIAL, str(job.partial), WRITING, job.plan.volume)
    except JournalError as error:  # not recorded, so not written: the volume fails, the containers go back
        job.result.errors.append(f"nothing archived: {error.message}")
        return
    try:
        log.info("%s: archiving %s (policy %s)", job.plan.volume, job.source, job.plan.policy.name)
        if progress:
            progress.begin(job.plan.volume)
        job.outcome = create_archive(
            source or job.source,
            job.partial,
            _matcher(job),
            policy.compression,
            progress.update if progress else None,
            compressor_command(policy.compression, policy.compression_level, policy.compression_threads),
            job.check.write,
            consistency=policy.consistency,
            content_unchanged=job.snapshot.content_unchanged if source is not None and job.snapshot else None,
        )
    except BaseException:
        if job.partial_entry is not None:
            _clear_entry(journal, job.partial_entry, job.result)  # never in place of the error being raised
        raise
    finally:
        job.check.end_writing()
        if progress:
            progress.end()


def _matcher(job: _Job) -> ExcludeMatcher:
    # coord's own directories at the volume root (a snapshot left by a dead run, a restore's staging directory,
    # or links a container planted at those names) are never archived, whatever the strategy.
    return ExcludeMatcher.of([*job.plan.policy.policy.exclude, *(f"/{prefix}*" for prefix in COORD_ROOT_PREFIXES)])


def refuse_unfinished_restore(volume: str, source: Path) -> None:
    """Raise CoordError when the root of `volume` (`source`) holds a restore's staging directory: that restore
    did not finish, the volume may be half restored, and an archive of it must not look like a good backup.

    Only a real directory counts (listed without following links); a link or file planted at such a name is
    not coord's and is merely never archived. A root that cannot be read is left for the archive step to report.
    """
    try:
        fd = open_directory(source)
    except OSError:
        return
    try:
        with os.scandir(fd) as entries:
            staging = sorted(
                entry.name
                for entry in entries
                if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False)
            )
    except OSError:
        return
    finally:
        os.close(fd)
    if staging:
        raise CoordError(
            f"volume '{volume}' holds an unfinished restore ({source}/{staging[0]}): not backed up, since it may "
            "be half restored. Run `coord recover` to finish or roll back that restore, then back up again; if "
            f"the directory is still there, restore the volume again, or remove {source}/{staging[0]} once you "
            "know the volume holds what it should"
        )


def _finish(job: _Job, journal: Journal) -> None:
    """Decide the volume's status, read its archive back, and publish it with its manifest, or remove it."""
    result, outcome = job.result, job.outcome
    if outcome is None:  # archiving never started (destination problem): the error is already recorded
        return
    _fill_from_outcome(result, outcome)
    if job.modified_after_snapshot:
        result.verdict = Verdict.AT_RISK.value
        result.verdict_reasons.append(
            f"{len(job.modified_after_snapshot)} file(s) were modified in place after the snapshot (e.g. "
            f"{job.modified_after_snapshot[0]}): a hard link shares their content; use pause or stop here"
        )
    if job.plan.strategy is Strategy.AUTO and job.used is not None:
        result.attempts.append(
            {
                "strategy": job.used.value,
                "verdict": result.verdict,
                "verdict_reasons": list(result.verdict_reasons),
                "warnings": dict(result.warnings),
                "entries": result.entries,
                "duration_s": round(outcome.finished_at - outcome.started_at, 3),
                "escalated": None,
            }
        )
    policy = job.plan.policy.policy
    verdict = Verdict(result.verdict) if result.verdict else None
    result.status, errors = decide_status(outcome, verdict, result.verdict_reasons, policy.on_at_risk)
    result.errors.extend(errors)
    check_downtime(result, policy.max_downtime_s)
    if result.status is VolumeStatus.OK and result.errors:  # a before hook failed under on_error: continue
        result.status = VolumeStatus.WARNING  # decided here, before the manifest records the status
    read = ReadBack()
    if result.status is not VolumeStatus.FAILED and job.check is not None:
        read, mismatches = job.check.read_back(job.partial, outcome)
        result.size = read.size
        if mismatches:
            result.status = VolumeStatus.FAILED
            result.errors.extend(f"validation: {problem}" for problem in mismatches)
    assert job.final is not None and job.partial_entry is not None and job.source is not None
    if result.status is VolumeStatus.FAILED:
        remove_partial(job.partial)
        _clear_entry(journal, job.partial_entry, result)
    else:
        _publish(job, journal, outcome, read)
    result.duration_s = time.monotonic() - job.clock
    if result.status is not VolumeStatus.FAILED and policy.retention is not None:
        # Only here, after this volume's archive was validated and published: a failed run deletes nothing. The
        # archive just written is never pruned by this run and is trusted from its own read-back (as in the manifest).
        written = WrittenArchive(job.final, read.size if read.sha256 else outcome.size, read.sha256 or outcome.sha256)
        pruned = prune_volume(
            job.plan.volume,
            job.final.parent,
            policy.retention,
            datetime.now(UTC),
            written=written,
            hashes=ArchiveHashes(journal.directory.parent),  # the state directory
        )
        result.pruned = [path for path, _ in pruned.deleted]
        result.retention_warnings = pruned.warnings
        result.retention_errors = pruned.errors
    log.info("%s: %s, verdict %s, %d entries", job.plan.volume, result.status.value, result.verdict, result.entries)


def _publish(job: _Job, journal: Journal, outcome: ArchiveOutcome, read: ReadBack) -> None:
    """Rename the validated archive and write its manifest as one journaled step (publish.py); on failure (disk
    full, I/O error, journal not writable) the volume fails and nothing of its archive is left."""
    result = job.result
    assert job.final is not None and job.partial_entry is not None
    result.archive = str(job.final)  # the manifest names it
    result.duration_s = time.monotonic() - job.clock
    try:
        result.manifest = str(
            publish_archive(
                job.final, build_manifest(result, job, outcome, read), journal, job.partial_entry, job.plan.volume
            )
        )
    except JournalError as error:  # nothing was renamed: the partial goes, with its entry if the journal lets us
        remove_partial(job.partial)
        _fail(result, f"could not publish {job.final.name}: {error.message}")
        _clear_entry(journal, job.partial_entry, result)
    except CoordError as error:
        _fail(result, error.message)


def _fail(result: VolumeResult, message: str) -> None:
    result.status = VolumeStatus.FAILED
    result.archive = result.manifest = None
    result.errors.append(message)


def _clear_entry(journal: Journal, entry: JournalEntry, result: VolumeResult) -> None:
    """Clear a journal entry whose file is gone; a journal that refuses is reported on the volume (`coord
    recover` clears the entry later: it finds nothing left to remove)."""
    try:
        journal.clear(entry)
    except CoordError as error:
        result.errors.append(error.message)


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


def _fill_from_outcome(result: VolumeResult, outcome: ArchiveOutcome) -> None:
    result.entries = outcome.entries
    result.size = outcome.size
    for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK, ProblemKind.SKIPPED):
        result.warnings[kind.value] = len(outcome.of_kind(kind))
    if outcome.consistency is not None:
        result.excluded_paths = len(outcome.consistency.excluded)
        result.verdict = outcome.consistency.verdict.value
        result.verdict_reasons = list(outcome.consistency.reasons)


def build_manifest(result: VolumeResult, job: _Job, outcome: ArchiveOutcome, read: ReadBack) -> dict[str, object]:
    """The manifest document: enough to verify the archive and to know how consistent it is, without coord."""
    plan, source, started = job.plan, job.source, job.started
    snapshot, modified, encryption = job.snapshot, job.modified_after_snapshot, job.encryption
    consistency = outcome.consistency
    warnings: dict[str, list[str]] = {
        kind.value: [p.path for p in outcome.of_kind(kind)]
        for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK)
    }
    warnings[ProblemKind.SKIPPED.value] = [f"{p.path}: {p.detail}" for p in outcome.of_kind(ProblemKind.SKIPPED)]
    return {
        "format": MANIFEST_FORMAT,
        "tool": "coord",
        "tool_version": __version__,
        "host": socket.gethostname(),
        "volume": result.volume,
        "policy": result.policy,
        "policy_file": str(plan.policy.path),
        "strategy": result.strategy,
        "status": result.status.value,
        "source": str(source),
        "excludes": list(plan.policy.policy.exclude),
        "excluded": list(consistency.excluded) if consistency else [],  # paths the excludes left out
        "started_at": started.isoformat(),
        "finished_at": datetime.fromtimestamp(outcome.finished_at, UTC).isoformat(),
        "archive": Path(result.archive or "").name,
        "compression": plan.policy.policy.compression.value,
        "encryption": encryption.to_manifest() if encryption else None,
        # sha256/size: the file as on disk (`sha256sum` checks it); stream_*: the compressed tar stream inside it
        # (the same as the file without encryption; `gpg -d FILE | sha256sum` with it).
        "size": read.size if read.sha256 else outcome.size,
        "sha256": read.sha256 if read.sha256 else outcome.sha256,
        "stream_size": outcome.size,
        "stream_sha256": outcome.sha256,
        "validated_by": WrittenArchiveCheck.method(encryption),
        "entries": outcome.entries,
        "entries_digest": outcome.entries_digest,
        "verdict": result.verdict,
        "verdict_reasons": result.verdict_reasons,
        "at_risk_directories": [c.to_json() for c in consistency.at_risk_directories] if consistency else [],
        "warnings": warnings,
        "containers": [c.to_json() for c in result.containers],
        "downtime_s": round(result.downtime_s, 3),
        "hooks": result.hooks,
        "attempts": result.attempts,
        "snapshot": {"method": snapshot.method.value, "modified_after": modified, "relinked": outcome.relinked}
        if snapshot
        else None,
    }
