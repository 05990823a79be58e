"""Retention: which archives of a volume to keep, and deleting the others together with their manifests.

Rules (a policy's `retention:`): keep the newest `keep_last` verified archives; keep every archive started less
than `keep_days` days ago. An archive either rule keeps is kept. Whatever the rules say:

- the newest verified archive is never deleted, and neither is the archive the current run just wrote;
- an archive counts (for a rule, for "newest verified", for `latest`) only when coord can prove it is the file its
  manifest describes: the manifest is named exactly `<archive>.manifest.json`, no other manifest names the same
  archive, the manifest's `volume` is the directory's name, and the file's size and sha256 equal the manifest's
  `size` and `sha256`. "Verified" means that and a manifest status of ok or warning (the manifest is only written
  after the read-back passed). A file's name and a manifest's claim alone are never trusted;
- an archive whose manifest dates it in the future (`started_at` more than FUTURE_TOLERANCE after now: a clock
  that was wrong, or a copy) is kept and reported, never counted: it takes no `keep_last` place and is never the
  newest. Deleting it would trust the same wrong date; the operator decides;
- an archive that two manifests name (a copied manifest) is kept and reported, never counted and never deleted;
- archives that do not match their manifest (size, sha256, volume), manifests under another name than their
  archive's, files without a manifest, manifests without their file, `.partial` files (a run may be writing them)
  and unreadable manifests are left alone and reported;
- an archive and its manifest go together: the archive first, then the manifest, so an interruption leaves at
  worst a manifest without its archive (reported on the next prune), never an archive nothing accounts for;
- the runner applies retention only after a successful backup of the volume: a failed run deletes nothing.

Hashing every archive at every prune would read the whole destination each time, so each archive's content is
hashed at most once while it is unchanged: `ArchiveHashes` remembers the sha256 of each file it hashed, keyed by
(st_dev, st_ino, size, mtime_ns, ctime_ns) in `<state_dir>/archive-hashes.json`. Any change to the file changes
its ctime, which no one can set back, so a remembered hash is only used for the same, unchanged file. The archive
a run just wrote is taken from that run's own hash (its read-back), not hashed again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from coord.fsutil import fsync_directory, write_json_atomically
from coord.hashing import hash_stream
from coord.manifest import MANIFEST_SUFFIX, read_manifest
from coord.policy import RetentionSettings

log = logging.getLogger("coord.retention")

VERIFIED_STATUSES = ("ok", "warning")
# How far in the future a start time may be before it is treated as wrong: the clocks of two hosts writing to one
# destination may disagree by a little.
FUTURE_TOLERANCE = timedelta(minutes=5)
HASHES_FILE = "archive-hashes.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredArchive:
    """An archive coord wrote, as its manifest describes it."""

    archive: Path
    manifest: Path
    started_at: datetime
    status: str
    written_by_this_run: bool = False

    @property
    def verified(self) -> bool:
        """Validated when it was written (the manifest is only written after the read-back passed)."""
        return self.status in VERIFIED_STATUSES


@dataclass(frozen=True)
class WrittenArchive:
    """The archive the current run just published, with the size and sha256 its own read-back measured."""

    path: Path
    size: int
    sha256: str


def is_future(started_at: datetime, now: datetime) -> bool:
    """Whether a start time is later than now plus FUTURE_TOLERANCE (a wrong clock, or a copy)."""
    return started_at > now + FUTURE_TOLERANCE


def future_reason(started_at: datetime, now: datetime) -> str | None:
    """Why an archive started at `started_at` is held rather than counted (dated in the future), or None."""
    if not is_future(started_at, now):
        return None
    return f"dated in the future (started_at {started_at.isoformat()}, now {now.isoformat()}): not counted"


def future_warning(name: object, why: str) -> str:
    """The warning for an archive held because it is dated in the future."""
    return f"{name}: {why}, kept; check the clock of the host that wrote it"


def _stat_key(info: os.stat_result) -> list[int]:
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


class ArchiveHashes:
    """The sha256 of archive files, remembered per unchanged file so that each is read at most once.

    Given the state directory (None: remember nothing across runs). Loading and saving never raise: an unreadable
    or unwritable file only means archives are hashed again.
    """

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / HASHES_FILE if state_dir is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.changed = False
        if self.path is not None:
            try:
                document = json.loads(self.path.read_text(encoding="utf-8"))
                files = document.get("files") if isinstance(document, dict) else None
                if isinstance(files, dict):
                    self.entries = {k: v for k, v in files.items() if isinstance(v, dict)}
            except (OSError, ValueError) as error:
                if not isinstance(error, FileNotFoundError):
                    log.warning("cannot read %s (%s); archives will be hashed again", self.path, error)

    def remember(self, path: Path, info: os.stat_result, sha256: str) -> None:
        """Record `sha256` as the content hash of the file at `path` as `info` describes it."""
        self.entries[str(path)] = {"stat": _stat_key(info), "sha256": sha256}
        self.changed = True

    def forget(self, path: Path) -> None:
        if self.entries.pop(str(path), None) is not None:
            self.changed = True

    def sha256_of(self, path: Path) -> tuple[os.stat_result, str]:
        """The file's stat and sha256: remembered when the file is unchanged, else read (without following a
        link) and remembered. Raises OSError when the file cannot be opened or read."""
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as handle:
            before = os.fstat(handle.fileno())
            known = self.entries.get(str(path))
            if known is not None and known.get("stat") == _stat_key(before) and isinstance(known.get("sha256"), str):
                return before, str(known["sha256"])
            sha256, _ = hash_stream(handle)
            after = os.fstat(handle.fileno())
        if _stat_key(after) == _stat_key(before):  # a file that changed while it was read is hashed again next time
            self.remember(path, after, sha256)
        return after, sha256

    def save(self) -> None:
        """Write the remembered hashes back, without those of files that are gone. Never raises."""
        if self.path is None or not self.changed:
            return
        kept = {name: entry for name, entry in self.entries.items() if os.path.lexists(name)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_json_atomically(self.path, {"format": 1, "files": kept})
            self.changed = False
        except OSError as error:
            log.warning("cannot write %s (%s); archives will be hashed again", self.path, error)


@dataclass
class StoredArchives:
    """What one volume directory holds, as retention sees it."""

    archives: list[StoredArchive] = field(default_factory=list)  # counted: proven to match; newest first
    held: list[tuple[StoredArchive, str]] = field(default_factory=list)  # kept, never counted: (archive, why)
    warnings: list[str] = field(default_factory=list)  # what the operator should look at, one line each
    mismatched: list[str] = field(default_factory=list)  # of those, archives that differ from their manifest
    ignored: list[str] = field(default_factory=list)  # 'path: why it is left alone' (ordinary leftovers)


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class _Claim:
    manifest: Path
    document: dict[str, Any]
    archive_name: str
    started_at: datetime


def _read_claims(volume_dir: Path, found: StoredArchives) -> list[_Claim]:
    claims = []
    for manifest in sorted(volume_dir.iterdir()):
        if not manifest.name.endswith(MANIFEST_SUFFIX) or manifest.name.startswith("."):
            continue
        try:
            regular = stat.S_ISREG(manifest.lstat().st_mode)
        except OSError as error:
            found.ignored.append(f"{manifest}: cannot stat ({error.strerror}); left alone")
            continue
        if not regular:
            found.warnings.append(f"{manifest}: not a regular file; left alone")
            continue
        try:
            # Typed as a mapping, but a replaced file may hold any JSON: one that is not a mapping has no usable keys.
            parsed: object = read_manifest(manifest)
        except (OSError, ValueError) as error:
            found.ignored.append(f"{manifest}: unreadable manifest ({error}); left alone")
            continue
        document: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        archive_name = document.get("archive")
        started_at = parse_time(document.get("started_at"))
        if (
            not isinstance(archive_name, str)
            or not archive_name
            or "/" in archive_name
            or archive_name.startswith(".")
            or started_at is None
        ):
            found.ignored.append(f"{manifest}: manifest without a usable 'archive' and 'started_at'; left alone")
            continue
        claims.append(_Claim(manifest, document, archive_name, started_at))
    return claims


def _content_problem(
    archive: Path, document: dict[str, Any], hashes: ArchiveHashes, written: WrittenArchive | None
) -> str | None:
    """Why the archive is not the file its manifest describes (size, sha256), or None when it is."""
    size, sha256 = document.get("size"), document.get("sha256")
    usable_size = isinstance(size, int) and not isinstance(size, bool)
    if not usable_size or not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        return "its manifest records no usable 'size' and 'sha256'"
    info = archive.lstat()
    if info.st_size != size:
        return f"is {info.st_size} bytes, its manifest says {size}"
    if written is not None and written.path == archive and written.size == size and written.sha256 == sha256:
        hashes.remember(archive, info, sha256)  # this run's own read-back hashed it a moment ago
        return None
    _, actual = hashes.sha256_of(archive)
    if actual != sha256:
        return f"has sha256 {actual}, its manifest says {sha256}"
    return None


def find_archives(
    volume_dir: Path,
    now: datetime,
    hashes: ArchiveHashes | None = None,
    written: WrittenArchive | None = None,
) -> StoredArchives:
    """The archives in one volume's directory (<dest>/<volume>), sorted into those that count (newest first),
    those kept without counting, and what was left alone and why (see the module's rules).

    `hashes` remembers content hashes (a fresh one without a state directory when not given); `written` is the
    archive this run published, trusted from its own hash. Never raises for a file it cannot read: that file is
    reported and left alone.
    """
    found = StoredArchives()
    if not volume_dir.is_dir():
        return found
    hashes = hashes if hashes is not None else ArchiveHashes(None)
    claims = _read_claims(volume_dir, found)
    claimed_by: dict[str, list[Path]] = {}
    for claim in claims:
        claimed_by.setdefault(claim.archive_name, []).append(claim.manifest)
    for claim in claims:
        archive = _claimed_file(volume_dir, claim, found)
        if archive is None:
            continue
        item = StoredArchive(
            archive,
            claim.manifest,
            claim.started_at,
            str(claim.document.get("status", "")),
            written_by_this_run=written is not None and written.path == archive,
        )
        others = [other for other in claimed_by[claim.archive_name] if other != claim.manifest]
        if _set_aside(item, claim.document, others, volume_dir.name, now, found):
            continue
        if _matches_its_manifest(item, claim.document, hashes, written, found):
            found.archives.append(item)
    _report_unclaimed(volume_dir, claims, found)
    found.archives.sort(key=lambda item: (item.started_at, item.archive.name), reverse=True)
    return found


def _claimed_file(volume_dir: Path, claim: _Claim, found: StoredArchives) -> Path | None:
    """The archive a manifest claims, when the manifest bears the archive's name and the archive is a regular file
    (a link is never followed). Otherwise None, with the reason recorded in `found`."""
    manifest, archive_name = claim.manifest, claim.archive_name
    archive = volume_dir / archive_name
    if manifest.name != archive_name + MANIFEST_SUFFIX:
        found.warnings.append(
            f"{manifest}: names archive {archive_name} but is not {archive_name}{MANIFEST_SUFFIX} (a copy?); "
            "not counted, left alone"
        )
        return None
    try:
        info = archive.lstat()
    except FileNotFoundError:
        found.ignored.append(f"{manifest}: its archive {archive_name} is missing; left alone")
        return None
    except OSError as error:
        found.warnings.append(f"{archive}: cannot stat ({error.strerror}); left alone")
        return None
    if not stat.S_ISREG(info.st_mode):
        found.warnings.append(f"{archive}: not a regular file; not counted, left alone")
        return None
    return archive


def _set_aside(
    item: StoredArchive,
    document: dict[str, Any],
    other_claims: list[Path],
    volume: str,
    now: datetime,
    found: StoredArchives,
) -> bool:
    """Whether the archive is kept without counting (named by other manifests too, or dated in the future: added
    to `found.held`) or left alone (its manifest is for another volume), with the reason recorded in `found`."""
    if other_claims:
        why = f"also named by {', '.join(str(other) for other in other_claims)}: claimed twice, never deleted"
        found.held.append((item, why))
        found.warnings.append(f"{item.archive}: {why}; remove the copied manifest")
        return True
    if document.get("volume") != volume:
        found.warnings.append(
            f"{item.archive}: its manifest is for volume {document.get('volume')!r}, not {volume!r}; "
            "not counted, left alone"
        )
        return True
    if (future := future_reason(item.started_at, now)) is not None:
        found.held.append((item, future))
        found.warnings.append(future_warning(item.archive, future))
        return True
    return False


def _matches_its_manifest(
    item: StoredArchive,
    document: dict[str, Any],
    hashes: ArchiveHashes,
    written: WrittenArchive | None,
    found: StoredArchives,
) -> bool:
    """Whether the archive's size and sha256 are its manifest's; when not (or it cannot be read), the mismatch is
    recorded in `found.warnings` and `found.mismatched`."""
    try:
        problem = _content_problem(item.archive, document, hashes, written)
    except OSError as error:
        problem = f"cannot be read ({error.strerror})"
    if problem is None:
        return True
    mismatch = f"{item.archive}: {problem}; does not match its manifest, not counted, left alone"
    found.warnings.append(mismatch)
    found.mismatched.append(mismatch)
    return False


def _report_unclaimed(volume_dir: Path, claims: list[_Claim], found: StoredArchives) -> None:
    """Record in `found.ignored` every file that is neither a manifest nor named by a manifest of its own name
    (a `.partial` a run may be writing, or a file without a manifest)."""
    named = {claim.archive_name for claim in claims if claim.manifest.name == claim.archive_name + MANIFEST_SUFFIX}
    for path in sorted(volume_dir.iterdir()):
        if path.name.endswith(MANIFEST_SUFFIX) or path.name in named or path.name.startswith("."):
            continue
        why = "being written or left by a failed run" if path.name.endswith(".partial") else "no manifest"
        found.ignored.append(f"{path}: {why}; left alone")


class RetainedArchive(Protocol):
    """What retention decides on: an archive in a local directory (StoredArchive) or on any target
    (targets.archives.ListedArchive). `archive` tells archives apart."""

    @property
    def archive(self) -> Hashable: ...

    @property
    def started_at(self) -> datetime: ...

    @property
    def status(self) -> str: ...

    @property
    def verified(self) -> bool: ...

    @property
    def written_by_this_run(self) -> bool: ...


Retained = TypeVar("Retained", bound=RetainedArchive)


@dataclass
class RetentionPlan(Generic[Retained]):
    keep: list[tuple[Retained, str]] = field(default_factory=list)
    delete: list[tuple[Retained, str]] = field(default_factory=list)


def plan_retention(archives: Sequence[Retained], rules: RetentionSettings, now: datetime) -> RetentionPlan[Retained]:
    """Decide, for archives sorted newest first, which to keep and which to delete, each with its reason.

    Each archive file appears once in the plan. Whatever the input, an archive dated in the future or listed
    twice is kept without counting, the archive the current run wrote is kept, and the newest verified archive
    (of those that count) is kept. The same decisions for every target: a local directory or a remote.
    """
    plan: RetentionPlan[Retained] = RetentionPlan()
    listed: dict[Hashable, int] = {}
    for item in archives:
        listed[item.archive] = listed.get(item.archive, 0) + 1
    counted = [item for item in archives if listed[item.archive] == 1 and not is_future(item.started_at, now)]
    newest_verified = next((item for item in counted if item.verified), None)
    per_period = period_keepers(counted, rules)
    verified_rank = 0
    decided: set[Hashable] = set()
    for item in archives:
        if item.archive in decided:
            continue
        decided.add(item.archive)
        if listed[item.archive] > 1:
            plan.keep.append((item, "listed more than once: never deleted, not counted"))
            continue
        if is_future(item.started_at, now):
            plan.keep.append((item, f"dated in the future (started_at {item.started_at.isoformat()}): not counted"))
            continue
        reasons = []
        if item.written_by_this_run:
            reasons.append("written by this run")
        if item is newest_verified:
            reasons.append("newest verified archive (always kept)")
        if item.verified:
            verified_rank += 1
            if rules.keep_last is not None and verified_rank <= rules.keep_last:
                reasons.append(f"among the newest {rules.keep_last} (keep_last)")
        reasons += per_period.get(item.archive, [])
        age = now - item.started_at
        if rules.keep_days is not None and age < timedelta(days=rules.keep_days):
            reasons.append(f"started {age.total_seconds() / 86400:.1f} days ago (keep_days {rules.keep_days})")
        if reasons:
            plan.keep.append((item, "; ".join(reasons)))
        else:
            plan.delete.append((item, _why_delete(item, rules, age)))
    return plan


# keep_daily / keep_weekly / keep_monthly: the period an archive's (UTC) start falls in, for each rule.
PERIODS: tuple[tuple[str, str, Callable[[datetime], Hashable]], ...] = (
    ("keep_daily", "day", lambda moment: moment.date()),
    ("keep_weekly", "week", lambda moment: moment.isocalendar()[:2]),
    ("keep_monthly", "month", lambda moment: (moment.year, moment.month)),
)


def period_keepers(counted: Sequence[RetainedArchive], rules: RetentionSettings) -> dict[Hashable, list[str]]:
    """For keep_daily/weekly/monthly N: the newest verified archive of each of the newest N periods (days, ISO
    weeks, months, in UTC) that have one, as restic's `forget --keep-*` count them. `counted`: newest first.
    Returns each kept archive's reasons, by its key."""
    reasons: dict[Hashable, list[str]] = {}
    for rule, word, period_of in PERIODS:
        wanted = getattr(rules, rule)
        if wanted is None:
            continue
        seen: set[Hashable] = set()
        for item in counted:
            if not item.verified:
                continue
            period = period_of(item.started_at.astimezone(UTC))
            if period in seen:
                continue
            if len(seen) == wanted:
                break
            seen.add(period)
            reasons.setdefault(item.archive, []).append(f"newest verified of its {word} ({rule} {wanted})")
    return reasons


def _why_delete(item: RetainedArchive, rules: RetentionSettings, age: timedelta) -> str:
    parts = []
    if rules.keep_last is not None:
        parts.append(f"not among the newest {rules.keep_last}" if item.verified else f"status {item.status or '?'}")
    if rules.keep_days is not None:
        parts.append(f"started {age.total_seconds() / 86400:.1f} days ago (keep_days {rules.keep_days})")
    periods = [f"{rule} {getattr(rules, rule)}" for rule, _, _ in PERIODS if getattr(rules, rule) is not None]
    if periods:
        parts.append(f"not the newest verified of a period kept by {', '.join(periods)}")
    return ", ".join(parts)


@dataclass
class PruneResult:
    volume: str
    kept: list[tuple[str, str]] = field(default_factory=list)  # (archive path, reason)
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (archive path, reason); planned when dry_run
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # future-dated, copied or mismatching manifests
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    target: str = "local"  # the target the volume's archives are on (`local`: --dest)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "volume": self.volume,
            "dry_run": self.dry_run,
            "kept": [{"archive": path, "reason": why} for path, why in self.kept],
            "deleted": [{"archive": path, "reason": why} for path, why in self.deleted],
            "ignored": self.ignored,
            "warnings": self.warnings,
            "errors": self.errors,
        }


