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
read, any snapshot file whose ctime is later than the unpause is reported, and the verdict becomes at-risk (ctime,
not mtime: a container can put the mtime back with `touch -d`, never the ctime).

Reading a hardlink snapshot while the volume's own names are removed (ClickHouse deleting a merged-away part)
moves the shared inode's ctime too, and makes tar say "file changed as we read it". `Snapshot._relinked` tells
those apart from real changes by the link count (fewer links than at the pause and the mtime not moved: a name was
removed), so they are neither reported as modified nor, by `content_unchanged`, as changed, but as relinked.

The snapshot directory is excluded from the archive (it is the archive's root, and never inside itself),
journaled before it is created, and removed after the archive, or by `coord recover` after a crash.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from coord.errors import CoordError
from coord.excludes import ExcludeMatcher

SNAPSHOT_PREFIX = ".coord-snapshot-"
ENVIRONMENT = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
    # inode -> how many names it has in the snapshot, for the files `_relinked` judges (worked out when needed)
    _names_in_snapshot: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def modified_since_unpause(self, matcher: ExcludeMatcher) -> list[str]:
        """Files of the snapshot changed after the unpause (relative paths, sorted), except the excluded ones (a
        part being written under tmp_insert_* when the pause came is finished afterwards).

        Changed: a ctime after the unpause, which no container can set back (mtime it can: `touch -d`), unless
        the move was only a name of a shared file removed from the volume (`_relinked`).
        """
        if not self.unpaused_at_ns:
            return []
        suspects = self._scan()
        return sorted(
            path
            for path, status in suspects.items()
            if not self._relinked(status) and not any(matcher.excludes(prefix) for prefix in _prefixes(path))
        )

    def content_unchanged(self, relative_path: str) -> bool:
        """True when the snapshot's file at `relative_path` is a regular file of a hardlink snapshot not changed
        since the unpause, or whose ctime moved only because a name of it was removed from the volume (the rule
        of modified_since_unpause): a "changed" report for it from tar means its content is the snapshot's."""
        if self.method is not CloneMethod.HARDLINK or not self.unpaused_at_ns:
            return False
        status = _lstat_beneath(self.path, relative_path)
        if status is None or not stat.S_ISREG(status.st_mode):
            return False
        if status.st_ctime_ns <= self.unpaused_at_ns:
            return True
        if status.st_ino not in self._names_in_snapshot:
            self._scan()
        return self._relinked(status)

    def _scan(self) -> dict[str, os.stat_result]:
        """Every non-directory of the snapshot whose ctime is after the unpause, with its lstat; for those of a
        hardlink snapshot whose mtime is not, counts the snapshot's names of their inode (for `_relinked`)."""
        suspects: dict[str, os.stat_result] = {}
        for path, entry in _walk_beneath(self.path):
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if status.st_ctime_ns > self.unpaused_at_ns:
                suspects[path] = status
        if self.method is CloneMethod.HARDLINK:
            wanted = {s.st_ino for s in suspects.values() if s.st_mtime_ns <= self.unpaused_at_ns}
            wanted -= self._names_in_snapshot.keys()
            if wanted:
                counts = dict.fromkeys(wanted, 0)
                for _, entry in _walk_beneath(self.path):
                    if entry.inode() in counts:
                        counts[entry.inode()] += 1
                self._names_in_snapshot.update(counts)
        return suspects

    def _relinked(self, status: os.stat_result) -> bool:
        """Whether a ctime move after the unpause is only the volume removing a name of this shared inode.

        In a hardlink snapshot each file shares its inode with the live volume, so its ctime moves for a change
        of the file (content, mode, owner, xattrs, a hard link added, a rename) and also when the volume removes
        one of its names (ClickHouse deleting a merged-away part). The link count tells them apart: at the pause
        the inode had at least 2k links, the snapshot's k names and the same k in the live tree it mirrors. Fewer
        now, with the mtime not past the unpause, means names were removed. What this cannot see (README says so):
        a file written in place, its mtime set back and one of its names removed, all after the unpause. A reflink
        snapshot shares nothing with the volume: any ctime move there is a change of the copy itself (it lies
        inside the volume, where containers can write).
        """
        if self.method is not CloneMethod.HARDLINK or status.st_mtime_ns > self.unpaused_at_ns:
            return False
        names = self._names_in_snapshot.get(status.st_ino, 0)
        return names > 0 and status.st_nlink < 2 * names


def _lstat_beneath(root: Path, relative_path: str) -> os.stat_result | None:
    """lstat of `root/relative_path`, its directories opened without following a link; None when not there."""
    *directories, name = relative_path.split("/")
    try:
        descriptor = os.open(root, _DIRECTORY_FLAGS)
    except OSError:
        return None
    try:
        for directory in directories:
            following = os.open(directory, _DIRECTORY_FLAGS, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = following
        return os.stat(name, dir_fd=descriptor, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def _prefixes(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']: an excluded directory excludes what lies below it."""
    parts = path.split("/")
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


def _walk_beneath(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every non-directory below `root` as (relative path, entry), through directory descriptors: a directory
    replaced by a link is not entered (O_NOFOLLOW), and `entry.stat(follow_symlinks=False)` is an fstatat on its
    directory's descriptor. Directories that vanish are skipped."""
    try:
        root_descriptor = os.open(root, _DIRECTORY_FLAGS)
    except OSError:
        return
    pending: list[tuple[str, int]] = [("", root_descriptor)]
    try:
        while pending:
            prefix, descriptor = pending[-1]
            with os.scandir(descriptor) as entries:
                listing = list(entries)
            for entry in listing:
                if not entry.is_dir(follow_symlinks=False):
                    yield prefix + entry.name, entry  # the descriptor stays open for entry.stat
            pending.pop()
            try:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        try:
                            child = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=descriptor)
                        except OSError:
                            continue  # gone, or no longer a directory
                        pending.append((prefix + entry.name + "/", child))
            finally:
                os.close(descriptor)
    finally:
        for _, descriptor in pending:
            os.close(descriptor)


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
