"""One backup run from start to finish.

    load policies -> plan (which volume, which policy) -> for each volume:
        quiesce per strategy -> archive to .partial (encrypted on the way when the policy says so)
        -> restore containers -> decide status -> read back and compare -> publish (rename) -> write manifest
        -> apply retention (only after a successful backup of that volume)

Policy problems are raised before anything is touched. Problems of one volume fail that volume, not the run.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from coord import __version__
from coord.archive import ArchiveOutcome, archive_suffix, create_archive
from coord.consistency import Verdict
from coord.docker_ops import DockerControl
from coord.encrypt import DEFAULT_STATE_DIR, GPG_SUFFIX, Encryption, encryption_for
from coord.errors import CoordError, PolicyError
from coord.excludes import ExcludeMatcher
from coord.manifest import MANIFEST_FORMAT, fsync_directory, manifest_path_for, write_json_atomically
from coord.policy import LoadedPolicy, OnAtRisk, Strategy, is_glob, load_policies
from coord.problems import ProblemKind
from coord.results import RunResult, VolumeResult, VolumeStatus
from coord.retention import prune_volume
from coord.strategies import quiesced
from coord.verify import ReadBack, WrittenArchiveCheck

log = logging.getLogger("coord")


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
    passphrase_file: Path | None = None  # symmetric encryption for policies without `encrypt:`


@dataclass(frozen=True)
class VolumePlan:
    """One volume to back up under one policy, or a pattern that matched nothing (`error`)."""

    volume: str
    policy: LoadedPolicy
    error: str | None = None

    @property
    def strategy(self) -> Strategy:
        return self.policy.policy.strategy


def plan_volumes(
    policies: Sequence[LoadedPolicy], existing_volumes: Sequence[str], selected: Sequence[str] | None = None
) -> list[VolumePlan]:
    """Decide which policy backs up which existing volume, for the `selected` policies (all when None).

    Ownership is decided over all policies, selected or not, so `--policy a` never takes a volume that policy b
    names exactly. An exact name beats a glob; two policies whose globs match one volume is a PolicyError (the
    operator must say which owns it). An exact name that does not exist, or a glob matching nothing, becomes a
    failed plan: a backup that silently stops covering a volume is worse than a loud failure.
    """
    exact_owner = {
        pattern: item for item in policies for pattern in item.policy.volumes if not is_glob(pattern)
    }
    glob_owner: dict[str, LoadedPolicy] = {}
    missing: list[VolumePlan] = []
    conflicts: list[str] = []
    for item in policies:
        for pattern in item.policy.volumes:
            if not is_glob(pattern):
                if pattern not in existing_volumes and item.policy.strategy is not Strategy.EXCLUDE:
                    missing.append(VolumePlan(pattern, item, f"volume '{pattern}' does not exist (docker volume ls)"))
                continue
            matches = [name for name in existing_volumes if fnmatch.fnmatchcase(name, pattern)]
            if not matches and item.policy.strategy is not Strategy.EXCLUDE:
                missing.append(VolumePlan(pattern, item, f"pattern '{pattern}' matches no volume (docker volume ls)"))
            for name in matches:
                if name in exact_owner:
                    continue
                owner = glob_owner.setdefault(name, item)
                if owner.name != item.name:
                    conflicts.append(
                        f"{item.path}: volumes: '{name}' is matched by policy '{owner.name}' and by '{item.name}'; "
                        "name it exactly in the one that should own it"
                    )
    if conflicts:
        raise PolicyError(conflicts)
    wanted = set(selected) if selected else {item.name for item in policies}
    owners = {**glob_owner, **exact_owner}
    plans = [plan for plan in missing if plan.policy.name in wanted]
    plans += [
        VolumePlan(name, owners[name])
        for name in existing_volumes
        if name in owners and owners[name].name in wanted
    ]
    return sorted(plans, key=lambda plan: (plan.policy.name, plan.volume))


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


def decide_status(outcome: ArchiveOutcome, on_at_risk: OnAtRisk) -> tuple[VolumeStatus, list[str]]:
    """The volume's status from what archiving found, and the errors that made it fail (if it did)."""
    critical = [problem.describe() for problem in outcome.critical]
    if critical:
        return VolumeStatus.FAILED, critical
    verdict = outcome.consistency.verdict if outcome.consistency else None
    if verdict is Verdict.AT_RISK and on_at_risk is OnAtRisk.FAIL:
        reasons = outcome.consistency.reasons if outcome.consistency else []
        return VolumeStatus.FAILED, ["verdict at-risk and the policy says on_at_risk: fail: " + "; ".join(reasons)]
    if verdict is not Verdict.CONSISTENT or any(
        outcome.of_kind(kind) for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK)
    ):
        return VolumeStatus.WARNING, []
    return VolumeStatus.OK, []


def run_backup(request: BackupRequest, docker: DockerControl, progress: Progress | None = None) -> RunResult:
    """Back up every volume the selected policies cover. Raises PolicyError/UsageError before touching anything."""
    policies = load_policies(request.policies_dir, request.policy_names or None)
    plans = plan_volumes(policies, docker.volume_names(), request.policy_names or None)
    result = RunResult()
    for plan in plans:
        options = {"state_dir": request.state_dir, "passphrase_file": request.passphrase_file}
        result.volumes.append(back_up_volume(plan, request.dest, docker, progress, **options))
    return result


