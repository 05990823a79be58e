"""The snapshot strategy's snapshot: a copy of the volume's tree that costs only links, taken while paused.

While the containers are paused, coord builds `<volume root>/.coord-snapshot-<pid>/` with `cp -a --link`
(every file a hard link to the same inode, directories and symlinks recreated with their owners, modes and
times), or with `cp -a --reflink=always` where the file system can clone (btrfs, XFS with reflink): then the
copy is independent of later writes. The containers are unpaused and the archive is read from the snapshot.

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


def take_snapshot(source: Path, snapshot: Path, method: CloneMethod) -> Snapshot:
    """Clone the tree under `source` (except snapshot directories) into `snapshot`. Fast: run it while paused.

    Raises SnapshotError with the reason (read-only, no space, cross-device) and removes what it made.
    """
    try:
        root = os.lstat(source)
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
        if completed.returncode != 0:
            remove_snapshot(snapshot)
            message = completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "cp failed"
            for errno, words in ((18, "cross-device"), (28, "No space"), (30, "Read-only")):
                if words in message:
                    raise _refusal(source, OSError(errno, message))
            raise SnapshotError(f"snapshot of {source} failed: {message}")
    os.chown(snapshot, root.st_uid, root.st_gid)
    os.chmod(snapshot, root.st_mode & 0o7777)
    os.utime(snapshot, ns=(root.st_atime_ns, root.st_mtime_ns))
    return Snapshot(snapshot, method)


def remove_snapshot(path: Path) -> None:
    """Remove a snapshot tree. Hard links only: the volume's own files are untouched."""
    if path.exists():
        shutil.rmtree(path)
