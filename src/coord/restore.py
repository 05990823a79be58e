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
leading '/' (docs/platform.md); the checks here are coord's own, and tarfile only carries out what they accepted.

The second read is compared member by member with the first (the file could change in between) and extracted into
`<root>/.coord-restore-<random>`; only when all of it is there, and the file's sha256 is still the one checked, does
it replace the volume's content. A failure before that point removes the staging directory: the volume keeps what
it had. Owners are restored numerically (archives are made with --numeric-owner), with modes (setuid, sticky),
mtimes (symlinks included), symlinks and hardlinks as archived.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import stat
import struct
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, cast

from coord.archive_location import AnyArchive, ArchiveLocation, location_of
from coord.backup.quiesce import quiesced
from coord.docker_ops import DockerControl
from coord.encrypt import DEFAULT_STATE_DIR, Decryption
from coord.errors import (
    ArchiveRejected,
    ContainersMustStayDown,
    CoordError,
    RestoreContainersError,
    RestoreError,
    UsageError,
)
from coord.journal import EXTRACTING, SWAPPING, Journal, JournalEntry
from coord.lock import run_lock
from coord.plan import QuiesceGroup, plan_volumes
from coord.policy import Compression, RestoreSettings, Strategy, load_policies, policy_files
from coord.recovery import recover
from coord.restore_swap import (
    RestoreSwap,
    carry_out_swap,
    copy_directory_attributes,
    crash_point,
    keep_root_times,
    open_directory,
    opened_directory,
    roll_back_extraction,
)
from coord.results import ContainerAction
from coord.signals import deferred, termination_raises
from coord.sources import HOST, VolumeSources, own_container_id
from coord.verify import ReadBack, archive_compression, archive_is_encrypted, open_tar_stream

log = logging.getLogger("coord.restore")

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
    mtime_ns: int | None = None  # exact, from a pax header (sub-second); None: whole seconds (`mtime`)
    atime_ns: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()  # extended attributes by name (pax SCHILY.xattr.*), sorted
    acls: tuple[tuple[str, str], ...] = ()  # ("access" | "default", text form) (pax SCHILY.acl.*)
    sparse: tuple[tuple[int, int], ...] | None = None  # a sparse file's data regions (offset, length)

    @property
    def times_ns(self) -> tuple[int, int]:
        """(atime, mtime) in nanoseconds, as restored; atime is the mtime when the archive has none."""
        mtime = self.mtime_ns if self.mtime_ns is not None else self.mtime * 1_000_000_000
        return (self.atime_ns if self.atime_ns is not None else mtime), mtime

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
    headers = info.pax_headers
    xattrs = []
    acls = []
    for key, value in headers.items():
        if key.startswith(XATTR_HEADER):
            # GNU tar writes '=' and '%' in an attribute's name as %3D and %25; values are raw bytes, which
            # tarfile decoded with surrogateescape.
            attribute = key[len(XATTR_HEADER) :].replace("%3D", "=").replace("%25", "%")
            xattrs.append((attribute, value.encode("utf-8", "surrogateescape")))
        elif key in ACL_HEADERS:
            acls.append((ACL_HEADERS[key], value))
    # typeshed types TarInfo.sparse as bytes; tarfile sets it to a list of (offset, length) pairs, or None.
    sparse_map = cast("list[tuple[int, int]] | None", info.sparse)
    sparse = tuple((offset, length) for offset, length in sparse_map) if sparse_map is not None else None
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
        mtime_ns=_pax_time_ns(headers.get("mtime")),
        atime_ns=_pax_time_ns(headers.get("atime")),
        xattrs=tuple(sorted(xattrs)),
        acls=tuple(sorted(acls)),
        sparse=sparse,
    )


XATTR_HEADER = "SCHILY.xattr."
ACL_HEADERS = {"SCHILY.acl.access": "access", "SCHILY.acl.default": "default"}


def _pax_time_ns(value: str | None) -> int | None:
    """A pax time ('1600000000.123456789', possibly negative) in exact nanoseconds; None when absent or invalid
    (tarfile then gives whole seconds from the ustar header)."""
    if value is None:
        return None
    try:
        return int((Decimal(value) * 1_000_000_000).to_integral_value(rounding=ROUND_FLOOR))
    except ArithmeticError:
        return None