def back_up_volume(
    plan: VolumePlan,
    dest: Path,
    docker: DockerControl,
    progress: Progress | None = None,
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    passphrase_file: Path | None = None,
) -> VolumeResult:
    """Archive one volume under its policy. Never raises for a problem of this volume: it fails the result."""
    policy = plan.policy.policy
    result = VolumeResult(
        volume=plan.volume, policy=plan.policy.name, strategy=plan.strategy.value, status=VolumeStatus.FAILED
    )
    if plan.error:
        result.errors.append(plan.error)
        return result
    if plan.strategy is Strategy.EXCLUDE:
        result.status = VolumeStatus.EXCLUDED
        return result
    started = datetime.now(UTC)
    clock = time.monotonic()
    try:
        source = Path(docker.volume_mountpoint(plan.volume))
        encryption = encryption_for(policy.encrypt, state_dir, passphrase_file)
        suffix = archive_suffix(policy.compression) + (GPG_SUFFIX if encryption else "")
        final = archive_path(dest, plan.volume, started, suffix)
    except CoordError as error:
        result.errors.append(error.message)
        return result
    except OSError as error:
        result.errors.append(f"destination {dest}: {error.strerror}")
        return result
    partial = final.with_name(final.name + ".partial")
    matcher = ExcludeMatcher.of(policy.exclude)
    log.info("%s: archiving %s (policy %s, strategy %s)", plan.volume, source, plan.policy.name, plan.strategy)
    if progress:
        progress.begin(plan.volume)
    check = WrittenArchiveCheck(policy.compression, encryption)
    try:
        with quiesced(plan.strategy) as actions:
            result.containers = actions
            outcome = create_archive(
                source, partial, matcher, policy.compression, progress.update if progress else None, check.write
            )
    except CoordError as error:
        result.errors.append(error.message)
        partial.unlink(missing_ok=True)
        return result
    finally:
        check.end_writing()
        if progress:
            progress.end()

    _fill_from_outcome(result, outcome)
    result.status, errors = decide_status(outcome, policy.on_at_risk)
    result.errors.extend(errors)
    read = ReadBack()
    if result.status is not VolumeStatus.FAILED:
        read, mismatches = check.read_back(partial, outcome)
        result.size = read.size
        if mismatches:
            result.status = VolumeStatus.FAILED
            result.errors.extend(f"validation: {problem}" for problem in mismatches)
    if result.status is VolumeStatus.FAILED:
        partial.unlink(missing_ok=True)
        result.duration_s = time.monotonic() - clock
        return result

    os.rename(partial, final)
    fsync_directory(final.parent)
    result.archive = str(final)
    result.duration_s = time.monotonic() - clock
    manifest = manifest_path_for(final)
    write_json_atomically(manifest, build_manifest(result, plan, source, outcome, started, read, encryption))
    result.manifest = str(manifest)
    log.info("%s: %s, verdict %s, %d entries", plan.volume, result.status.value, result.verdict, result.entries)
    if policy.retention is not None:
        # Only here, after this volume's archive was validated and published: a failed run deletes nothing.
        pruned = prune_volume(plan.volume, final.parent, policy.retention, datetime.now(UTC))
        result.pruned = [path for path, _ in pruned.deleted]
        result.retention_errors = pruned.errors
    return result


def _fill_from_outcome(result: VolumeResult, outcome: ArchiveOutcome) -> None:
    result.entries = outcome.entries
    result.size = outcome.size
    for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK, ProblemKind.SKIPPED):
        result.warnings[kind.value] = len(outcome.of_kind(kind))
    if outcome.consistency is not None:
        result.warnings[ProblemKind.SKIPPED.value] += len(outcome.consistency.excluded)
        result.verdict = outcome.consistency.verdict.value
        result.verdict_reasons = list(outcome.consistency.reasons)


def build_manifest(
    result: VolumeResult,
    plan: VolumePlan,
    source: Path,
    outcome: ArchiveOutcome,
    started: datetime,
    read: ReadBack | None = None,
    encryption: Encryption | None = None,
) -> dict[str, object]:
    """The manifest document: enough to verify the archive and to know how consistent it is, without coord."""
    consistency = outcome.consistency
    warnings: dict[str, list[str]] = {
        kind.value: [p.path for p in outcome.of_kind(kind)]
        for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK)
    }
    warnings[ProblemKind.SKIPPED.value] = [f"{p.path}: {p.detail}" for p in outcome.of_kind(ProblemKind.SKIPPED)] + [
        f"{path}: excluded by policy" for path in (consistency.excluded if consistency else [])
    ]
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
        "started_at": started.isoformat(),
        "finished_at": datetime.fromtimestamp(outcome.finished_at, UTC).isoformat(),
        "archive": Path(result.archive or "").name,
        "compression": plan.policy.policy.compression.value,
        "encryption": encryption.to_manifest() if encryption else None,
        # sha256/size: the file as on disk (`sha256sum` checks it); stream_*: the compressed tar stream inside it
        # (the same as the file without encryption; `gpg -d FILE | sha256sum` with it).
        "size": read.size if read and read.sha256 else outcome.size,
        "sha256": read.sha256 if read and read.sha256 else outcome.sha256,
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
    }
