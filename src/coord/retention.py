"""Retention: which archives of a volume to keep, and deleting the others together with their manifests.

Rules (a policy's `retention:`): keep the newest `keep_last` verified archives; keep every archive started less
than `keep_days` days ago. An archive either rule keeps is kept. Whatever the rules say:

- the newest verified archive (its manifest says ok or warning, and the file is there) is never deleted;
- only archives coord wrote are considered: a file named by the manifest beside it. Files without a manifest,
  manifests without their file, `.partial` files (a run may be writing them) and unreadable manifests are left
  alone and reported;
- an archive and its manifest go together: the archive first, then the manifest, so an interruption leaves at
  worst a manifest without its archive (reported on the next prune), never an archive nothing accounts for;
- the runner applies retention only after a successful backup of the volume: a failed run deletes nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coord.manifest import MANIFEST_SUFFIX, fsync_directory, read_manifest
from coord.policy import RetentionSettings

log = logging.getLogger("coord.retention")

VERIFIED_STATUSES = ("ok", "warning")


@dataclass(frozen=True)
class StoredArchive:
    """An archive coord wrote, as its manifest describes it."""

    archive: Path
    manifest: Path
    started_at: datetime
    status: str

    @property
    def verified(self) -> bool:
        """Validated when it was written (the manifest is only written after the read-back passed)."""
        return self.status in VERIFIED_STATUSES


@dataclass
class StoredArchives:
    archives: list[StoredArchive] = field(default_factory=list)  # newest first
    ignored: list[str] = field(default_factory=list)  # 'path: why it is left alone'


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def find_archives(volume_dir: Path) -> StoredArchives:
    """The archives in one volume's directory (<dest>/<volume>), newest first, and what was left out and why."""
    found = StoredArchives()
    if not volume_dir.is_dir():
        return found
    named: set[str] = set()
    manifests = sorted(p for p in volume_dir.iterdir() if p.name.endswith(MANIFEST_SUFFIX) and p.is_file())
    for manifest in manifests:
        try:
            document = read_manifest(manifest)
        except (OSError, ValueError) as error:
            found.ignored.append(f"{manifest}: unreadable manifest ({error}); left alone")
            continue
        archive_name = document.get("archive") if isinstance(document, dict) else None
        started_at = _parse_time(document.get("started_at")) if isinstance(document, dict) else None
        if not isinstance(archive_name, str) or not archive_name or "/" in archive_name or started_at is None:
            found.ignored.append(f"{manifest}: manifest without a usable 'archive' and 'started_at'; left alone")
            continue
        named.add(archive_name)
        archive = volume_dir / archive_name
        if not archive.is_file():
            found.ignored.append(f"{manifest}: its archive {archive_name} is missing; left alone")
            continue
        found.archives.append(StoredArchive(archive, manifest, started_at, str(document.get("status", ""))))
    for path in sorted(volume_dir.iterdir()):
        if path.name.endswith(MANIFEST_SUFFIX) or path.name in named or path.name.startswith("."):
            continue
        why = "being written or left by a failed run" if path.name.endswith(".partial") else "no manifest"
        found.ignored.append(f"{path}: {why}; left alone")
    found.archives.sort(key=lambda item: (item.started_at, item.archive.name), reverse=True)
    return found


@dataclass
class RetentionPlan:
    keep: list[tuple[StoredArchive, str]] = field(default_factory=list)
    delete: list[tuple[StoredArchive, str]] = field(default_factory=list)