def _parent(name: str) -> str:
    return name.rpartition("/")[0] or "."


def check_members(members: Iterable[Member], allowed: RestoreSettings) -> list[str]:
    """Every reason to refuse this list of members, as 'name: why' lines (empty: the archive may be restored)."""
    problems: list[str] = []
    seen: dict[str, Member] = {}
    ordered = list(members)
    for member in ordered:
        where = member.name
        if member.name in seen:
            problems.append(f"{where}: appears twice in the archive")
            continue
        problems.extend(f"{where}: {why}" for why in _kind_problems(member, seen, allowed))
        seen[member.name] = member
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
    return problems


def _kind_problems(member: Member, earlier: dict[str, Member], allowed: RestoreSettings) -> list[str]:
    """What is wrong with one member by its type alone (and, for a hardlink, the earlier member it names)."""
    if member.name == "." and member.kind is not MemberKind.DIRECTORY:
        return [f"the root of the archive is a {member.kind.value}, not a directory"]
    if member.kind in (MemberKind.CHARACTER_DEVICE, MemberKind.BLOCK_DEVICE) and not allowed.allow_devices:
        return [f"{member.kind.value} (allow with restore.allow_devices in the policy)"]
    if member.kind is MemberKind.FIFO and not allowed.allow_fifos:
        return ["FIFO (allow with restore.allow_fifos in the policy)"]
    if member.kind is MemberKind.SYMLINK and not member.link:
        return ["symlink with an empty target"]
    if member.kind is MemberKind.HARDLINK:
        target = earlier.get(member.link)
        visited = {member.name}
        while target is not None and target.kind is MemberKind.HARDLINK and target.name not in visited:
            visited.add(target.name)
            target = earlier.get(target.link)
        if target is None or target.kind is MemberKind.HARDLINK:
            return [f"hardlink to {member.link}, which is not an earlier member of the archive"]
        if target.kind is MemberKind.DIRECTORY:
            return [f"hardlink to the directory {target.name}"]
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
    archive: AnyArchive, compression: Compression, decryption: Decryption | None, allowed: RestoreSettings
) -> ArchiveContent:
    """Read the whole archive (a local file or any ArchiveLocation) once and judge every member header. Raises
    RestoreError when it cannot be read."""
    content = ArchiveContent()
    described = location_of(archive).describe()
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
        raise RestoreError(f"cannot read {described}: {error}") from None
    if content.stream.errors:
        raise RestoreError(f"cannot read {described}: " + "; ".join(content.stream.errors[:3]))
    content.problems.extend(check_members(content.members, allowed))
    return content


class ArchiveChanged(Exception):
    """The second read of the archive differs from the first, which was the one checked."""


# ---------------------------------------------------------------------------------------------------------------
# POSIX ACLs: GNU tar stores them as text (pax SCHILY.acl.access/default); the kernel takes them as the
# system.posix_acl_access/default extended attribute in its binary form (linux/posix_acl_xattr.h).

ACL_XATTRS = {"access": "system.posix_acl_access", "default": "system.posix_acl_default"}
_ACL_VERSION = 2
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ACL_TAGS = {"user": "user", "u": "user", "group": "group", "g": "group", "mask": "mask", "m": "mask"}
_ACL_TAGS |= {"other": "other", "o": "other"}


class AclError(ValueError):
    """An ACL in text form that cannot be encoded (malformed, or naming a user or group this host lacks)."""


def _acl_id(qualifier: str, database: Callable[[str], Any]) -> int:
    if qualifier.isdigit():
        return int(qualifier)
    try:
        return int(database(qualifier)[2])
    except KeyError:
        raise AclError(f"no user or group named {qualifier!r} on this host") from None


