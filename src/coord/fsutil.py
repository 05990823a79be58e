"""Link-safe file-system work inside volumes, whose content is hostile.

A container owns its volume and may plant a symbolic link (or anything else) at any name, at any moment, even
between two system calls of coord's. Coord runs as root on the host, so a path that follows such a link can
overwrite or delete any host file. Therefore, inside a volume:

- a name is only ever looked up relative to a directory file descriptor, one component at a time, with
  O_NOFOLLOW (the `*at` calls), never as a path that the kernel walks through links;
- what coord creates it creates exclusively (mkdir, O_CREAT|O_EXCL): an existing name, link or not, is an error,
  never something written through;
- what coord removes it first proves it created: the directory's identity (st_dev, st_ino), recorded when coord
  made it, must be what an O_NOFOLLOW open at the name finds; then its content is removed through that open
  descriptor, each subdirectory opened with O_NOFOLLOW and checked against the listing before descending.

Child processes that must read such a tree (tar) are given `descriptor_path(fd)`, `/proc/<pid>/fd/<fd>`, which
names the very directory the descriptor holds, whatever was renamed or planted at its path since.

The one path-based open is `open_directory(path)`, for the volume root (the Docker Mountpoint, or a sidecar's
/volumes/<name>) or its parent: those are mount points or directories of the engine, not names a container controls.

Coord's own files (the state directory, the destination) are written with the last two helpers here: a JSON
document replaced atomically (`write_json_atomically`), and a directory fsynced so a rename in it survives a crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("coord.fsutil")

# The FICLONE ioctl (linux/fs.h: _IOW(0x94, 9, int)): make the target file share the source's extents
# (btrfs, XFS with reflink, bcachefs). What `cp --reflink=always` does, between two descriptors coord opened.
FICLONE = 0x40049409

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Identity = tuple[int, int]  # (st_dev, st_ino): which directory coord made, whatever its name is now


class NotOurs(Exception):
    """The object at a name is not the one coord made (a link, another type, another inode); left alone."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def identity_of(status: os.stat_result) -> Identity:
    return (status.st_dev, status.st_ino)


def format_identity(identity: Identity) -> str:
    """`dev:ino`, as journal entries record it."""
    return f"{identity[0]}:{identity[1]}"


def parse_identity(text: str) -> Identity | None:
    """The identity in `dev:ino` text, or None when there is none (or it is not of that form)."""
    device, _, inode = text.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return None
    return (int(device), int(inode))


def descriptor_path(fd: int) -> Path:
    """A path naming exactly the directory `fd` refers to, usable by any process of this user (tar, cp) while
    this process keeps `fd` open: a magic link resolved to the open file, never to whatever has its name now."""
    return Path(f"/proc/{os.getpid()}/fd/{fd}")


def open_directory(path: Path) -> int:
    """Open the directory `path` (its last component must not be a link). Raises OSError (ENOTDIR or ELOOP for a
    link, ENOTDIR for another type). Only for paths no container controls: a volume root or its parent."""
    return os.open(path, DIRECTORY_FLAGS)


def open_directory_at(dir_fd: int, name: str, expected: Identity | None = None) -> int:
    """Open the directory `name` inside `dir_fd` without following a link at it.

    With `expected`, the directory must be that one: raises NotOurs otherwise (and for a link or another type
    at the name). Without it, raises OSError: ENOTDIR (or ELOOP) for a link or another type, ENOENT for nothing.
    """
    _check_name(name)
    try:
        fd = os.open(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if expected is not None and error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotOurs(name, _what_is_there(dir_fd, name)) from None
        raise
    if expected is not None and identity_of(os.fstat(fd)) != expected:
        os.close(fd)
        raise NotOurs(name, "a directory coord did not make (another inode)")
    return fd


def make_directory_at(dir_fd: int, name: str) -> tuple[int, Identity]:
    """Create the directory `name` (mode 0700) inside `dir_fd` and open it; returns its descriptor and identity.

    mkdir never follows a link: any object already at the name, planted link included, is FileExistsError.
    """
    _check_name(name)
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = open_directory_at(dir_fd, name)
    return fd, identity_of(os.fstat(fd))


def create_file_at(dir_fd: int, name: str, mode: int = 0o600) -> int:
    """Create the regular file `name` inside `dir_fd` for reading and writing, exclusively; returns its descriptor.
    Raises FileExistsError for anything at the name (a link is never written through)."""
    _check_name(name)
    return os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)


def clone_file(source_fd: int, target_fd: int) -> None:
    """Make the file `target_fd` a reflink clone of `source_fd` (FICLONE). Raises OSError where the file system
    cannot (EOPNOTSUPP, EXDEV, EINVAL, ENOTTY)."""
    fcntl.ioctl(target_fd, FICLONE, source_fd)


