"""The snapshot strategy's snapshot: a copy of the volume's tree that costs only links, made current while paused.

Taken in two steps so that the pause lasts as long as the changes take to apply, not as long as the whole tree
takes to link:

1. `prepare_snapshot`, while the containers run: the tree is linked (every non-directory a hard link to the same
   inode, directories recreated with their owners, modes, times and extended attributes). Entries vanish under
   it (the containers are writing), which is harmless: step 2 decides what the snapshot holds.
2. `complete_snapshot`, while they are paused: one pass over both trees (`scandir`, which gives each entry's
   inode without a stat) links what is new or was replaced, removes what is gone, copies new directories, and
   gives every directory the live one's owner, mode and times. Afterwards each name in the snapshot points to
   the inode that name had at the pause, which is what a `cp -a --link` taken inside the pause gives.

Where the file system can clone (btrfs, XFS with reflink), the copy is made in step 2 alone, every regular file
cloned (FICLONE): a clone does not share later writes, so one made before the pause would hold stale content.
The containers are unpaused and the archive is read from the snapshot.

A hard link shares its inode with the live file: a file modified IN PLACE after the unpause changes inside the
snapshot too. Stores whose files are immutable once written (ClickHouse parts, Kafka/Loki segments) never do
that; Postgres does all the time, so it is not a snapshot workload. coord detects it: after the archive is
read, any snapshot file whose ctime is later than the unpause is reported, and the verdict becomes at-risk (ctime,
not mtime: a container can put the mtime back with `touch -d`, never the ctime).

Reading a hardlink snapshot while the volume's own names are removed (ClickHouse deleting a merged-away part)
moves the shared inode's ctime too, and makes tar say "file changed as we read it". `Snapshot._relinked` tells
those apart from real changes by the link count (fewer links than at the pause and the mtime not moved: a name was
removed), so they are neither reported as modified nor, by `content_unchanged`, as changed, but as relinked.

The volume's content is hostile (docs/security.md): a container may plant links at any name at any moment.
Everything here works through directory descriptors (fsutil.py): the live tree is walked with O_NOFOLLOW opens,
the snapshot directory is created exclusively under a random name and its identity journaled, every entry is
linked, cloned or removed with `*at` calls, the archive is read through `/proc/<pid>/fd/<fd>` of the snapshot's
own descriptor, and removal checks that identity first. Where it lives (`snapshot_parent_for`): on the host,
beside the volume's `_data` in Docker's root-only volume directory, which no container sees; in a sidecar (or
when `_data` is a mount of its own), inside the volume root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from coord.errors import CoordError
from coord.excludes import ExcludeMatcher
from coord.fsutil import (
    Identity,
    NotOurs,
    clone_file,
    create_file_at,
    descriptor_path,
    lstat_beneath,
    make_directory_at,
    open_directory,
    open_directory_at,
    remove_directory,
    remove_entry_at,
)

SNAPSHOT_PREFIX = ".coord-snapshot-"
# Inside the fresh snapshot directory, before anything else is in it: no name in the volume root is ever probed.
PROBE_SOURCE = ".reflink-probe"
PROBE_CLONE = ".reflink-probe-clone"
# A live entry that vanished or changed type between its listing and coord's O_NOFOLLOW open (or link): the
# containers are writing. Skipped; step 2 decides what the snapshot holds.
VANISHED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
# FICLONE refused: this file system cannot clone (or not between these two files).
CANNOT_CLONE = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS, errno.EPERM)
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class CloneMethod(StrEnum):
    HARDLINK = "hardlink"
    REFLINK = "reflink"


class SnapshotError(CoordError):
    """The snapshot cannot be taken here; the message says why and what to use instead."""


@dataclass
class Snapshot:
    """A snapshot directory coord made, held open: `fd` is what every later step reads and writes through."""

    path: Path  # where it is: for messages and the journal, never to reach it again
    identity: Identity
    method: CloneMethod
    fd: int
    skip_prefixes: tuple[str, ...] = (SNAPSHOT_PREFIX,)  # coord's own names at the volume root, never copied
    unpaused_at_ns: int = 0  # set by the caller once the containers run again
    # inode -> how many names it has in the snapshot, for the files `_relinked` judges (worked out when needed)
    _names_in_snapshot: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def read_path(self) -> Path:
        """The path tar reads: the directory `fd` holds, whatever has the name `path` by now."""
        return descriptor_path(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def modified_since_unpause(self, matcher: ExcludeMatcher) -> list[str]:
        """Files of the snapshot changed after the unpause (relative paths, sorted), except the excluded ones (a
        part being written under tmp_insert_* when the pause came is finished afterwards).

        Changed: a ctime after the unpause, which no container can set back (mtime it can: `touch -d`), unless
        the move was only a name of a shared file removed from the volume (`_relinked`).
        """
        if not self.unpaused_at_ns or self.fd < 0:
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
        if self.method is not CloneMethod.HARDLINK or not self.unpaused_at_ns or self.fd < 0:
            return False
        status = lstat_beneath(self.fd, relative_path)
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
        for path, entry in _walk_beneath(self.fd):
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
                for _, entry in _walk_beneath(self.fd):
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


def _prefixes(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']: an excluded directory excludes what lies below it."""
    parts = path.split("/")
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


