"""The snapshot strategy's snapshot: a copy of the volume's tree that costs only links, made current while paused.

The snapshot is `<volume root>/.coord-snapshot-<pid>/`, taken in two steps so that the pause lasts as long as
the changes take to apply, not as long as the whole tree takes to link:

1. `prepare_snapshot`, while the containers run: `cp -a --link` builds the tree (every file a hard link to the
   same inode, directories and symlinks recreated with their owners, modes and times). Files vanish under it
   (the containers are writing), which is harmless: step 2 decides what the snapshot holds.
2. `complete_snapshot`, while they are paused: one pass over both trees (`scandir`, which gives each entry's
   inode without a stat) links what is new or was replaced, removes what is gone, copies new directories, and
   gives every directory the live one's owner, mode and times. Afterwards each name in the snapshot points to
   the inode that name had at the pause, which is what a `cp -a --link` taken inside the pause gives.

Where the file system can clone (btrfs, XFS with reflink), the copy is made in step 2 alone, with
`cp -a --reflink=always`: a clone does not share later writes, so one made before the pause would hold stale
content. The containers are unpaused and the archive is read from the snapshot.

A hard link shares its inode with the live file: a file modified IN PLACE after the unpause changes inside the
snapshot too. Stores whose files are immutable once written (ClickHouse parts, Kafka/Loki segments) never do
that; Postgres does all the time, so it is not a snapshot workload. coord detects it: after the archive is
read, any snapshot file whose mtime is later than the unpause is reported, and the verdict becomes at-risk.

Reading a hardlink snapshot while the volume's own names are removed (ClickHouse deleting a merged-away part)
makes tar say "file changed as we read it": removing a link changes the shared inode's ctime, which tar checks.
`content_unchanged` tells those apart from real changes (a write moves the mtime past the unpause), so the archive
step can record them as relinked instead of changed.

The snapshot directory is excluded from the archive (it is the archive's root, and never inside itself),
journaled before it is created, and removed after the archive, or by `coord recover` after a crash.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from coord.errors import CoordError
from coord.excludes import ExcludeMatcher

SNAPSHOT_PREFIX = ".coord-snapshot-"
ENVIRONMENT = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


class CloneMethod(StrEnum):
    HARDLINK = "hardlink"
    REFLINK = "reflink"


class SnapshotError(CoordError):
    """The snapshot cannot be taken here; the message says why and what to use instead."""


@dataclass
class Snapshot:
    path: Path
    method: CloneMethod
    unpaused_at_ns: int = 0  # set by the caller once the containers run again

    def modified_since_unpause(self, matcher: ExcludeMatcher) -> list[str]:
        """Files of a hardlink snapshot whose content changed after the unpause (relative paths), except the
        excluded ones (a part being written under tmp_insert_* when the pause came is finished afterwards)."""
        if self.method is CloneMethod.REFLINK or not self.unpaused_at_ns:
            return []
        changed = []
        for directory, subdirectories, files in os.walk(self.path):
            relative_directory = os.path.relpath(directory, self.path)
            prefix = "" if relative_directory == "." else relative_directory + "/"
            subdirectories[:] = [d for d in subdirectories if not matcher.excludes(prefix + d)]
            for name in files:
                if matcher.excludes(prefix + name):
                    continue
                full = os.path.join(directory, name)
                try:
                    if os.lstat(full).st_mtime_ns > self.unpaused_at_ns:
                        changed.append(os.path.relpath(full, self.path))
                except FileNotFoundError:
                    continue
        return sorted(changed)

    def content_unchanged(self, relative_path: str) -> bool:
        """True when the snapshot's file at `relative_path` is a regular file of a hardlink snapshot not written
        since the unpause: a "changed" report for it means only its inode's ctime moved (a link removed)."""
        if self.method is not CloneMethod.HARDLINK or not self.unpaused_at_ns:
            return False
        try:
            status = os.lstat(self.path / relative_path)
        except OSError:
            return False
        return stat.S_ISREG(status.st_mode) and status.st_mtime_ns <= self.unpaused_at_ns


