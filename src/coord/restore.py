"""`coord restore`: put an archive back into a Docker volume (or a directory), safely and exactly.

    read the archive once, checking every member header  ->  (dry run: list and stop)
    -> create the volume if missing -> stop the containers using it
    -> extract into a staging directory inside the volume root, checking every member again
    -> replace the volume's content (--force) or fill the empty volume -> start the containers again

Nothing is written before the whole archive was read and every member accepted. Refused (the whole archive): an
absolute name, a '..' component, a duplicate name, a member below a symlink or below a non-directory, a symlink
whose target is absolute or resolves outside the volume (followed through the archive's other symlinks), a hardlink
to anything but an earlier file inside the archive, a device node or FIFO unless the policy's `restore:` allows it,
and every other member type. Python's `filter='data'` is not used: it would drop ownership and silently strip a
leading '/' (facts.md); the checks here are coord's own, and tarfile only carries out what they accepted.

The second read is compared member by member with the first (the file could change in between) and extracted into
`<root>/.coord-restore-<random>`; only when all of it is there, and the file's sha256 is still the one checked, does
it replace the volume's content. A failure before that point removes the staging directory: the volume keeps what
it had. Owners are restored numerically (archives are made with --numeric-owner), with modes (setuid, sticky),
mtimes (symlinks included), symlinks and hardlinks as archived.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from coord.archive import compression_of
from coord.docker_ops import DockerControl
from coord.encrypt import DEFAULT_STATE_DIR, GPG_SUFFIX, Decryption
from coord.errors import ArchiveRejected, RestoreContainersError, RestoreError, UsageError
from coord.journal import Journal
from coord.lock import run_lock
from coord.manifest import manifest_path_for, read_manifest
from coord.plan import QuiesceGroup
from coord.policy import Compression, RestoreSettings, Strategy, load_policies, policy_files
from coord.recovery import recover
from coord.results import ContainerAction
from coord.signals import deferred, termination_raises
from coord.strategies import quiesced
from coord.verify import ReadBack, open_tar_stream

log = logging.getLogger("coord.restore")

STAGING_PREFIX = ".coord-restore-"
MAX_SYMLINK_DEPTH = 40  # the kernel's own limit (ELOOP)
STOP_TIMEOUT_S = 30


class MemberKind(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHARACTER_DEVICE = "character device"
    BLOCK_DEVICE = "block device"
    FIFO = "fifo"


class UnsafeMember(Exception):
    """One member a safe restore refuses; the message says why."""


@dataclass(frozen=True)
class Member:
    """One archive member as coord judges it. `name` is normalised: relative, no '.' components, '.' for the root."""

    name: str
    kind: MemberKind
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    link: str = ""  # symlink: the target as stored; hardlink: the normalised name of the member it links to
    device: tuple[int, int] = (0, 0)

    def describe(self) -> str:
        """One line in the manner of `tar -tv`: type and mode, owner, size, mtime, name (and link)."""
        type_character = {
            MemberKind.FILE: "-",
            MemberKind.DIRECTORY: "d",
            MemberKind.SYMLINK: "l",
            MemberKind.HARDLINK: "h",
            MemberKind.CHARACTER_DEVICE: "c",
            MemberKind.BLOCK_DEVICE: "b",
            MemberKind.FIFO: "p",
        }[self.kind]
        when = datetime.fromtimestamp(self.mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
        mode = stat.filemode(self.mode)[1:]
        line = f"{type_character}{mode} {self.uid}/{self.gid} {self.size:>12} {when} {self.name}"
        if self.kind is MemberKind.SYMLINK:
            line += f" -> {self.link}"
        elif self.kind is MemberKind.HARDLINK:
            line += f" link to {self.link}"
        elif self.kind in (MemberKind.CHARACTER_DEVICE, MemberKind.BLOCK_DEVICE):
            line += f" (device {self.device[0]},{self.device[1]})"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "mtime": self.mtime,
            "link": self.link or None,
        }


# ---------------------------------------------------------------------------------------------------------------
# The checks (pure: no file system, no archive)


def normalize_name(raw: str) -> str:
    """A member name made relative and clean ('./a//b/' -> 'a/b', './' -> '.'). Raises UnsafeMember.

    Absolute names and '..' components are refused, never stripped: an archive that holds them was not written
    by coord, and guessing what it meant is how files end up outside the volume.
    """
    if not raw:
        raise UnsafeMember("empty member name")
    if raw.startswith("/"):
        raise UnsafeMember("absolute path")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember("'..' component")
    return "/".join(parts) or "."


# tarfile's type tests, in its own order (isreg() also covers old-style and contiguous files).
_KIND_TESTS = (
    (tarfile.TarInfo.isreg, MemberKind.FILE),
    (tarfile.TarInfo.isdir, MemberKind.DIRECTORY),
    (tarfile.TarInfo.issym, MemberKind.SYMLINK),
    (tarfile.TarInfo.islnk, MemberKind.HARDLINK),
    (tarfile.TarInfo.ischr, MemberKind.CHARACTER_DEVICE),
    (tarfile.TarInfo.isblk, MemberKind.BLOCK_DEVICE),
    (tarfile.TarInfo.isfifo, MemberKind.FIFO),
)


def member_of(info: tarfile.TarInfo) -> Member:
    """The Member for a tarfile header. Raises UnsafeMember for names and types a restore refuses."""
    name = normalize_name(info.name)
    kind = next((kind for test, kind in _KIND_TESTS if test(info)), None)
    if kind is None:
        raise UnsafeMember(f"unsupported member type {info.type!r}")
    link = ""
    if kind is MemberKind.SYMLINK:
        link = info.linkname
    elif kind is MemberKind.HARDLINK:
        try:
            link = normalize_name(info.linkname)
        except UnsafeMember as problem:
            raise UnsafeMember(f"hardlink target {info.linkname!r}: {problem}") from None
    return Member(
        name=name,
        kind=kind,
        mode=info.mode,
        uid=info.uid,
        gid=info.gid,
        size=info.size,
        mtime=int(info.mtime),
        link=link,
        device=(info.devmajor, info.devminor),
    )


def _parent(name: str) -> str:
    return name.rpartition("/")[0] or "."


def resolve_inside(directory: str, target: str, symlinks: dict[str, str], depth: int = 0) -> list[str] | None:
    """Where `target`, read in `directory` (both relative to the root), leads: the path as components, following
    the archive's symlinks as the kernel would. None when it leaves the root at any step (or is absolute).

    Raises UnsafeMember for a chain deeper than the kernel follows (a loop).
    """
    if depth > MAX_SYMLINK_DEPTH:
        raise UnsafeMember("symlink chain too deep or looping")
    if target.startswith("/"):
        return None
    stack = [] if directory == "." else directory.split("/")
    for component in target.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(component)
        inner = symlinks.get("/".join(stack))
        if inner is not None:
            parent = "/".join(stack[:-1]) or "."
            resolved = resolve_inside(parent, inner, symlinks, depth + 1)
            if resolved is None:
                return None
            stack = resolved
    return stack


def check_members(members: Iterable[Member], allowed: RestoreSettings) -> list[str]:
    """Every reason to refuse this list of members, as 'name: why' lines (empty: the archive may be restored)."""
    problems: list[str] = []
    seen: dict[str, Member] = {}
    symlinks: dict[str, str] = {}
    ordered = list(members)
    for member in ordered:
        where = member.name
        if member.name in seen:
            problems.append(f"{where}: appears twice in the archive")
            continue
        problems.extend(f"{where}: {why}" for why in _kind_problems(member, seen, allowed))
        seen[member.name] = member
        if member.kind is MemberKind.SYMLINK and member.link and not member.link.startswith("/"):
            symlinks[member.name] = member.link
    for member in ordered:
        name = member.name
        ancestor = _parent(name)
        while name != "." and ancestor != ".":
            above = seen.get(ancestor)
            if above is not None and above.kind is MemberKind.SYMLINK:
                problems.append(f"{member.name}: lies below the symlink {ancestor} (would be written through it)")
                break
            if above is not None and above.kind is not MemberKind.DIRECTORY:
                problems.append(f"{member.name}: lies below {ancestor}, which is a {above.kind.value}")
                break
            ancestor = _parent(ancestor)
    for name, target in symlinks.items():
        try:
            if resolve_inside(_parent(name), target, symlinks) is None:
                problems.append(f"{name}: symlink to {target} resolves outside the volume")
        except UnsafeMember as problem:
            problems.append(f"{name}: {problem}")
    return problems


def _kind_problems(member: Member, earlier: dict[str, Member], allowed: RestoreSettings) -> list[str]:
    """What is wrong with one member by its type alone (and, for a hardlink, the earlier member it names)."""
    if member.name == "." and member.kind is not MemberKind.DIRECTORY:
        return [f"the root of the archive is a {member.kind.value}, not a directory"]
    if member.kind in (MemberKind.CHARACTER_DEVICE, MemberKind.BLOCK_DEVICE) and not allowed.allow_devices:
        return [f"{member.kind.value} (allow with restore.allow_devices in the policy)"]
    if member.kind is MemberKind.FIFO and not allowed.allow_fifos:
        return ["FIFO (allow with restore.allow_fifos in the policy)"]
    if member.kind is MemberKind.SYMLINK:
        if not member.link:
            return ["symlink with an empty target"]
        if member.link.startswith("/"):
            return [f"symlink to the absolute path {member.link} (outside the volume)"]
    if member.kind is MemberKind.HARDLINK:
        target = earlier.get(member.link)
        visited = {member.name}
        while target is not None and target.kind is MemberKind.HARDLINK and target.name not in visited:
            visited.add(target.name)
            target = earlier.get(target.link)
        if target is None or target.kind is MemberKind.HARDLINK:
            return [f"hardlink to {member.link}, which is not an earlier member of the archive"]
        if target.kind in (MemberKind.DIRECTORY, MemberKind.SYMLINK):
            return [f"hardlink to the {target.kind.value} {target.name}"]
    return []


# ---------------------------------------------------------------------------------------------------------------
# Reading the archive


@dataclass
class ArchiveContent:
    """What the first read found: every member (accepted or not), the refusals, and the stream's hashes."""

    members: list[Member] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stream: ReadBack = field(default_factory=ReadBack)