def _walk_beneath(root_fd: int) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every non-directory below the directory `root_fd` as (relative path, entry), through directory
    descriptors: a directory replaced by a link is not entered (O_NOFOLLOW), and `entry.stat(follow_symlinks=False)`
    is an fstatat on its directory's descriptor. Directories that vanish are skipped."""
    try:
        root_descriptor = os.open(".", _DIRECTORY_FLAGS, dir_fd=root_fd)  # its own descriptor: the walk closes it
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


def snapshot_parent_for(source: Path) -> Path:
    """The directory the snapshot of the volume root `source` is made in.

    On the host the root is Docker's `/var/lib/docker/volumes/<name>/_data`; its parent is root-only (0701) on the
    same file system, and no container can see it: a snapshot there is out of every container's reach, and the
    containers never see it appear. That parent is used when it is on the same file system as `source` (hard
    links need that; a volume with driver options has its own mount at `_data`), owned by root (or coord's user)
    and writable by no one else. Otherwise (sidecar mode, `/volumes/<name>` is a mount; any other layout) the
    snapshot goes inside the volume root, where the descriptor-based work of this module keeps it safe.
    """
    parent = source.parent
    if source.name != "_data":
        return source
    try:
        root_status = os.stat(source)
        parent_status = os.lstat(parent)
    except OSError:
        return source
    private = (
        stat.S_ISDIR(parent_status.st_mode)
        and parent_status.st_dev == root_status.st_dev
        and parent_status.st_uid in (0, os.geteuid())
        and not parent_status.st_mode & 0o022
    )
    return parent if private else source


def new_snapshot_path(source: Path) -> Path:
    """A fresh snapshot path for the volume root `source`: `.coord-snapshot-<random>`, nothing anyone can plant
    ahead of time (and were it planted, the exclusive mkdir refuses it)."""
    return snapshot_parent_for(source) / f"{SNAPSHOT_PREFIX}{secrets.token_hex(8)}"


def detect_clone_method(directory_fd: int) -> CloneMethod:
    """REFLINK when the file system of the (fresh, coord-made) directory `directory_fd` can clone, HARDLINK
    otherwise. Two files are created exclusively inside that directory, cloned one into the other with
    FICLONE between the two descriptors, and removed: no path is written, nothing a container can swap."""
    source = create_file_at(directory_fd, PROBE_SOURCE)
    try:
        os.write(source, b"coord reflink probe")
        target = create_file_at(directory_fd, PROBE_CLONE)
        try:
            clone_file(source, target)
            return CloneMethod.REFLINK
        except OSError as error:
            if error.errno in CANNOT_CLONE:
                return CloneMethod.HARDLINK
            raise
        finally:
            os.close(target)
    finally:
        os.close(source)
        for name in (PROBE_SOURCE, PROBE_CLONE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=directory_fd)


def _refusal(source: Path, error: OSError) -> SnapshotError:
    reasons = {
        errno.EROFS: "the volume is mounted read-only (in sidecar mode, mount it read-write for the snapshot strategy)",
        errno.ENOSPC: "no space left on the volume's file system for the snapshot's directories",
        errno.EXDEV: "part of the volume is on another file system (hard links cannot cross it)",
        errno.EACCES: "permission denied (coord must run as root on the host)",
        errno.EPERM: "operation not permitted (coord must run as root on the host)",
    }
    why = reasons.get(error.errno or 0, error.strerror or str(error))
    return SnapshotError(f"snapshot of {source} impossible: {why}; use strategy pause or stop for this volume")