def is_snapshot_name(name: str) -> bool:
    return name.startswith(SNAPSHOT_PREFIX)


def snapshot_path_for(source: Path) -> Path:
    return source / f"{SNAPSHOT_PREFIX}{os.getpid()}"


def detect_clone_method(source: Path) -> CloneMethod:
    """REFLINK when the file system under `source` can clone files, HARDLINK otherwise. Writes one probe file."""
    probe = source / f"{SNAPSHOT_PREFIX}probe-{os.getpid()}"
    clone = probe.with_name(probe.name + ".clone")
    try:
        probe.write_bytes(b"coord reflink probe")
        completed = subprocess.run(
            ["cp", "--reflink=always", str(probe), str(clone)], capture_output=True, env=ENVIRONMENT
        )
        return CloneMethod.REFLINK if completed.returncode == 0 else CloneMethod.HARDLINK
    except OSError as error:
        raise _refusal(source, error) from None
    finally:
        for path in (probe, clone):
            path.unlink(missing_ok=True)


def _refusal(source: Path, error: OSError) -> SnapshotError:
    reasons = {
        30: "the volume is mounted read-only (in sidecar mode, mount it read-write for the snapshot strategy)",
        28: "no space left on the volume's file system for the snapshot's directories",
        18: "part of the volume is on another file system (hard links cannot cross it)",
        13: "permission denied (coord must run as root on the host)",
    }
    why = reasons.get(error.errno or 0, error.strerror or str(error))
    return SnapshotError(f"snapshot of {source} impossible: {why}; use strategy pause or stop for this volume")


def prepare_snapshot(source: Path, snapshot: Path) -> Snapshot:
    """Step 1, while the containers run: choose the clone method and, for hard links, link the tree already.

    Raises SnapshotError when a snapshot cannot work here (read-only, cross-device, no space, permissions), so
    the volume is refused before any container is paused; removes what it made.
    """
    method = detect_clone_method(source)
    if method is CloneMethod.HARDLINK:
        # The tree changes under cp: "No such file or directory" for what the containers deleted meanwhile is
        # expected and mended by complete_snapshot. Only the reasons a snapshot cannot work here stop it.
        _clone_tree(source, snapshot, method, refuse_only=True)
    return Snapshot(snapshot, method)


def complete_snapshot(source: Path, snapshot: Snapshot) -> SyncCounts:
    """Step 2, while the containers are paused: make `snapshot` exactly the tree under `source` now.

    Raises SnapshotError (and removes the snapshot) when that fails.
    """
    try:
        counts = SyncCounts()
        if snapshot.method is CloneMethod.REFLINK:
            _clone_tree(source, snapshot.path, snapshot.method, refuse_only=False)
            counts.copied_directories = 1
        else:
            _sync_directory(str(source), str(snapshot.path), counts, at_root=True)
        _copy_directory_metadata(str(source), str(snapshot.path), counts)
        return counts
    except OSError as error:
        remove_snapshot(snapshot.path)
        raise _refusal(source, error) from None
    except SnapshotError:
        remove_snapshot(snapshot.path)
        raise


@dataclass
class SyncCounts:
    """What complete_snapshot changed in the prepared tree (logged: it is what the pause cost)."""

    linked: int = 0
    removed: int = 0
    copied_directories: int = 0
    directories_fixed: int = 0