def read_members(
    archive: Path, compression: Compression, decryption: Decryption | None, allowed: RestoreSettings
) -> ArchiveContent:
    """Read the whole archive once and judge every member header. Raises RestoreError when it cannot be read."""
    content = ArchiveContent()
    try:
        with open_tar_stream(archive, compression, decryption) as opened:
            try:
                with tarfile.open(fileobj=opened.stream, mode="r|") as reader:
                    for info in reader:
                        try:
                            content.members.append(member_of(info))
                        except UnsafeMember as problem:
                            content.problems.append(f"{info.name}: {problem}")
            except tarfile.TarError as error:
                opened.result.errors.append(f"not a readable tar stream: {error}")
        content.stream = opened.result
    except OSError as error:
        raise RestoreError(f"cannot read {archive}: {error}") from None
    if content.stream.errors:
        raise RestoreError(f"cannot read {archive}: " + "; ".join(content.stream.errors[:3]))
    content.problems.extend(check_members(content.members, allowed))
    return content


class ArchiveChanged(tarfile.FilterError):
    """The second read of the archive differs from the first, which was the one checked."""


class _ExtractionGuard:
    """tarfile's extraction filter: lets through exactly the members checked in the first read, in order."""

    def __init__(self, members: list[Member], staging: Path) -> None:
        self.members = members
        self.position = 0
        self.root = os.path.realpath(staging)

    def _inside(self, path: str) -> bool:
        resolved = os.path.realpath(path)
        return resolved == self.root or resolved.startswith(self.root + os.sep)

    def __call__(self, info: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
        expected = self.members[self.position] if self.position < len(self.members) else None
        self.position += 1
        try:
            member = member_of(info)
        except UnsafeMember as problem:
            raise ArchiveChanged(f"{info.name}: {problem}") from None
        if member != expected:
            raise ArchiveChanged(f"{info.name}: differs from the member checked in the first read")
        # Belt and braces: whatever the checks above say, nothing may land outside the staging directory.
        if not self._inside(os.path.join(destination, info.name)):
            raise ArchiveChanged(f"{info.name}: would be written outside the volume")
        if info.islnk() and not self._inside(os.path.join(destination, info.linkname)):
            raise ArchiveChanged(f"{info.name}: hardlink target outside the volume")
        return info


def extract_members(
    archive: Path, compression: Compression, decryption: Decryption | None, members: list[Member], staging: Path
) -> ReadBack:
    """Extract the checked archive into `staging` exactly (owners, modes, mtimes, links). Raises RestoreError."""
    guard = _ExtractionGuard(members, staging)
    try:
        with open_tar_stream(archive, compression, decryption) as opened:
            with tarfile.open(fileobj=opened.stream, mode="r|") as reader:
                reader.errorlevel = 2  # a failed chown/chmod/utime is an error, not a debug message
                reader.extractall(staging, numeric_owner=True, filter=guard)
            if guard.position != len(members):
                raise ArchiveChanged(f"the second read found {guard.position} members, the first {len(members)}")
    except (tarfile.TarError, OSError) as error:
        raise RestoreError(f"extracting {archive} failed: {error}") from None
    if opened.result.errors:
        raise RestoreError(f"extracting {archive} failed: " + "; ".join(opened.result.errors[:3]))
    # tarfile sets no mtime on symlinks; lutimes does not touch the parent directory's mtime.
    for member in members:
        if member.kind is MemberKind.SYMLINK:
            os.utime(staging / member.name, (member.mtime, member.mtime), follow_symlinks=False)
    return opened.result


# ---------------------------------------------------------------------------------------------------------------
# The target: a directory (a volume's mountpoint), its content replaced only once the staging copy is complete


def _entries(root: Path, staging: Path | None = None) -> list[str]:
    return sorted(name for name in os.listdir(root) if staging is None or name != staging.name)


def _remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _apply_attributes(path: Path, member: Member) -> None:
    os.lchown(path, member.uid, member.gid)
    if member.kind is not MemberKind.SYMLINK:
        os.chmod(path, member.mode)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def restore_into_directory(
    archive: Path,
    compression: Compression,
    decryption: Decryption | None,
    content: ArchiveContent,
    root: Path,
    force: bool,
) -> None:
    """Extract the checked archive into `root` (which exists), replacing its content when `force`.

    Raises RestoreError; on failure before the swap `root` is as it was.
    """
    staging = root / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
    top_level = {member.name.split("/")[0] for member in content.members}
    if staging.name in top_level:  # pragma: no cover - 48 random bits
        raise RestoreError(f"the archive holds {staging.name}; try again")
    root_before = os.stat(root)
    os.mkdir(staging, 0o700)
    try:
        read = extract_members(archive, compression, decryption, content.members, staging)
        if read.sha256 != content.stream.sha256:
            raise RestoreError(f"{archive} changed between the check and the extraction (sha256 differs)")
        present = _entries(root, staging)
        if present and not force:
            raise RestoreError(f"{root} is no longer empty ({', '.join(present[:5])}); nothing was replaced")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        # The staging directory came and went: give the root its mtime back, so it is as it was.
        os.utime(root, ns=(root_before.st_atime_ns, root_before.st_mtime_ns))
        raise
    with deferred():  # the swap is short; a SIGTERM waits for it rather than leaving it half done
        try:
            for name in present:
                _remove_entry(root / name)
            for name in _entries(staging):
                os.rename(staging / name, root / name)
            os.rmdir(staging)
        except OSError as error:
            raise RestoreError(
                f"replacing the content of {root} failed halfway ({error}); the complete restored tree is in "
                f"{staging}: move its entries into {root} by hand"
            ) from None
        by_name = {member.name: member for member in content.members}
        # Renaming a directory rewrites its '..' entry; some file systems count that as a modification.
        for name in top_level:
            member = by_name.get(name)
            if member is not None and member.kind is MemberKind.DIRECTORY:
                os.utime(root / name, (member.mtime, member.mtime))
        if "." in by_name:
            _apply_attributes(root, by_name["."])
        _sync_filesystem(root)


def _sync_filesystem(path: Path) -> None:
    """Flush the restored files to disk before containers use them: syncfs(2) of the target's file system only
    (os.sync() would wait for every file system of a busy host)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(descriptor) != 0:
            raise RestoreError(f"cannot sync {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------------------------------------
# One restore, start to finish


@dataclass(frozen=True)
class RestoreRequest:
    archive: Path
    volume: str | None = None
    target_dir: Path | None = None
    force: bool = False
    dry_run: bool = False
    allowed: RestoreSettings = field(default_factory=RestoreSettings)
    stop_timeout_s: int = STOP_TIMEOUT_S
    state_dir: Path = DEFAULT_STATE_DIR
    lock_timeout_s: float = 0.0


@dataclass
class RestoreResult:
    archive: str
    target: str
    entries: int = 0
    created: bool = False
    replaced: list[str] = field(default_factory=list)  # top-level entries the target held before
    dry_run: bool = False
    members: list[Member] = field(default_factory=list)
    containers: list[ContainerAction] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "archive": self.archive,
            "target": self.target,
            "dry_run": self.dry_run,
            "entries": self.entries,
            "created": self.created,
            "replaced_entries": len(self.replaced),
            "containers": [c.to_json() for c in self.containers],
            "warnings": self.warnings,
            "members": [m.to_json() for m in self.members] if self.dry_run else [],
            "duration_s": round(self.duration_s, 3),
        }


def _check_manifest(archive: Path, content: ArchiveContent, manifest: dict[str, Any] | None) -> None:
    if manifest is None:
        return
    problems = []
    if manifest.get("sha256") and manifest["sha256"] != content.stream.sha256:
        problems.append(f"sha256 is {content.stream.sha256}, the manifest says {manifest['sha256']}")
    if isinstance(manifest.get("entries"), int) and manifest["entries"] != len(content.members):
        problems.append(f"{len(content.members)} members, the manifest says {manifest['entries']}")
    if problems:
        raise RestoreError(f"{archive} does not match its manifest ({'; '.join(problems)}): corrupt or replaced")


def _load_manifest(archive: Path) -> dict[str, Any] | None:
    path = manifest_path_for(archive)
    if not path.exists():
        return None
    try:
        return read_manifest(path)
    except (OSError, ValueError) as error:
        raise RestoreError(f"cannot read the manifest {path}: {error}") from None


def archive_is_encrypted(archive: Path, manifest: dict[str, Any] | None) -> bool:
    return archive.name.endswith(GPG_SUFFIX) or bool(manifest and manifest.get("encryption"))


def restore(
    request: RestoreRequest,
    decryption_for_archive: Callable[[], Decryption] | None,
    docker: DockerControl | None = None,
) -> RestoreResult:
    """Carry out one restore (see the module docstring); `decryption_for_archive` is called only when the archive
    is encrypted. Raises UsageError (nothing touched), ArchiveRejected (nothing written), RestoreError,
    EncryptionError, DockerError, RestoreContainersError.
    """
    clock = time.monotonic()
    archive = request.archive
    if not archive.is_file():
        raise UsageError(f"archive {archive} does not exist or is not a file")
    manifest = _load_manifest(archive)
    compression = Compression(manifest["compression"]) if manifest and manifest.get("compression") else None
    compression = compression or compression_of(archive)
    decryption = None
    if archive_is_encrypted(archive, manifest):
        if decryption_for_archive is None:
            raise UsageError(f"{archive} is encrypted: pass --gpg-home DIR or --passphrase-file FILE")
        decryption = decryption_for_archive()

    target = request.volume if request.volume is not None else str(request.target_dir)
    result = RestoreResult(archive=str(archive), target=target, dry_run=request.dry_run)
    if os.geteuid() != 0:
        result.warnings.append("not running as root: owners will not be restored")
    root, exists = _locate_target(request, docker)
    if exists:
        result.replaced = _entries(root)
        if result.replaced and not request.force:
            raise UsageError(
                f"{_describe_target(request)} is not empty ({len(result.replaced)} entries, e.g. "
                f"{', '.join(result.replaced[:3])}); pass --force to replace its content"
            )

    content = read_members(archive, compression, decryption, request.allowed)
    if content.problems:
        raise ArchiveRejected(str(archive), content.problems)
    _check_manifest(archive, content, manifest)
    if manifest is None:
        result.warnings.append(f"no manifest beside {archive.name}: its sha256 was not checked against a record")
    result.entries = len(content.members)
    result.created = not exists
    if request.dry_run:
        result.members = content.members
        if docker is not None and request.volume is not None and exists:
            result.containers = [
                ContainerAction(
                    c.name, c.id, "would stop" if c.state in ("running", "paused") else "left-alone", c.state
                )
                for c in docker.containers_using(request.volume)
            ]
        result.duration_s = time.monotonic() - clock
        return result

    if not exists:
        root = _create_target(request, docker)
    with termination_raises():
        if docker is not None and request.volume is not None:
            _restore_with_containers_stopped(request, docker, result, archive, compression, decryption, content, root)
        else:
            restore_into_directory(archive, compression, decryption, content, root, request.force)
    result.duration_s = time.monotonic() - clock
    return result


def _restore_with_containers_stopped(
    request: RestoreRequest,
    docker: DockerControl,
    result: RestoreResult,
    archive: Path,
    compression: Compression,
    decryption: Decryption | None,
    content: ArchiveContent,
    root: Path,
) -> None:
    """Stop the containers using the volume, with the backup's guarantees (journal, lock, recovery of a dead
    run, signals held while containers change state), write the files, and put the containers back.

    Whatever the volume's backup strategy, a restore stops: a process that keeps running (live) or resumes
    (pause) over files replaced under it mixes its memory with the restored files. Paused containers are
    stopped too, and paused again after their start.
    """
    assert request.volume is not None
    journal = Journal(request.state_dir)
    group = QuiesceGroup(
        Strategy.STOP, [], containers=docker.containers_using(request.volume), stop_timeout=request.stop_timeout_s
    )
    with run_lock(request.state_dir, request.lock_timeout_s):
        recovered = recover(journal, docker)
        result.warnings += [f"recovered from an earlier run: {line}" for line in recovered.restored]
        with quiesced(group, docker, journal, result.containers, Strategy.STOP, stop_paused=True):
            restore_into_directory(archive, compression, decryption, content, root, request.force)
    failures = [f"{a.container}: {a.error}" for a in result.containers if not a.restored]
    if failures:
        raise RestoreContainersError(
            f"the files were restored, but containers were not put back: {'; '.join(failures)}"
        )


def restore_settings_for(policies_dir: Path, volume: str | None, archive: Path) -> RestoreSettings:
    """The `restore:` rules of the policy owning `volume` (or, for a directory target, of the policy the archive's
    manifest names). Defaults (no devices, no FIFOs) when no policy applies or there is no policies directory, so a
    restore works on a bare host. Raises PolicyError for invalid policies.
    """
    if not policies_dir.is_dir() or not policy_files(policies_dir):
        return RestoreSettings()
    policies = load_policies(policies_dir)
    if volume is not None:
        exact = [item for item in policies if volume in item.policy.volumes]
        matching = exact or [item for item in policies if item.policy.selects(volume)]
        if matching:
            return matching[0].policy.restore
    try:
        manifest = _load_manifest(archive)
    except RestoreError:
        manifest = None
    named = manifest.get("policy") if manifest else None
    return next((item.policy.restore for item in policies if item.name == named), RestoreSettings())


def _describe_target(request: RestoreRequest) -> str:
    return f"volume {request.volume}" if request.volume is not None else f"directory {request.target_dir}"


def _locate_target(request: RestoreRequest, docker: DockerControl | None) -> tuple[Path, bool]:
    """The target's root directory and whether it exists already."""
    if request.volume is not None:
        assert docker is not None
        if request.volume not in docker.volume_names():
            return Path(), False
        return Path(docker.volume_mountpoint(request.volume)), True
    assert request.target_dir is not None
    target = request.target_dir
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    return target, target.is_dir()


def _create_target(request: RestoreRequest, docker: DockerControl | None) -> Path:
    if request.volume is not None:
        assert docker is not None
        return Path(docker.create_volume(request.volume))
    assert request.target_dir is not None
    try:
        request.target_dir.mkdir(parents=True, mode=0o700)
    except OSError as error:
        raise RestoreError(f"cannot create {request.target_dir}: {error.strerror}") from None
    return request.target_dir
