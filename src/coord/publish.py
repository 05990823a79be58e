"""Publishing an archive: its final name and its manifest appear together, or neither does.

    journal a PUBLISH entry (key: the archive's final path) -> clear the archive's PARTIAL entry
    -> write the manifest to .<archive>.manifest.json.publishing and fsync it
    -> rename <archive>.partial to <archive> -> rename the manifest to <archive>.manifest.json
    -> fsync the directory -> clear the PUBLISH entry

An archive without its manifest is invisible to listing and retention (nothing would ever prune it), so any
failure on the way (disk full at the manifest, an I/O error) rolls back: the temporary manifest and the archive
are removed and the volume fails with the reason. A crash leaves the PUBLISH entry, and `coord recover`
(`recover_publish`) completes the publish when a complete manifest describing the archive was written, and
otherwise removes what the entry names; it reports only files it actually removed or renamed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coord.errors import CoordError, PublishError
from coord.fsutil import fsync_directory
from coord.journal import PUBLISH, PUBLISHING, Journal, JournalEntry
from coord.manifest import manifest_path_for

log = logging.getLogger("coord.publish")

PUBLISHING_SUFFIX = ".publishing"


def partial_path_for(archive: Path) -> Path:
    return archive.with_name(archive.name + ".partial")


def manifest_temporary_for(archive: Path) -> Path:
    """Where the manifest is written before the archive is renamed (a dot file: listing and retention skip it)."""
    return archive.with_name(f".{manifest_path_for(archive).name}{PUBLISHING_SUFFIX}")


def publish_archive(
    archive: Path, manifest: dict[str, Any], journal: Journal, partial_entry: JournalEntry, volume: str
) -> Path:
    """Rename `archive`.partial to `archive` and write its manifest beside it, as one journaled step.

    Given the partial's journal entry (cleared here once the PUBLISH entry is on disk). Returns the manifest's
    path. Raises PublishError, after removing the archive and any temporary manifest, when a step fails; the
    journal entry is kept only when that clean-up failed too (then `coord recover` finishes it).
    """
    partial = partial_path_for(archive)
    temporary = manifest_temporary_for(archive)
    final_manifest = manifest_path_for(archive)
    entry = journal.record(PUBLISH, str(archive), PUBLISHING, volume)  # JournalError: the caller removes the partial
    journal.clear(partial_entry)  # from here on the PUBLISH entry alone names the partial
    step = "write the manifest"
    try:
        _write_synced(temporary, manifest)
        step = "rename the archive"
        rename_archive(partial, archive)
        step = "rename the manifest"
        os.rename(temporary, final_manifest)
        step = "sync the directory"
        fsync_directory(archive.parent)
    except OSError as error:
        removed, left = roll_back(archive)
        if not left:
            journal.clear(entry)
        what = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
        kept = (
            "the archive and its temporary manifest were removed"
            if not left
            else f"could not remove {', '.join(left)}: `coord recover` will"
        )
        log.error("%s: publish failed at '%s': %s; removed %s", volume, step, what, removed or "nothing")
        raise PublishError(f"could not publish {archive.name}: {step} failed: {what}; {kept}") from None
    journal.clear(entry)
    return final_manifest


def _write_synced(path: Path, document: dict[str, Any]) -> None:
    """Write `document` as JSON to `path` (a new file, not through a link) and fsync it; never leave it torn."""
    data = (json.dumps(document, indent=2, sort_keys=False) + "\n").encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def roll_back(archive: Path) -> tuple[list[str], list[str]]:
    """Remove the archive (final or partial) and the temporary manifest of an unfinished publish.

    Only regular files are removed (a link in their place is left and reported). Returns the paths removed and
    the paths that could not be removed.
    """
    removed: list[str] = []
    left: list[str] = []
    for path in (manifest_temporary_for(archive), archive, partial_path_for(archive)):
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError:
            left.append(str(path))
            continue
        if not stat.S_ISREG(status.st_mode):
            left.append(f"{path} (not a regular file: left alone)")
            continue
        try:
            path.unlink()
            removed.append(str(path))
        except FileNotFoundError:
            continue
        except OSError:
            left.append(str(path))
    if removed:
        try:
            fsync_directory(archive.parent)
        except OSError as error:
            log.warning("could not sync %s: %s", archive.parent, error.strerror)
    return removed, left


@dataclass
class PublishRecovery:
    """What `recover_publish` did: the files it completed and the files it removed (only ones that existed)."""

    completed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def recover_publish(entry: JournalEntry) -> PublishRecovery:
    """Finish or roll back the publish a dead run left (`entry` is its PUBLISH journal entry).

    Completed when the temporary manifest is whole and describes the archive (its name and size), or when the
    archive and its manifest are both in place already; otherwise rolled back (`roll_back`). Raises CoordError
    when something the entry names cannot be removed (the entry is then kept).
    """
    archive = Path(entry.key)
    done = PublishRecovery()
    if _is_regular(archive) and _is_regular(manifest_path_for(archive)):
        removed, left = roll_back_temporary_only(archive)
        done.removed += removed
        if left:
            raise CoordError(f"publish of {archive}: could not remove {', '.join(left)} (kept for next recovery)")
        return done
    source = archive if _is_regular(archive) else partial_path_for(archive)
    temporary = manifest_temporary_for(archive)
    if _is_regular(source) and _describes(temporary, archive, source):
        if source != archive:
            os.rename(source, archive)
        os.rename(temporary, manifest_path_for(archive))
        fsync_directory(archive.parent)
        done.completed.append(str(archive))
        return done
    removed, left = roll_back(archive)
    done.removed += removed
    if left:
        raise CoordError(f"publish of {archive}: could not remove {', '.join(left)} (kept for next recovery)")
    return done


def roll_back_temporary_only(archive: Path) -> tuple[list[str], list[str]]:
    """The publish finished (archive and manifest in place): only a stale temporary manifest may be left."""
    temporary = manifest_temporary_for(archive)
    if not _is_regular(temporary):
        return [], []
    try:
        temporary.unlink()
    except OSError:
        return [], [str(temporary)]
    return [str(temporary)], []


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _describes(manifest: Path, archive: Path, source: Path) -> bool:
    """True when `manifest` is a whole manifest of `archive` whose recorded size is that of `source`."""
    if not _is_regular(manifest):
        return False
    try:
        with open(manifest, encoding="utf-8") as handle:
            document = json.load(handle)
        size = os.lstat(source).st_size
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("archive") == archive.name and document.get("size") == size


def rename_archive(partial: Path, archive: Path) -> None:
    """The step that gives the archive its final name (a module function: a test kills coord right after it)."""
    os.rename(partial, archive)