def _sync_directory(live: str, copy: str, counts: SyncCounts, *, at_root: bool = False) -> None:
    """Make directory `copy` hold the same names, as links to the same inodes, as `live`; then its metadata."""
    with os.scandir(live) as entries:
        present = {entry.name: entry for entry in entries if not (at_root and is_snapshot_name(entry.name))}
    with os.scandir(copy) as entries:
        copied = {entry.name: entry for entry in entries}
    for name, entry in list(copied.items()):
        now = present.get(name)
        both_directories = now is not None and now.is_dir(follow_symlinks=False) and entry.is_dir(follow_symlinks=False)
        # Directories are the snapshot's own (new inodes): compared by content below. Anything else is the
        # live entry's inode, or stale.
        if now is None or (not both_directories and now.inode() != entry.inode()):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            del copied[name]
            counts.removed += 1
    for name, entry in present.items():
        was = copied.get(name)
        if entry.is_dir(follow_symlinks=False):
            if was is not None:
                _sync_directory(entry.path, was.path, counts)
            else:
                _clone_tree_into(entry.path, copy)
                counts.copied_directories += 1
        elif was is None:  # new, or replaced (its stale link was removed above)
            try:
                os.link(entry.path, os.path.join(copy, name), follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: something besides the paused containers writes here
            counts.linked += 1
    if not at_root:
        _copy_directory_metadata(live, copy, counts)


def _copy_directory_metadata(live: str, copy: str, counts: SyncCounts) -> None:
    """Owner, mode and times of the live directory, as `cp -a` gives them (times last: linking changed them)."""
    wanted = os.lstat(live)
    have = os.lstat(copy)
    if (have.st_uid, have.st_gid) != (wanted.st_uid, wanted.st_gid):
        os.chown(copy, wanted.st_uid, wanted.st_gid, follow_symlinks=False)
    if stat.S_IMODE(have.st_mode) != stat.S_IMODE(wanted.st_mode):
        os.chmod(copy, stat.S_IMODE(wanted.st_mode))
    if have.st_mtime_ns != wanted.st_mtime_ns:
        os.utime(copy, ns=(wanted.st_atime_ns, wanted.st_mtime_ns))
        counts.directories_fixed += 1


def _clone_tree_into(source_directory: str, target_parent: str) -> None:
    completed = subprocess.run(
        ["cp", "-a", "--link", "-t", target_parent, source_directory], capture_output=True, text=True, env=ENVIRONMENT
    )
    if completed.returncode != 0:
        raise SnapshotError(f"linking {source_directory} into the snapshot failed: {_last_line(completed.stderr)}")


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else "cp failed"


def _clone_tree(source: Path, snapshot: Path, method: CloneMethod, *, refuse_only: bool) -> None:
    """`cp -a` (--link or --reflink=always) of the tree under `source`, snapshot directories aside, into `snapshot`.

    Raises SnapshotError and removes the snapshot when cp fails; with `refuse_only`, only for the reasons a
    snapshot cannot work here (cross-device, no space, read-only): other failures are left for the sync to mend.
    """
    try:
        snapshot.mkdir(mode=0o700)
        entries = [entry for entry in os.listdir(source) if not is_snapshot_name(entry)]
    except OSError as error:
        remove_snapshot(snapshot)
        raise _refusal(source, error) from None
    clone = "--link" if method is CloneMethod.HARDLINK else "--reflink=always"
    # Batches keep the argument list short for volumes with many top-level entries.
    for start in range(0, len(entries), 500):
        batch = [str(source / name) for name in entries[start : start + 500]]
        completed = subprocess.run(
            ["cp", "-a", clone, "-t", str(snapshot), *batch],
            capture_output=True,
            text=True,
            env=ENVIRONMENT,
        )
        if completed.returncode == 0:
            continue
        for errno, words in ((18, "cross-device"), (28, "No space"), (30, "Read-only")):
            if words in completed.stderr:
                remove_snapshot(snapshot)
                message = next(line for line in completed.stderr.splitlines() if words in line)
                raise _refusal(source, OSError(errno, message))
        if not refuse_only:
            remove_snapshot(snapshot)
            raise SnapshotError(f"snapshot of {source} failed: {_last_line(completed.stderr)}")


def remove_snapshot(path: Path) -> None:
    """Remove a snapshot tree. Hard links only: the volume's own files are untouched."""
    if path.exists():
        shutil.rmtree(path)