def prune_volume(
    volume_dir: Path,
    rules: RetentionSettings,
    now: datetime,
    dry_run: bool = False,
    written: WrittenArchive | None = None,
    hashes: ArchiveHashes | None = None,
) -> PruneResult:
    """Apply the retention rules to the archives in one volume's directory (<dest>/<volume>: its name is the
    volume's, as the manifests inside must say).

    `written`: the archive this run just published (never deleted by this call, trusted from its own hash);
    `hashes`: remembered content hashes (saved back at the end). Never raises for a file it cannot read or delete:
    that is a warning or an error in the result, and a manifest whose archive could not be deleted stays.
    """
    volume = volume_dir.name
    hashes = hashes if hashes is not None else ArchiveHashes(None)
    found = find_archives(volume_dir, now, hashes, written)
    plan = plan_retention(found.archives, rules, now)
    result = PruneResult(volume=volume, ignored=found.ignored, warnings=found.warnings, dry_run=dry_run)
    result.kept = [(str(item.archive), why) for item, why in [*found.held, *plan.keep]]
    for line in found.warnings:
        log.warning("%s: %s", volume, line)
    for item, why in plan.delete:
        if written is not None and item.archive == written.path:  # plan_retention keeps it; never trust that alone
            result.errors.append(f"refused to delete {item.archive}: this run wrote it")
            continue
        if not dry_run:
            try:
                item.archive.unlink()
                item.manifest.unlink()
            except OSError as error:
                result.errors.append(f"cannot delete {error.filename}: {error.strerror}")
                continue
            finally:
                if not item.archive.exists():
                    hashes.forget(item.archive)
            log.info("%s: deleted %s (%s)", volume, item.archive.name, why)
        result.deleted.append((str(item.archive), why))
    if result.deleted and not dry_run:
        try:
            fsync_directory(volume_dir)
        except OSError as error:
            result.errors.append(f"cannot sync {volume_dir}: {error.strerror}")
    hashes.save()
    return result