def acl_to_xattr(text: str, kind: str) -> bytes | None:
    """The binary extended attribute for an ACL in text form ('user::rw-\\nuser:999:r--\\n...'), as setfacl
    would set it; names are looked up as GNU tar's restore does (numeric ids as they are). None for an access
    ACL with only the three base entries: the mode bits hold it. Raises AclError."""
    entries: list[tuple[int, int, int]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(":")
        if len(fields) != 3 or fields[0] not in _ACL_TAGS:
            raise AclError(f"malformed ACL entry {line!r}")
        tag_name, qualifier, permissions = _ACL_TAGS[fields[0]], fields[1], fields[2]
        if any(character not in "rwx-" for character in permissions):
            raise AclError(f"malformed permissions in ACL entry {line!r}")
        perm = (4 if "r" in permissions else 0) | (2 if "w" in permissions else 0) | (1 if "x" in permissions else 0)
        if tag_name == "user":
            tag = _ACL_USER if qualifier else _ACL_USER_OBJ
            ident = _acl_id(qualifier, pwd.getpwnam) if qualifier else _ACL_UNDEFINED_ID
        elif tag_name == "group":
            tag = _ACL_GROUP if qualifier else _ACL_GROUP_OBJ
            ident = _acl_id(qualifier, grp.getgrnam) if qualifier else _ACL_UNDEFINED_ID
        else:
            tag, ident = (_ACL_MASK if tag_name == "mask" else _ACL_OTHER), _ACL_UNDEFINED_ID
        entries.append((tag, perm, ident))
    tags = {tag for tag, _, _ in entries}
    if kind == "access" and tags <= {_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_OTHER}:
        return None
    entries.sort(key=lambda entry: (entry[0], entry[2]))
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


# ---------------------------------------------------------------------------------------------------------------
# Extraction: coord writes each checked member itself (tarfile only reads), never following a link


COPY_CHUNK = 1 << 20
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_FILE_TYPES = {
    MemberKind.CHARACTER_DEVICE: stat.S_IFCHR,
    MemberKind.BLOCK_DEVICE: stat.S_IFBLK,
    MemberKind.FIFO: stat.S_IFIFO,
}


@dataclass
class SkippedAttributes:
    """Extended attributes (ACLs included) the target refused, by (attribute, reason): the entries' names."""

    entries: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, attribute: str, reason: str, name: str) -> None:
        self.entries.setdefault((attribute, reason), []).append(name)

    def warnings(self) -> list[str]:
        return [
            f"{attribute} not restored on {len(names)} entr{'y' if len(names) == 1 else 'ies'} ({reason}), "
            f"e.g. {names[0]}"
            for (attribute, reason), names in sorted(self.entries.items())
        ]


