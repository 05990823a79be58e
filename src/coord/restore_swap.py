"""A restore's replacement of a volume's content, as journaled steps that `coord recover` completes.

    journal EXTRACTING -> extract into <root>/.coord-restore-<token>       (recovery: remove the staging dir)
    journal SWAPPING   -> out:   every old top-level entry into <root>/.coord-restore-old-<token>,
                                 then the staging directory renamed to <root>/.coord-restore-in-<token>
                          in:    every entry of .coord-restore-in-<token> into <root>
                          clean: remove the old content and the empty .coord-restore-in-<token>
    journal entry cleared

The journal entry is written before each phase begins, and the disk itself says how far the swap got (the
staging directory still under its first name: the old content is still moving out; under its `-in-` name: the
new content is moving in), so `coord recover` carries the swap on from any point at which a run died, and again
if it dies itself: the volume then holds exactly the new tree. A run killed while extracting leaves the old tree,
untouched; recovery removes the staging directory. Recovery runs before any container is started again
(recovery.py handles file entries first).

The root's own attributes travel with the staging directory, which is given the archive's root attributes (or,
if the archive has no root member, the root's own) when the extraction ends: the swap copies owner, mode and
extended attributes (ACLs) onto the root as it begins. Its times, which every rename in the root changes, are
kept as the times of an empty directory <root>/.coord-restore-times-<token>, set on the root at the very end.

Every operation goes through directory descriptors opened with O_NOFOLLOW, and renames name entries relative to
them: a link planted at any of these names is never followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from coord.errors import RestoreError
from coord.journal import EXTRACTING, RESTORE, SWAPPING, Journal, JournalEntry

STAGING_PREFIX = ".coord-restore-"
OLD_PREFIX = ".coord-restore-old-"
INCOMING_PREFIX = ".coord-restore-in-"
TIMES_PREFIX = ".coord-restore-times-"
TOKEN_HEX_DIGITS = 12

# Test-only: a crash point's name here makes coord kill itself (SIGKILL) when it reaches that point, so the tests
# can prove recovery from each step of a restore; under FAIL_AT_VARIABLE the step fails with an I/O error instead
# (a disk error while coord lives). Never set by coord; operators have no use for them.
CRASH_AT_VARIABLE = "COORD_TEST_CRASH_AT"
FAIL_AT_VARIABLE = "COORD_TEST_FAIL_AT"
CRASH_POINTS = (
    "extracted",  # the staging directory is complete; the swap has not begun
    "swap-out-begun",  # the journal says SWAPPING; nothing moved yet
    "swap-out-moved",  # one old entry is in the old-content directory
    "swap-in-begun",
    "swap-in-moved",  # one new entry is in the root
    "swap-clean-begun",
    "old-removed",  # the old content is gone; the empty staging directory is still there
)


def crash_point(name: str) -> None:
    """Die here, as a SIGKILL would kill coord (CRASH_AT_VARIABLE), or fail as a disk error would
    (FAIL_AT_VARIABLE), when the tests asked for it."""
    if os.environ.get(CRASH_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FAIL_AT_VARIABLE) == name:
        raise OSError(errno.EIO, f"test-only failure at {name}")


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_directory(name: str | Path, dir_fd: int | None = None) -> int:
    """A descriptor for the directory `name` (relative to dir_fd); a symlink there fails (ELOOP/ENOTDIR)."""
    return os.open(name, _DIRECTORY_FLAGS, dir_fd=dir_fd)


@contextlib.contextmanager
def opened_directory(name: str | Path, dir_fd: int | None = None) -> Iterator[int]:
    """The descriptor of open_directory(name, dir_fd) for the block, closed after it."""
    descriptor = open_directory(name, dir_fd)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class RestoreSwap:
    """The two directories one restore uses inside a volume's root, named by one random token."""

    root: Path
    token: str

    @classmethod
    def new(cls, root: Path) -> RestoreSwap:
        return cls(root, secrets.token_hex(TOKEN_HEX_DIGITS // 2))

    @classmethod
    def of_entry(cls, entry: JournalEntry) -> RestoreSwap:
        """The swap a journal entry records. Raises RestoreError unless both names are ones coord makes."""
        staging, old = Path(entry.key), Path(entry.name)
        token = staging.name.removeprefix(STAGING_PREFIX)
        swap = cls(staging.parent, token)
        if (
            not staging.is_absolute()
            or len(token) != TOKEN_HEX_DIGITS
            or any(c not in "0123456789abcdef" for c in token)
            or swap.staging != staging
            or swap.old != old
        ):
            raise RestoreError(f"journal entry names {staging} and {old}, which are not a coord restore's directories")
        return swap

    @property
    def staging(self) -> Path:
        return self.root / f"{STAGING_PREFIX}{self.token}"

    @property
    def old(self) -> Path:
        return self.root / f"{OLD_PREFIX}{self.token}"

    @property
    def incoming(self) -> Path:
        return self.root / f"{INCOMING_PREFIX}{self.token}"

    @property
    def times(self) -> Path:
        return self.root / f"{TIMES_PREFIX}{self.token}"

    @property
    def own_names(self) -> frozenset[str]:
        return frozenset({self.staging.name, self.old.name, self.incoming.name, self.times.name})

    def record(self, journal: Journal, step: str) -> JournalEntry:
        """Durably note that `step` (EXTRACTING, SWAPPING) begins; the swap's earlier entry is replaced atomically."""
        return journal.record(RESTORE, str(self.staging), step, str(self.old))


def _times_ns(descriptor: int) -> tuple[int, int]:
    info = os.fstat(descriptor)
    return info.st_atime_ns, info.st_mtime_ns


def _is_directory(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def copy_directory_attributes(source: int, target: int) -> None:
    """Owner, mode and extended attributes (ACLs included) of one directory onto another (both descriptors).
    Extended attributes the target has and the source has not are removed, so the result is exact."""
    info = os.fstat(source)
    if os.geteuid() == 0:
        os.fchown(target, info.st_uid, info.st_gid)
    os.chmod(target, stat.S_IMODE(info.st_mode))
    wanted = {name: os.getxattr(source, name) for name in os.listxattr(source)}
    for name in os.listxattr(target):
        if name not in wanted:
            with contextlib.suppress(OSError):  # security.selinux and the like may not be removable
                os.removexattr(target, name)
    for name, value in wanted.items():
        with contextlib.suppress(OSError):
            if os.getxattr(target, name) == value:
                continue
        os.setxattr(target, name, value)


def _move_all(source: int, target: int, skip: frozenset[str], point: str) -> None:
    """Rename every entry of `source` but `skip` into `target` (both descriptors). A moved directory keeps its
    times (some file systems count the rewritten '..' as a modification)."""
    for name in sorted(os.listdir(source)):
        if name in skip:
            continue
        info = os.stat(name, dir_fd=source, follow_symlinks=False)
        os.rename(name, name, src_dir_fd=source, dst_dir_fd=target)
        if stat.S_ISDIR(info.st_mode):
            os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target, follow_symlinks=False)
        crash_point(point)


def _remove_directory_tree(name: str, dir_fd: int) -> None:
    """Remove a directory coord made (and all in it) without following any link in it."""
    if not _is_directory(name, dir_fd):
        if os.path.lexists(f"/proc/self/fd/{dir_fd}/{name}"):
            raise RestoreError(f"{name} is not a directory any more: left alone (coord did not make it)")
        return
    shutil.rmtree(name, dir_fd=dir_fd)  # fd-based on Linux: never follows a symlink inside


def sync_filesystem(descriptor: int) -> None:
    """syncfs(2) of the file system holding `descriptor` only (os.sync() would wait for every file system)."""
    if ctypes.CDLL(None, use_errno=True).syncfs(descriptor) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def roll_back_extraction(swap: RestoreSwap) -> None:
    """An unfinished extraction: remove the staging directory; the volume's content was never touched."""
    with opened_directory(swap.root) as root:
        _remove_directory_tree(swap.staging.name, root)
        _remove_directory_tree(swap.times.name, root)


def keep_root_times(swap: RestoreSwap, times_ns: tuple[int, int]) -> None:
    """Make the empty directory that holds the times the root gets at the end of the swap (nothing ever enters
    or leaves it, so its own times stay as set)."""
    with opened_directory(swap.root) as root:
        os.mkdir(swap.times.name, 0o700, dir_fd=root)
        with opened_directory(swap.times.name, root) as times:
            os.utime(times, ns=times_ns)


def carry_out_swap(swap: RestoreSwap) -> None:
    """Replace the root's content with the staging directory's (see the module docstring), from wherever an
    earlier attempt stopped. The caller journals SWAPPING first and clears the entry after. Raises OSError,
    RestoreError."""
    with opened_directory(swap.root) as root:
        if _is_directory(swap.staging.name, root):  # out: the old content moves aside
            with opened_directory(swap.staging.name, root) as staging:
                copy_directory_attributes(staging, root)
            with contextlib.suppress(FileExistsError):
                os.mkdir(swap.old.name, 0o700, dir_fd=root)
            with opened_directory(swap.old.name, root) as old:
                _move_all(root, old, swap.own_names, "swap-out-moved")
                os.fsync(old)
            os.rename(swap.staging.name, swap.incoming.name, src_dir_fd=root, dst_dir_fd=root)
            os.fsync(root)
            crash_point("swap-in-begun")
        if _is_directory(swap.incoming.name, root):  # in: the new content moves in
            with opened_directory(swap.incoming.name, root) as incoming:
                _move_all(incoming, root, swap.own_names, "swap-in-moved")
            os.fsync(root)
            crash_point("swap-clean-begun")
            _remove_directory_tree(swap.old.name, root)  # clean: the old content goes
            crash_point("old-removed")
            os.rmdir(swap.incoming.name, dir_fd=root)
        elif _is_directory(swap.old.name, root):
            raise RestoreError(f"{swap.old} holds the old content, but the new content is not beside it: left as is")
        if _is_directory(swap.times.name, root):
            with opened_directory(swap.times.name, root) as times:
                root_times = _times_ns(times)
            os.rmdir(swap.times.name, dir_fd=root)
            os.utime(root, ns=root_times)
        sync_filesystem(root)


def recover_restore(entry: JournalEntry) -> str:
    """Finish or undo the restore a journal entry records; returns what was done, for the report.
    Raises RestoreError, OSError (the entry is then kept)."""
    swap = RestoreSwap.of_entry(entry)
    if not swap.root.is_dir():
        raise RestoreError(f"{swap.root} is not there: the restore into it cannot be completed or undone")
    if entry.action == EXTRACTING:
        roll_back_extraction(swap)
        return f"removed {swap.staging}: a restore died while extracting; {swap.root} kept its old content"
    if entry.action != SWAPPING:
        raise RestoreError(f"unknown restore step {entry.action!r} in the journal entry for {swap.staging}")
    carry_out_swap(swap)
    return f"completed the restore into {swap.root} that a dead run had begun (the old content was removed)"