def prune_all(
    policies_dir: Path, dest: Path, policy_names: tuple[str, ...], dry_run: bool, state_dir: Path | None = None
) -> list[PruneResult]:
    """`coord prune`: apply every selected policy's retention to the volume directories under `dest`.

    Which policy owns a directory is decided as for a backup (an exact name beats a glob), over the directory
    names rather than Docker's volumes: archives of a volume that no longer exists are still pruned, and Docker is
    not needed. Content hashes are remembered under `state_dir`. Raises PolicyError/UsageError before anything is
    deleted.
    """
    from coord.plan import plan_volumes
    from coord.policy import load_policies

    policies = load_policies(policies_dir, policy_names or None)
    now = datetime.now(UTC)
    hashes = ArchiveHashes(state_dir)
    results = []
    for plan in plan_volumes(policies, volume_directories(dest), policy_names or None):
        rules = plan.policy.policy.retention
        if plan.error is None and rules is not None:
            results.append(prune_volume(dest / plan.volume, rules, now, dry_run, hashes=hashes))
    return results


@dataclass
class LatestArchive:
    """The newest archive of a volume that counts (see the module's rules), and the newer files passed over."""

    archive: Path | None
    skipped: list[str] = field(default_factory=list)  # newer candidates and why they were passed over
    mismatched: list[str] = field(default_factory=list)  # archives that differ from their manifest (corrupt?)