def prepare_snapshot(
    source: Path,
    path: Path,
    on_created: Callable[[Identity], None] | None = None,
    skip_prefixes: tuple[str, ...] = (SNAPSHOT_PREFIX,),
) -> Snapshot:
    """Step 1, while the containers run: create the snapshot directory `path` (from new_snapshot_path)
    exclusively, tell `on_created` its identity (the caller journals it before anything is linked), choose the
    clone method and, for hard links, link the tree already. Entries of the volume root named with one of
    `skip_prefixes` (coord's own directories) are never copied.

    Returns the snapshot, open. Raises SnapshotError when a snapshot cannot work here (read-only,
    cross-device, no space, permissions, something already at `path`), so the volume is refused before any
    container is paused; removes what it made.
    """
    try:
        live = open_directory(source)
    except OSError as error:
        raise _refusal(source, error) from None
    snapshot: Snapshot | None = None
    try:
        parent = live if path.parent == source else open_directory(path.parent)
        try:
            fd, identity = make_directory_at(parent, path.name)
        finally:
            if parent != live:
                os.close(parent)
        snapshot = Snapshot(path, identity, CloneMethod.HARDLINK, fd, skip_prefixes)
        if on_created is not None:
            on_created(identity)
        snapshot.method = detect_clone_method(fd)
        if snapshot.method is CloneMethod.HARDLINK:
            _sync_directory(live, fd, SyncCounts(), snapshot, at_root=True)
        return snapshot
    except OSError as error:
        _discard(snapshot)
        raise _refusal(source, error) from None
    except BaseException:
        _discard(snapshot)
        raise
    finally:
        os.close(live)


def complete_snapshot(source: Path, snapshot: Snapshot) -> SyncCounts:
    """Step 2, while the containers are paused: make the snapshot exactly the tree under `source` now.

    Raises SnapshotError (and removes the snapshot) when that fails.
    """
    counts = SyncCounts()
    try:
        live = open_directory(source)
        try:
            _sync_directory(live, snapshot.fd, counts, snapshot, at_root=True)
            _copy_directory_metadata(live, snapshot.fd, counts)
        finally:
            os.close(live)
        if snapshot.method is CloneMethod.REFLINK:
            counts.copied_directories = 1
        return counts
    except OSError as error:
        _discard(snapshot)
        raise _refusal(source, error) from None
    except BaseException:
        _discard(snapshot)
        raise


@dataclass
class SyncCounts:
    """What complete_snapshot changed in the prepared tree (logged: it is what the pause cost)."""

    linked: int = 0
    removed: int = 0
    copied_directories: int = 0
    directories_fixed: int = 0


def _sync_directory(live: int, copy: int, counts: SyncCounts, snapshot: Snapshot, *, at_root: bool = False) -> None:
    """Make the directory `copy` hold the same names as `live`: for hard links, links to the same inodes; for
    reflinks, clones of the regular files. Both are open descriptors; nothing below them is reached by path."""
    present = {
        entry.name: entry for entry in _entries(live) if not (at_root and entry.name.startswith(snapshot.skip_prefixes))
    }
    copied = {entry.name: entry for entry in _entries(copy)}
    for name, entry in list(copied.items()):
        now = present.get(name)
        both_directories = now is not None and now.is_dir(follow_symlinks=False) and entry.is_dir(follow_symlinks=False)
        # Directories are the snapshot's own (new inodes): compared by content below. Anything else is the
        # live entry's inode, or stale.
        if now is None or (not both_directories and now.inode() != entry.inode()):
            remove_entry_at(copy, entry)
            del copied[name]
            counts.removed += 1
    for name, entry in present.items():
        try:
            if entry.is_dir(follow_symlinks=False):
                _sync_subdirectory(live, copy, name, name in copied, counts, snapshot)
            elif name not in copied:  # new, or replaced (its stale link was removed above)
                _copy_entry(live, copy, entry, counts, snapshot.method)
        except OSError as error:
            if error.errno not in VANISHED:
                raise