class _Extractor:
    """Writes checked members into the staging directory. Each name is reached from the staging directory's
    descriptor one component at a time with O_NOFOLLOW, and each entry is created exclusively (O_EXCL, mkdir,
    symlink, link, mknod fail on an existing name): nothing is written through a link, whatever the archive
    or anyone else put there. Directories get their attributes at the end, deepest first, so that writing
    their content changes neither their mtime nor (default ACL) the content's own attributes."""

    def __init__(self, staging: int) -> None:
        self.staging = staging
        self.as_root = os.geteuid() == 0
        self.directories: list[Member] = []
        self.skipped = SkippedAttributes()
        self._parent: tuple[str, int] | None = None

    def close(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _walk(self, path: str, create: bool) -> int:
        """A new descriptor for the directory `path` below the staging directory (missing ones made, 0700)."""
        descriptor = os.dup(self.staging)
        try:
            for component in path.split("/"):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(component, 0o700, dir_fd=descriptor)
                inner = open_directory(component, descriptor)
                os.close(descriptor)
                descriptor = inner
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _parent_of(self, name: str) -> tuple[int, str]:
        parent, _, base = name.rpartition("/")
        if not parent:
            return self.staging, base
        if self._parent is None or self._parent[0] != parent:
            descriptor = self._walk(parent, create=True)
            self.close()
            self._parent = (parent, descriptor)
        return self._parent[1], base

    def extract(self, info: tarfile.TarInfo, member: Member, reader: tarfile.TarFile) -> None:
        if member.name == ".":
            self.directories.append(member)
            return
        parent, base = self._parent_of(member.name)
        if member.kind is MemberKind.FILE:
            descriptor = os.open(base, _CREATE_FILE, 0o600, dir_fd=parent)
            try:
                source = reader.extractfile(info)
                assert source is not None
                _write_content(descriptor, source, member)
                self._set_attributes(descriptor, member)
            finally:
                os.close(descriptor)
        elif member.kind is MemberKind.DIRECTORY:
            with contextlib.suppress(FileExistsError):  # made already as the parent of an earlier member
                os.mkdir(base, 0o700, dir_fd=parent)
            self.directories.append(member)
        elif member.kind is MemberKind.HARDLINK:
            source_parent, _, source_base = member.link.rpartition("/")
            source_directory = self._walk(source_parent, create=False) if source_parent else os.dup(self.staging)
            try:
                os.link(source_base, base, src_dir_fd=source_directory, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(source_directory)
        else:
            if member.kind is MemberKind.SYMLINK:
                os.symlink(member.link, base, dir_fd=parent)
            else:
                os.mknod(base, _SPECIAL_FILE_TYPES[member.kind] | 0o600, os.makedev(*member.device), dir_fd=parent)
            self._set_attributes_by_name(parent, base, member)

    def finish(self) -> None:
        """Directory attributes, deepest first (the staging directory itself for the root member)."""
        self.close()
        for member in sorted(self.directories, key=lambda item: item.name.count("/"), reverse=True):
            if member.name == ".":
                self._set_attributes(self.staging, member)
                continue
            descriptor = self._walk(member.name, create=False)
            try:
                self._set_attributes(descriptor, member)
            finally:
                os.close(descriptor)

    def _set_attributes(self, descriptor: int, member: Member) -> None:
        # Owner first: chown clears setuid/setgid and security.capability, which the next steps set again.
        if self.as_root:
            os.fchown(descriptor, member.uid, member.gid)
        os.chmod(descriptor, member.mode)
        self._set_xattrs(descriptor, member, follow_symlinks=True)
        os.utime(descriptor, ns=member.times_ns)

    def _set_attributes_by_name(self, parent: int, base: str, member: Member) -> None:
        """A symlink, FIFO or device node, just made: reached by name (opening a FIFO or device would block or
        act on it), never following the final component."""
        if self.as_root:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if member.kind is not MemberKind.SYMLINK:
            os.chmod(base, member.mode, dir_fd=parent)  # not a link: it was just made by mknod
        self._set_xattrs(f"/proc/self/fd/{parent}/{base}", member, follow_symlinks=False)
        os.utime(base, ns=member.times_ns, dir_fd=parent, follow_symlinks=False)

    def _set_xattrs(self, target: int | str, member: Member, follow_symlinks: bool) -> None:
        values = dict(member.xattrs)
        for kind, text in member.acls:
            attribute = ACL_XATTRS[kind]
            if attribute in values:  # the archive holds the binary form too: exact, with numeric ids
                continue
            try:
                encoded = acl_to_xattr(text, kind)
            except AclError as problem:
                self.skipped.add(f"{kind} ACL", str(problem), member.name)
                continue
            if encoded is not None:
                values[attribute] = encoded
        for attribute, value in sorted(values.items()):
            try:
                os.setxattr(target, attribute, value, follow_symlinks=follow_symlinks)
            except OSError as error:
                self.skipped.add(attribute, error.strerror or str(error), member.name)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _write_content(descriptor: int, source: IO[bytes], member: Member) -> None:
    """A file's content; a sparse file's data regions only, its holes left as holes."""
    if member.sparse is None:
        while chunk := source.read(COPY_CHUNK):
            _write_all(descriptor, chunk)
        return
    # The unbuffered reader under tarfile's file object: it seeks (forward, in a stream) without asking whether
    # the stream is seekable, and reads a data region without producing the holes around it.
    raw = getattr(source, "raw", source)
    for offset, length in member.sparse:
        if not length:
            continue
        raw.seek(offset)
        os.lseek(descriptor, offset, os.SEEK_SET)
        remaining = length
        while remaining:
            chunk = raw.read(min(COPY_CHUNK, remaining))
            if not chunk:
                raise ArchiveChanged(f"{member.name}: the archive ends inside its data")
            _write_all(descriptor, chunk)
            remaining -= len(chunk)
    os.ftruncate(descriptor, member.size)


def extract_members(
    archive: AnyArchive,
    compression: Compression,
    decryption: Decryption | None,
    members: list[Member],
    staging: Path,
) -> tuple[ReadBack, list[str]]:
    """Extract the checked archive into `staging` exactly (owners, modes, ns mtimes, links, xattrs, ACLs, holes),
    comparing every member with the first read. Returns the read's hashes and warnings for attributes the file
    system refused. Raises RestoreError."""
    described = location_of(archive).describe()
    position = 0
    try:
        with open_tar_stream(archive, compression, decryption) as opened, opened_directory(staging) as directory:
            extractor = _Extractor(directory)
            try:
                with tarfile.open(fileobj=opened.stream, mode="r|") as reader:
                    for info in reader:
                        expected = members[position] if position < len(members) else None
                        position += 1
                        try:
                            member = member_of(info)
                        except UnsafeMember as problem:
                            raise ArchiveChanged(f"{info.name}: {problem}") from None
                        if member != expected:
                            raise ArchiveChanged(f"{info.name}: differs from the member checked in the first read")
                        extractor.extract(info, member, reader)
                if position != len(members):
                    raise ArchiveChanged(f"the second read found {position} members, the first {len(members)}")
                extractor.finish()
            finally:
                extractor.close()
    except (tarfile.TarError, OSError, ArchiveChanged) as error:
        raise RestoreError(f"extracting {described} failed: {error}") from None
    if opened.result.errors:
        raise RestoreError(f"extracting {described} failed: " + "; ".join(opened.result.errors[:3]))
    return opened.result, extractor.skipped.warnings()


# ---------------------------------------------------------------------------------------------------------------
# The target: a directory (a volume's root), its content replaced only once the staging copy is complete


def _entries(root: Path, swap: RestoreSwap | None = None) -> list[str]:
    return sorted(name for name in os.listdir(root) if swap is None or name not in swap.own_names)


@dataclass(frozen=True)
class ArchiveSource:
    """The archive to restore and how it is read: its compression and decryption, from its name and manifest."""

    archive: ArchiveLocation
    compression: Compression
    decryption: Decryption | None
    manifest: dict[str, Any] | None  # None: no manifest beside the archive


def restore_into_directory(
    source: ArchiveSource, content: ArchiveContent, root: Path, force: bool, journal: Journal
) -> list[str]:
    """Extract the checked archive into `root` (which exists), replacing its content when `force`, as journaled
    steps (restore_swap.py). Returns warnings (attributes the file system refused).

    Raises RestoreError; on failure before the swap `root` is as it was. A failure during the swap (or a crash)
    leaves the journal entry from which `coord recover` completes it.
    """
    swap = RestoreSwap.new(root)
    top_level = {member.name.split("/")[0] for member in content.members}
    if top_level & swap.own_names:  # pragma: no cover - 48 random bits
        raise RestoreError(f"the archive holds {swap.staging.name}; try again")
    root_before = os.stat(root)
    entry = _begin_staging(swap, journal)
    try:
        warnings = _fill_staging(source, content, swap, root_before, force)
        crash_point("extracted")
    except BaseException:
        _abandon_staging(swap, root_before, journal, entry)
        raise
    _swap_staging_in(swap, journal, entry)
    return warnings


def _begin_staging(swap: RestoreSwap, journal: Journal) -> JournalEntry:
    """Journal the extraction (EXTRACTING), then create the empty staging directory. Returns the journal entry.
    Raises RestoreError (the entry cleared again) when the root cannot be written."""
    entry = swap.record(journal, EXTRACTING)
    try:
        os.mkdir(swap.staging, 0o700)
    except OSError as error:
        journal.clear(entry)
        hint = " (is it mounted read-only? a restore needs it read-write)" if error.errno == errno.EROFS else ""
        raise RestoreError(f"cannot write into {swap.root}: {error.strerror}{hint}") from None
    return entry


def _fill_staging(
    source: ArchiveSource, content: ArchiveContent, swap: RestoreSwap, root_before: os.stat_result, force: bool
) -> list[str]:
    """Extract the archive into the staging directory, make sure it is still the archive checked and the root
    still may be filled, and give the staging directory the root's attributes and times to come (the archive's
    root member, or the root's own). Returns warnings (attributes the file system refused). Raises RestoreError."""
    root = swap.root
    read, warnings = extract_members(
        source.archive, source.compression, source.decryption, content.members, swap.staging
    )
    if read.sha256 != content.stream.sha256:
        raise RestoreError(f"{source.archive.describe()} changed between the check and the extraction (sha256 differs)")
    present = _entries(root, swap)
    if present and not force:
        raise RestoreError(f"{root} is no longer empty ({', '.join(present[:5])}); nothing was replaced")
    root_member = next((member for member in content.members if member.name == "."), None)
    if root_member is None:  # the root keeps its own attributes
        with opened_directory(root) as source_directory, opened_directory(swap.staging) as target_directory:
            copy_directory_attributes(source_directory, target_directory)
    keep_root_times(swap, root_member.times_ns if root_member else (root_before.st_atime_ns, root_before.st_mtime_ns))
    return warnings


def _abandon_staging(swap: RestoreSwap, root_before: os.stat_result, journal: Journal, entry: JournalEntry) -> None:
    """Remove what the extraction made and clear its journal entry, so the root is as it was; when the removal
    fails, the entry stays for `coord recover` (logged, never raised: the caller re-raises the first error)."""
    try:
        roll_back_extraction(swap)
        # The staging directory came and went: give the root its times back, so it is as it was.
        os.utime(swap.root, ns=(root_before.st_atime_ns, root_before.st_mtime_ns))
    except OSError as cleanup:
        log.error("could not remove %s (%s): `coord recover` removes it", swap.staging, cleanup)
    else:
        journal.clear(entry)


def _swap_staging_in(swap: RestoreSwap, journal: Journal, entry: JournalEntry) -> None:
    """Journal the swap (SWAPPING) and replace the root's content with the staging directory's, signals held.
    Raises ContainersMustStayDown when it fails halfway (the entry stays for `coord recover`)."""
    with deferred():  # a SIGTERM waits for the swap rather than leaving it to `coord recover`
        swap.record(journal, SWAPPING)
        crash_point("swap-out-begun")
        try:
            carry_out_swap(swap)
        except (OSError, RestoreError) as error:
            message = error.message if isinstance(error, RestoreError) else str(error)
            raise ContainersMustStayDown(
                f"replacing the content of {swap.root} failed halfway ({message}); its containers stay stopped, "
                "as no workload should start on half of each tree: fix the cause, then run `coord recover`, which "
                "completes the replacement and starts them"
            ) from None
        journal.clear(entry)


# ---------------------------------------------------------------------------------------------------------------
# One restore, start to finish


@dataclass(frozen=True)
class RestoreRequest:
    archive: AnyArchive  # a local file, or an archive on a target (read as a stream, twice)
    volume: str | None = None
    target_dir: Path | None = None
    force: bool = False
    dry_run: bool = False
    allowed: RestoreSettings = field(default_factory=RestoreSettings)
    stop_timeout_s: int = STOP_TIMEOUT_S
    state_dir: Path = DEFAULT_STATE_DIR
    lock_timeout_s: float = 0.0
    sources: VolumeSources = HOST  # where a volume's files are: its Mountpoint, or /volumes/<name> in the sidecar


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


def _check_manifest(archive: str, content: ArchiveContent, manifest: dict[str, Any] | None) -> None:
    if manifest is None:
        return
    problems = []
    if manifest.get("sha256") and manifest["sha256"] != content.stream.sha256:
        problems.append(f"sha256 is {content.stream.sha256}, the manifest says {manifest['sha256']}")
    if isinstance(manifest.get("entries"), int) and manifest["entries"] != len(content.members):
        problems.append(f"{len(content.members)} members, the manifest says {manifest['entries']}")
    if problems:
        raise RestoreError(f"{archive} does not match its manifest ({'; '.join(problems)}): corrupt or replaced")


def _load_manifest(archive: ArchiveLocation) -> dict[str, Any] | None:
    """The archive's manifest; None when it has none. Raises RestoreError when it cannot be read (CoordError from a
    transport)."""
    try:
        return archive.read_manifest()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RestoreError(f"cannot read the manifest {archive.manifest_name()}: {error}") from None


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
    source = archive_source(request.archive, decryption_for_archive)
    target = request.volume if request.volume is not None else str(request.target_dir)
    result = RestoreResult(archive=source.archive.describe(), target=target, dry_run=request.dry_run)
    if os.geteuid() != 0:
        result.warnings.append("not running as root: owners will not be restored")
    root, exists = _locate_target(request, docker)
    if exists:
        _note_content_replaced(request, root, result)
    content = _checked_content(source, request.allowed, result)
    result.entries = len(content.members)
    result.created = not exists
    if request.dry_run:
        result.members = content.members
        if docker is not None and request.volume is not None and exists:
            result.containers = _containers_a_restore_would_stop(request.volume, docker)
    else:
        if not exists:
            root = _create_target(request, docker)
        with termination_raises():
            _write_files(request, docker, result, source, content, root)
    result.duration_s = time.monotonic() - clock
    return result


def archive_source(archive: AnyArchive, decryption_for_archive: Callable[[], Decryption] | None) -> ArchiveSource:
    """The archive, its manifest (if any), and how to read it; asks `decryption_for_archive` only when the archive
    is encrypted. Raises UsageError (no such file; encrypted and no way to decrypt), RestoreError (unreadable
    manifest, unknown compression), EncryptionError, CoordError (a transport's)."""
    if isinstance(archive, Path) and not archive.is_file():
        raise UsageError(f"archive {archive} does not exist or is not a file")
    location = location_of(archive)
    manifest = _load_manifest(location)
    try:
        compression = archive_compression(Path(location.name), manifest)
    except ValueError as error:
        raise RestoreError(f"the manifest {location.manifest_name()} records an unknown compression: {error}") from None
    decryption = None
    if archive_is_encrypted(Path(location.name), manifest):
        if decryption_for_archive is None:
            raise UsageError(f"{location.describe()} is encrypted: pass --gpg-home DIR or --passphrase-file FILE")
        decryption = decryption_for_archive()
    return ArchiveSource(location, compression, decryption, manifest)


def _note_content_replaced(request: RestoreRequest, root: Path, result: RestoreResult) -> None:
    """Record the existing target's top-level entries in `result.replaced`. Raises UsageError when it holds any and
    --force is missing (a dry run only warns: it still says what a forced restore would do)."""
    result.replaced = _entries(root)
    if result.replaced and not request.force:
        refusal = (
            f"{_describe_target(request)} is not empty ({len(result.replaced)} entries, e.g. "
            f"{', '.join(result.replaced[:3])}); pass --force to replace its content"
        )
        if not request.dry_run:
            raise UsageError(refusal)
        result.warnings.append(refusal)


def _checked_content(source: ArchiveSource, allowed: RestoreSettings, result: RestoreResult) -> ArchiveContent:
    """Read the archive once and check every member and, when there is one, the manifest's sha256 and count
    (a warning in `result` when there is none). Raises ArchiveRejected, RestoreError."""
    content = read_members(source.archive, source.compression, source.decryption, allowed)
    if content.problems:
        raise ArchiveRejected(source.archive.describe(), content.problems)
    _check_manifest(source.archive.describe(), content, source.manifest)
    if source.manifest is None:
        result.warnings.append(f"no manifest beside {source.archive.name}: its sha256 was not checked against a record")
    return content


def _containers_a_restore_would_stop(volume: str, docker: DockerControl) -> list[ContainerAction]:
    """What a dry run reports for the containers using `volume`: running and paused ones would be stopped."""
    return [
        ContainerAction(c.name, c.id, "would stop" if c.state in ("running", "paused") else "left-alone", c.state)
        for c in _containers_using(volume, docker)
    ]


def _write_files(
    request: RestoreRequest,
    docker: DockerControl | None,
    result: RestoreResult,
    source: ArchiveSource,
    content: ArchiveContent,
    root: Path,
) -> None:
    """Write the checked archive into `root`: for a volume with its containers stopped, for a directory under
    the run lock alone (`coord recover` must not take our journal entry). Warnings go into `result`."""
    if docker is not None and request.volume is not None:
        _restore_with_containers_stopped(request, docker, result, source, content, root)
    else:
        journal = Journal(request.state_dir)
        with run_lock(request.state_dir, request.lock_timeout_s):  # `coord recover` must not take our entry
            result.warnings += restore_into_directory(source, content, root, request.force, journal)


def _restore_with_containers_stopped(
    request: RestoreRequest,
    docker: DockerControl,
    result: RestoreResult,
    source: ArchiveSource,
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
        Strategy.STOP, [], containers=_containers_using(request.volume, docker), stop_timeout=request.stop_timeout_s
    )
    with run_lock(request.state_dir, request.lock_timeout_s):
        recovered = recover(journal, docker)
        result.warnings += [f"recovered from an earlier run: {line}" for line in recovered.restored]
        with quiesced(group, docker, journal, result.containers, Strategy.STOP, stop_paused=True):
            result.warnings += restore_into_directory(source, content, root, request.force, journal)
    failures = [f"{a.container}: {a.error}" for a in result.containers if not a.restored]
    if failures:
        raise RestoreContainersError(
            f"the files were restored, but containers were not put back: {'; '.join(failures)}"
        )


def restore_settings_for(policies_dir: Path, volume: str | None, archive: AnyArchive) -> RestoreSettings:
    """The `restore:` rules of the policy owning `volume` (or, for a directory target, of the policy the archive's
    manifest names). Defaults (no devices, no FIFOs) when no policy applies or there is no policies directory, so a
    restore works on a bare host. The owner is decided as a backup decides it (plan.plan_volumes: an exact name
    beats a glob). Raises PolicyError for invalid policies, or when two policies' globs match the volume.
    """
    if not policies_dir.is_dir() or not policy_files(policies_dir):
        return RestoreSettings()
    policies = load_policies(policies_dir)
    if volume is not None:
        owner = next((plan.policy for plan in plan_volumes(policies, [volume]) if plan.error is None), None)
        if owner is not None:
            return owner.policy.restore
    try:
        manifest = _load_manifest(location_of(archive))
    except CoordError:
        manifest = None
    named = manifest.get("policy") if manifest else None
    return next((item.policy.restore for item in policies if item.name == named), RestoreSettings())


def _describe_target(request: RestoreRequest) -> str:
    return f"volume {request.volume}" if request.volume is not None else f"directory {request.target_dir}"


def _containers_using(volume: str, docker: DockerControl) -> list[Any]:
    """The containers mounting `volume`, but never the one coord runs in (the sidecar mounts the volume too)."""
    own = own_container_id()
    return [container for container in docker.containers_using(volume) if container.id != own]


def _locate_target(request: RestoreRequest, docker: DockerControl | None) -> tuple[Path, bool]:
    """The target's root directory (for a volume: where this coord sees its files, request.sources) and whether
    it exists already. Raises UsageError, CoordError (sidecar: the volume is not mounted)."""
    if request.volume is not None:
        assert docker is not None
        if request.volume not in docker.volume_names():
            if request.sources.volumes_root is not None:
                raise UsageError(
                    f"volume {request.volume} does not exist; coord runs as a sidecar and sees only the volumes "
                    f"mounted into it: create it, mount it at {request.sources.volumes_root / request.volume} "
                    "(read-write), and restore again"
                )
            return Path(), False
        return request.sources.path_of(request.volume, docker), True
    assert request.target_dir is not None
    target = request.target_dir
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    return target, target.is_dir()


def _create_target(request: RestoreRequest, docker: DockerControl | None) -> Path:
    if request.volume is not None:
        assert docker is not None
        docker.create_volume(request.volume)
        return request.sources.path_of(request.volume, docker)
    assert request.target_dir is not None
    try:
        request.target_dir.mkdir(parents=True, mode=0o700)
    except OSError as error:
        raise RestoreError(f"cannot create {request.target_dir}: {error.strerror}") from None
    return request.target_dir