def choose_latest(volume_dir: Path, now: datetime, state_dir: Path | None = None) -> LatestArchive:
    """`latest` for verify/restore: the newest verified archive whose manifest matches it, not dated in the
    future. Everything that was passed over (future-dated, claimed twice, not matching, not verified) is listed."""
    hashes = ArchiveHashes(state_dir)
    found = find_archives(volume_dir, now, hashes)
    hashes.save()
    skipped = list(found.warnings)
    for item in found.archives:
        if item.verified:
            return LatestArchive(item.archive, skipped, found.mismatched)
        skipped.append(f"{item.archive}: status {item.status or '?'}, not verified")
    return LatestArchive(None, skipped, found.mismatched)


def latest_archive(volume_dir: Path, state_dir: Path | None = None) -> Path | None:
    """The newest verified archive of a volume that matches its manifest and is not dated in the future, or None."""
    return choose_latest(volume_dir, datetime.now(UTC), state_dir).archive


def is_volume_directory(name: str) -> bool:
    """Whether a name at a target's root (or a node's area) can be a volume's directory of archives. Names
    starting with `.` or `_` are coord's own (temporaries; `_nodes/`, a Swarm node's area; `_runs/`, run records:
    run_records.py): a Docker volume's name starts with a letter or digit."""
    return bool(name) and "/" not in name and not name.startswith((".", "_"))


def volume_directories(dest: Path) -> list[str]:
    """The volume names that have a directory of archives under `dest` (is_volume_directory)."""
    if not dest.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(dest) if entry.is_dir() and is_volume_directory(entry.name))