def lstat_beneath(root_fd: int, relative_path: str) -> os.stat_result | None:
    """lstat of `relative_path` ('a/b/c') below the directory `root_fd`, every directory on the way opened
    without following links; None when it is not there or a component on the way is not a directory."""
    *directories, last = relative_path.strip("/").split("/")
    fds: list[int] = []
    try:
        current = root_fd
        for name in directories:
            if name in ("", "."):
                continue
            current = open_directory_at(current, name)
            fds.append(current)
        return os.lstat(last or ".", dir_fd=current)
    except (OSError, ValueError):
        return None
    finally:
        for fd in fds:
            os.close(fd)


def remove_directory_at(dir_fd: int, name: str, identity: Identity) -> None:
    """Remove the directory `name` inside `dir_fd` and all it holds, if and only if it is the directory
    `identity` names. Nothing is followed: its content is removed through descriptors, and a subdirectory is
    entered only when the O_NOFOLLOW open finds the inode its listing named.

    Raises NotOurs when something else is at the name (a link, a file, another directory): nothing is
    touched then. Raises FileNotFoundError when nothing is there. Other OSErrors propagate.
    """
    fd = open_directory_at(dir_fd, name, identity)
    try:
        empty_directory(fd)
    finally:
        os.close(fd)
    # The only name-based step left. Between the check and rmdir a container could swap in a directory of its
    # own, but rmdir removes only an EMPTY directory: the worst case leaves coord's emptied one behind.
    if identity_of(os.lstat(name, dir_fd=dir_fd)) != identity:
        raise NotOurs(name, "replaced while coord emptied it")
    os.rmdir(name, dir_fd=dir_fd)


def remove_directory(path: Path, identity: Identity) -> None:
    """remove_directory_at for `path`, whose parent is a directory no container controls (see open_directory)."""
    parent = open_directory(path.parent)
    try:
        remove_directory_at(parent, path.name, identity)
    finally:
        os.close(parent)


def empty_directory(fd: int) -> None:
    """Remove everything inside the open directory `fd`, without following any link.

    A subdirectory is opened by name with O_NOFOLLOW relative to `fd`: what that finds is a directory physically
    inside this one (directories have no hard links), whatever was renamed meanwhile. A name that turned from a
    directory into a link or a file between the listing and the open is unlinked as a name, never followed.
    """
    for entry in _entries(fd):
        try:
            remove_entry_at(fd, entry)
        except FileNotFoundError:
            continue  # gone meanwhile: what we wanted


def remove_entry_at(fd: int, entry: os.DirEntry[str]) -> None:
    """Remove one entry listed in the open directory `fd`, a directory with all it holds (empty_directory's
    rules: nothing is followed). Raises OSError, FileNotFoundError when it is gone already."""
    if entry.is_dir(follow_symlinks=False):
        try:
            child = open_directory_at(fd, entry.name)
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            os.unlink(entry.name, dir_fd=fd)  # no longer a directory: the name goes, nothing is followed
            return
        try:
            empty_directory(child)
        finally:
            os.close(child)
        os.rmdir(entry.name, dir_fd=fd)
    else:
        os.unlink(entry.name, dir_fd=fd)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close `fd` when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)


def _entries(fd: int) -> list[os.DirEntry[str]]:
    # scandir(fd) reads a duplicate of the descriptor: `fd` stays open and usable.
    with os.scandir(fd) as entries:
        return list(entries)


def _what_is_there(dir_fd: int, name: str) -> str:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return "gone"
    if stat.S_ISLNK(mode):
        return "a symbolic link, not the directory coord made"
    return "not a directory, not what coord made"


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a single file name: {name!r}")


def fsync_directory(directory: Path) -> None:
    """fsync `directory` itself, so that a file created, renamed or removed in it stays so after a crash.

    Raises OSError when it cannot be opened or synced."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_atomically(path: Path, document: dict[str, Any], indent: int | None = 2) -> None:
    """Write `document` to `path` so that readers see the old file or the whole new one, never a torn one: a
    temporary file beside it, fsynced, renamed over it, the directory fsynced.

    Raises OSError (or TypeError/ValueError for a document JSON cannot hold) and then leaves no temporary file.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=indent)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:  # a full disk must not leave a torn temporary file behind
            temporary.unlink(missing_ok=True)
        except OSError as error:  # nor may this hide the error being raised
            log.warning("could not remove %s: %s", temporary, error.strerror)
        raise
    fsync_directory(path.parent)
