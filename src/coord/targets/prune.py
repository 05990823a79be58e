"""Retention on every target: `coord prune` and the backup's own pruning, with the same decisions everywhere.

A local target is pruned exactly as `--dest` always was (retention.prune_volume: archives proven by their sha256,
the archive deleted before its manifest). On a remote target retention decides with the same rules
(retention.plan_retention) over the complete archives the target lists (targets/archives.py), and deletes the
manifest first, then the archive: the archive leaves the listing the moment its manifest goes, so an
interruption leaves at worst an archive without manifest, which is never listed, counted or `latest` (and which
the next prune reports); the other order could leave a manifest naming nothing, listed as complete.

Whatever the rules say, the newest verified archive of each volume on each target is kept, and so is the
archive the current run just wrote there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from coord.errors import CoordError
from coord.policy import RetentionSettings
from coord.retention import ArchiveHashes, PruneResult, WrittenArchive, plan_retention, prune_volume
from coord.targets.archives import ArchiveStore, LocalStore, Ref, ResticStore

log = logging.getLogger("coord.retention")


@dataclass(frozen=True)
class LandedArchive:
    """The archive a backup run just put on a target: its file name there, and the size and sha256 the run's own
    check measured (those its manifest records)."""

    file: str
    size: int
    sha256: str


def prune_store_volume(
    store: ArchiveStore,
    volume: str,
    rules: RetentionSettings,
    now: datetime,
    dry_run: bool = False,
    written: LandedArchive | None = None,
) -> PruneResult:
    """Apply `rules` to the archives of `volume` on `store`. `written`: the archive this run just put there (never
    deleted; on a local target trusted from the run's own hash). Never raises for an archive it cannot read or
    delete, nor for a target that cannot be listed: those are errors in the result."""
    if isinstance(store, LocalStore):
        directory = store.volume_directory(volume)
        this_one = WrittenArchive(directory / written.file, written.size, written.sha256) if written else None
        hashes = ArchiveHashes(store.state_dir)
        result = prune_volume(directory, rules, now, dry_run, written=this_one, hashes=hashes)
        result.target = store.name
        return result
    result = PruneResult(volume=volume, target=store.name, dry_run=dry_run)
    try:
        listing = store.list_volume(volume, now)
    except CoordError as error:
        result.errors.append(error.message)
        return result
    result.ignored, result.warnings = listing.ignored, listing.warnings
    written_ref = str(Ref(store.name, volume, written.file, store.node)) if written else None
    archives = [replace(item, written_by_this_run=item.archive == written_ref) for item in listing.archives]
    plan = plan_retention(archives, rules, now)
    result.kept = [(str(item.ref), why) for item, why in [*listing.held, *plan.keep]]
    for item, why in plan.delete:
        if item.archive == written_ref:  # plan_retention keeps it; never trust that alone
            result.errors.append(f"refused to delete {item.ref}: this run wrote it")
            continue
        if not dry_run:
            try:
                store.delete(item)
            except (OSError, CoordError) as error:
                message = error.message if isinstance(error, CoordError) else str(error)
                result.errors.append(f"cannot delete {item.ref}: {message}")
                continue
            log.info("%s: deleted %s (%s)", store.name, item.ref, why)
        result.deleted.append((str(item.ref), why))
    if isinstance(store, ResticStore) and result.deleted and not dry_run:
        try:  # the forgotten snapshots' data: restic prune, once per volume (it waits for other restic locks)
            store.compact()
        except CoordError as error:
            result.errors.append(f"restic prune after forgetting: {error.message}")
    return result


def prune_stores(
    policies_dir: Path, stores: list[ArchiveStore], policy_names: tuple[str, ...], dry_run: bool
) -> list[PruneResult]:
    """`coord prune`: apply every selected policy's retention to the volume directories of every target.

    Which policy owns a directory is decided as for a backup (an exact name beats a glob), over the directory
    names: archives of a volume that no longer exists are still pruned, and Docker is not needed. A target that
    cannot be listed gives one result with its error; the others are pruned. Raises PolicyError/UsageError before
    anything is deleted.
    """
    from coord.plan import plan_volumes
    from coord.policy import load_policies

    policies = load_policies(policies_dir, policy_names or None)
    now = datetime.now(UTC)
    results = []
    for store in stores:
        try:
            volumes = store.volumes()
        except CoordError as error:
            results.append(PruneResult(volume="", target=store.name, errors=[error.message], dry_run=dry_run))
            continue
        for plan in plan_volumes(policies, volumes, policy_names or None):
            rules = plan.policy.policy.retention
            if plan.error is None and rules is not None:
                results.append(prune_store_volume(store, plan.volume, rules, now, dry_run))
    return results