def _sync_subdirectory(live: int, copy: int, name: str, exists: bool, counts: SyncCounts, snapshot: Snapshot) -> None:
    live_child = open_directory_at(live, name)  # ELOOP/ENOTDIR: it became a link or a file since the listing
    try:
        if not exists:
            copy_child, _ = make_directory_at(copy, name)
            _copy_extended_attributes(live_child, copy_child)
            counts.copied_directories += 1
        else:
            copy_child = open_directory_at(copy, name)
        try:
            _sync_directory(live_child, copy_child, counts, snapshot)
            _copy_directory_metadata(live_child, copy_child, counts)
        finally:
            os.close(copy_child)
    finally:
        os.close(live_child)


def _copy_entry(live: int, copy: int, entry: os.DirEntry[str], counts: SyncCounts, method: CloneMethod) -> None:
    """Link (or, for a regular file under REFLINK, clone) the non-directory `entry` of `live` into `copy`."""
    if method is CloneMethod.REFLINK and entry.is_file(follow_symlinks=False):
        _clone_regular_file(live, copy, entry.name)
    else:
        # linkat without AT_SYMLINK_FOLLOW: a symlink is linked as the link itself, never its target.
        os.link(entry.name, entry.name, src_dir_fd=live, dst_dir_fd=copy, follow_symlinks=False)
    counts.linked += 1


def _clone_regular_file(live: int, copy: int, name: str) -> None:
    """A reflink clone of the regular file `name` with its owner, mode, extended attributes and times."""
    # O_NONBLOCK: were a fifo swapped in since the listing, the open must not wait for a writer.
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=live)
    try:
        status = os.fstat(source)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.ENOENT, "replaced since the listing", name)
        target = create_file_at(copy, name)
        try:
            clone_file(source, target)
            os.chown(target, status.st_uid, status.st_gid)
            os.chmod(target, stat.S_IMODE(status.st_mode))
            _copy_extended_attributes(source, target)
            os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
        finally:
            os.close(target)
    finally:
        os.close(source)


def _copy_directory_metadata(live: int, copy: int, counts: SyncCounts) -> None:
    """Owner, mode and times of the live directory, as `cp -a` gives them (times last: linking changed them)."""
    wanted = os.fstat(live)
    have = os.fstat(copy)
    if (have.st_uid, have.st_gid) != (wanted.st_uid, wanted.st_gid):
        os.chown(copy, wanted.st_uid, wanted.st_gid)
    if stat.S_IMODE(have.st_mode) != stat.S_IMODE(wanted.st_mode):
        os.chmod(copy, stat.S_IMODE(wanted.st_mode))
    if have.st_mtime_ns != wanted.st_mtime_ns:
        os.utime(copy, ns=(wanted.st_atime_ns, wanted.st_mtime_ns))
        counts.directories_fixed += 1


def _copy_extended_attributes(source: int, target: int) -> None:
    """Every extended attribute (ACLs and capabilities are ones) of `source` onto `target`, where the file
    system has them; a file system without them has none to lose."""
    try:
        names = os.listxattr(source)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return
        raise
    for name in names:
        with contextlib.suppress(FileNotFoundError):  # ENODATA is an OSError too: removed since the listing
            os.setxattr(target, name, os.getxattr(source, name))


def _entries(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as entries:
        return list(entries)


def _discard(snapshot: Snapshot | None) -> None:
    """Close and remove a snapshot this module made, when a step fails; a failure to remove is left to the
    caller's journal entry (`coord recover`)."""
    if snapshot is None:
        return
    snapshot.close()
    with contextlib.suppress(OSError, NotOurs):
        remove_directory(snapshot.path, snapshot.identity)


def remove_snapshot(path: Path, identity: Identity | None) -> bool:
    """Remove the snapshot directory `path` if it is the one coord made (`identity`, journaled when it was
    created). Hard links only: the volume's own files are untouched, and nothing is followed.

    Returns True when it was removed, False when nothing is at `path`. Raises NotOurs when something else is
    there (a planted link, a directory coord did not make, or no identity recorded to prove it), left alone;
    OSError when removing failed.
    """
    if identity is None:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "a file"
        raise NotOurs(str(path), f"{what} coord cannot prove it made (no identity journaled for it)")
    try:
        remove_directory(path, identity)
    except FileNotFoundError:
        return False
    return True