def plan_retention(archives: list[StoredArchive], rules: RetentionSettings, now: datetime) -> RetentionPlan:
    """Decide, for archives sorted newest first, which to keep and which to delete, each with its reason."""
    plan = RetentionPlan()
    newest_verified = next((item for item in archives if item.verified), None)
    verified_rank = 0
    for item in archives:
        reasons = []
        if item is newest_verified:
            reasons.append("newest verified archive (always kept)")
        if item.verified:
            verified_rank += 1
            if rules.keep_last is not None and verified_rank <= rules.keep_last:
                reasons.append(f"among the newest {rules.keep_last} (keep_last)")
        age = now - item.started_at
        if rules.keep_days is not None and age < timedelta(days=rules.keep_days):
            reasons.append(f"started {age.total_seconds() / 86400:.1f} days ago (keep_days {rules.keep_days})")
        if reasons:
            plan.keep.append((item, "; ".join(reasons)))
        else:
            plan.delete.append((item, _why_delete(item, rules, age)))
    return plan


def _why_delete(item: StoredArchive, rules: RetentionSettings, age: timedelta) -> str:
    parts = []
    if rules.keep_last is not None:
        parts.append(f"not among the newest {rules.keep_last}" if item.verified else f"status {item.status or '?'}")
    if rules.keep_days is not None:
        parts.append(f"started {age.total_seconds() / 86400:.1f} days ago (keep_days {rules.keep_days})")
    return ", ".join(parts)


@dataclass
class PruneResult:
    volume: str
    kept: list[tuple[str, str]] = field(default_factory=list)  # (archive path, reason)
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (archive path, reason); planned when dry_run
    ignored: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "dry_run": self.dry_run,
            "kept": [{"archive": path, "reason": why} for path, why in self.kept],
            "deleted": [{"archive": path, "reason": why} for path, why in self.deleted],
            "ignored": self.ignored,
            "errors": self.errors,
        }


def prune_volume(
    volume: str, volume_dir: Path, rules: RetentionSettings, now: datetime, dry_run: bool = False
) -> PruneResult:
    """Apply the retention rules to one volume's archives. Never raises for a file it cannot delete: that is an
    error in the result, and its manifest stays (so the archive is still accounted for)."""
    found = find_archives(volume_dir)
    plan = plan_retention(found.archives, rules, now)
    result = PruneResult(volume=volume, ignored=found.ignored, dry_run=dry_run)
    result.kept = [(str(item.archive), why) for item, why in plan.keep]
    for item, why in plan.delete:
        if not dry_run:
            try:
                item.archive.unlink()
                item.manifest.unlink()
            except OSError as error:
                result.errors.append(f"cannot delete {error.filename}: {error.strerror}")
                continue
            log.info("%s: deleted %s (%s)", volume, item.archive.name, why)
        result.deleted.append((str(item.archive), why))
    if result.deleted and not dry_run:
        try:
            fsync_directory(volume_dir)
        except OSError as error:
            result.errors.append(f"cannot sync {volume_dir}: {error.strerror}")
    return result


def prune_all(policies_dir: Path, dest: Path, policy_names: tuple[str, ...], dry_run: bool) -> list[PruneResult]:
    """`coord prune`: apply every selected policy's retention to the volume directories under `dest`.

    Which policy owns a directory is decided as for a backup (an exact name beats a glob), over the directory
    names rather than Docker's volumes: archives of a volume that no longer exists are still pruned, and Docker is
    not needed. Raises PolicyError/UsageError before anything is deleted.
    """
    from coord.policy import load_policies
    from coord.runner import plan_volumes  # runner imports this module

    policies = load_policies(policies_dir, policy_names or None)
    now = datetime.now(UTC)
    results = []
    for plan in plan_volumes(policies, volume_directories(dest), policy_names or None):
        rules = plan.policy.policy.retention
        if plan.error is None and rules is not None:
            results.append(prune_volume(plan.volume, dest / plan.volume, rules, now, dry_run))
    return results


def latest_archive(volume_dir: Path) -> Path | None:
    """The newest archive of a volume (by the start time its manifest records), or None."""
    found = find_archives(volume_dir)
    return found.archives[0].archive if found.archives else None


def volume_directories(dest: Path) -> list[str]:
    """The volume names that have a directory of archives under `dest`."""
    if not dest.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(dest) if entry.is_dir() and not entry.name.startswith("."))
