"""Restore drills: prove that a volume's latest archive restores, and restores to exactly what was archived.

Every target is drilled the same way (targets/archives.py): the target `local` of --dest, and each target of
_defaults.yaml (`--target NAME` limits the drill to those), a local directory or any rclone remote. The archive
is read through its ArchiveLocation as `coord verify` and `coord restore` read it: a remote one is streamed
(`rclone cat`), never copied to local disk.

    per target, per volume (the given ones, else every volume with a directory on the target):
    choose the target's latest verified archive (ArchiveStore.list_volume, as `coord verify --latest --target`
    chooses; a newer archive that no longer matches its manifest fails the drill)
    -> under the run lock: remove scratch space a killed drill left -> create a scratch volume (labelled
       coord.drill; in a sidecar, a directory in the state directory)
    -> read and check the archive as a restore does (restore.read_members: every member judged; its sha256 and
       entry count against the manifest)
    -> extract it into the scratch volume with the restore's own code (restore.restore_into_directory)
    -> the restored tree listed by GNU tar as a backup lists a volume: count and digest against the manifest's
       `entries` and `entries_digest`
    -> each restored entry against the archive read once more: kind, mode, owner, size, mtime, link target, and
       each regular file's sha256 of content (the manifest holds no per-file hashes, so the archive's own bytes
       are the reference: this proves the restore path, not the backup's read of the volume)
    -> remove the scratch space (always: on a failure and on SIGTERM/SIGINT too) -> record the drill in the history

A drill never touches the volume it drills or its containers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coord.archive import TAR_ENVIRONMENT
from coord.docker_ops import Engine
from coord.encrypt import DEFAULT_STATE_DIR, Decryption
from coord.errors import CoordError
from coord.grammar import plural
from coord.hashing import CHUNK_SIZE
from coord.history import DrillRow, History
from coord.journal import Journal
from coord.lock import run_lock
from coord.render import human_size
from coord.restore import (
    ArchiveSource,
    MemberKind,
    UnsafeMember,
    archive_source,
    member_of,
    read_members,
    restore_into_directory,
    restore_settings_for,
)
from coord.signals import deferred, termination_raises
from coord.sources import HOST, VolumeSources
from coord.targets.archives import ArchiveStore, ListedArchive, StoreOptions, selected_stores
from coord.verify import open_tar_stream

log = logging.getLogger("coord.drill")

DRILL_LABEL = "coord.drill"  # on scratch volumes; its value is the volume drilled
SCRATCH_PREFIX = "coord-drill-"
SAMPLE = 5


@dataclass(frozen=True)
class DrillRequest:
    dest: Path | None = None  # --dest: the target `local`
    volumes: Sequence[str] = ()  # empty: every volume with a directory of archives on each target
    state_dir: Path = DEFAULT_STATE_DIR
    policies_dir: Path = Path("policies")  # _defaults.yaml's targets; the volume's `restore:` rules
    sources: VolumeSources = HOST  # sidecar mode: scratch in the state directory, not a Docker volume
    lock_timeout_s: float = 0.0
    trigger: str = "manual"
    targets: Sequence[str] = ()  # --target NAME: empty: every configured target
    rclone_config: Path | None = None  # --rclone-config FILE
    node: str | None = None  # whose archives: a Swarm node's namespace (`_nodes/<node>/`); None: the flat layout

    def store_options(self) -> StoreOptions:
        """How the read side finds the targets to drill."""
        return StoreOptions(
            self.policies_dir, self.dest, tuple(self.targets), self.state_dir, self.rclone_config, self.node
        )


@dataclass
class DrillResult:
    volume: str  # empty only for a target that could not be listed or holds no volume (nothing drilled)
    started_at: datetime
    target: str = ""
    archive: str | None = None  # how it is named: a local path, or a ref (`offsite:volume/file`)
    ref: str | None = None  # `<target>:<volume>/<file>`, as `coord list` prints it
    scratch: str | None = None
    entries: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    finished_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """One line: OK or FAIL, the volume, target and archive, and what was compared or what went wrong."""
        archive = self.archive.rsplit("/", 1)[-1] if self.archive else ""
        what = f"drill {self.volume} from target {self.target}" if self.volume else f"drill of target {self.target}"
        if self.ok:
            return (
                f"OK   {what}: {archive} restored into {self.scratch} and compared: "
                f"{plural(self.entries, 'entry', 'entries')} match the manifest, "
                f"{plural(self.files_hashed, 'file')} ({human_size(self.bytes_hashed)}) match the archive's content "
                f"({self.duration_s:.1f}s; scratch removed)"
            )
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        drilled = f" (drilled {archive})" if archive else ""
        return f"FAIL {what}{drilled}: {self.problems[0]}{more}"

    def row(self, trigger: str) -> DrillRow:
        return DrillRow(
            id=0,
            started_at=self.started_at,
            finished_at=self.finished_at or datetime.now(UTC),
            volume=self.volume,
            archive=self.archive,
            status="ok" if self.ok else "failed",
            trigger=trigger,
            entries=self.entries,
            files_hashed=self.files_hashed,
            bytes_hashed=self.bytes_hashed,
            duration_s=self.duration_s,
            problems=list(self.problems),
            target=self.target or None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "volume": self.volume,
            "target": self.target,
            "archive": self.archive,
            "ref": self.ref,
            "scratch": self.scratch,
            "entries": self.entries,
            "files_hashed": self.files_hashed,
            "bytes_hashed": self.bytes_hashed,
            "duration_s": round(self.duration_s, 3),
            "problems": list(self.problems),
            "line": self.line(),
        }


# ---------------------------------------------------------------------------------------------------------------
# What an entry is, on each side, and the comparison (pure)


@dataclass(frozen=True)
class EntryFacts:
    """What a restore must reproduce of one entry. `mtime_ns` is compared for non-directories only (a directory's
    mtime is set once its content is in place, and the root's is the volume's)."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int = 0  # regular files
    sha256: str = ""  # regular files: of the content
    link: str = ""  # symlinks: the target
    mtime_ns: int | None = None


def _differences(archived: EntryFacts, restored: EntryFacts, owners: bool) -> list[str]:
    found = []
    if archived.kind != restored.kind:
        return [f"a {archived.kind} in the archive, a {restored.kind} restored"]
    checks: list[tuple[str, object, object]] = [("size", archived.size, restored.size)]
    checks.append(("content sha256", archived.sha256[:12], restored.sha256[:12]))
    checks.append(("link target", archived.link, restored.link))
    if archived.kind != MemberKind.SYMLINK.value:  # a symlink's own mode means nothing on Linux
        checks.append(("mode", f"{archived.mode:04o}", f"{restored.mode:04o}"))
    if owners:
        checks.append(("owner", f"{archived.uid}:{archived.gid}", f"{restored.uid}:{restored.gid}"))
    if archived.mtime_ns is not None:
        checks.append(("mtime_ns", archived.mtime_ns, restored.mtime_ns))
    for what, expected, actual in checks:
        if expected != actual:
            found.append(f"{what} {expected} in the archive, {actual} restored")
    return found


def compare_entries(archived: dict[str, EntryFacts], restored: dict[str, EntryFacts], owners: bool) -> list[str]:
    """Every way the restored tree differs from the archive, summarized (counts and the first few names).

    Given each side's entries by name ('.' for the root); owners are compared only when `owners`.
    """
    problems = []
    missing = sorted(archived.keys() - restored.keys())
    extra = sorted(restored.keys() - archived.keys())
    if missing:
        problems.append(
            f"{plural(len(missing), 'archived entry', 'archived entries')} not restored: {_sample(missing)}"
        )
    if extra:
        problems.append(
            f"{plural(len(extra), 'restored entry', 'restored entries')} not in the archive: {_sample(extra)}"
        )
    differing = []
    for name in sorted(archived.keys() & restored.keys()):
        differences = _differences(archived[name], restored[name], owners)
        if differences:
            differing.append(f"{name} ({'; '.join(differences)})")
    if differing:
        problems.append(
            f"{plural(len(differing), 'restored entry', 'restored entries')} "
            f"{'differs' if len(differing) == 1 else 'differ'} from the archive: " + _sample(differing)
        )
    return problems


def _entries(count: int, which: str) -> str:
    return plural(count, f"{which} entry", f"{which} entries")


def _sample(names: list[str]) -> str:
    return ", ".join(names[:SAMPLE]) + (", ..." if len(names) > SAMPLE else "")


# ---------------------------------------------------------------------------------------------------------------
# Reading both sides


def _hash_reader(read: Callable[[int], bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := read(CHUNK_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def archived_entries(source: ArchiveSource) -> tuple[dict[str, EntryFacts], list[str]]:
    """Each member of the archive, read once more, with the sha256 of every regular file's content (a hardlink
    is the file it links to). Returns the entries and the errors reading it (decryption, decompression, tar)."""
    entries: dict[str, EntryFacts] = {}
    with open_tar_stream(source.archive, source.compression, source.decryption) as opened:
        try:
            with tarfile.open(fileobj=opened.stream, mode="r|") as reader:
                for info in reader:
                    member = member_of(info)
                    if member.kind is MemberKind.HARDLINK:
                        entries[member.name] = entries[member.link]  # the same inode once restored
                        continue
                    content = reader.extractfile(info) if member.kind is MemberKind.FILE else None
                    entries[member.name] = EntryFacts(
                        kind=member.kind.value,
                        mode=stat.S_IMODE(member.mode),
                        uid=member.uid,
                        gid=member.gid,
                        size=member.size if content else 0,
                        sha256=_hash_reader(content.read) if content else "",
                        link=member.link if member.kind is MemberKind.SYMLINK else "",
                        mtime_ns=None if member.kind is MemberKind.DIRECTORY else member.times_ns[1],
                    )
        except (tarfile.TarError, UnsafeMember, KeyError) as error:
            opened.result.errors.append(f"not a readable tar stream: {error}")
    return entries, opened.result.errors


_KINDS = {
    stat.S_IFREG: MemberKind.FILE,
    stat.S_IFDIR: MemberKind.DIRECTORY,
    stat.S_IFLNK: MemberKind.SYMLINK,
    stat.S_IFCHR: MemberKind.CHARACTER_DEVICE,
    stat.S_IFBLK: MemberKind.BLOCK_DEVICE,
    stat.S_IFIFO: MemberKind.FIFO,
}


def _restored_entry(path: str, status: os.stat_result) -> EntryFacts:
    kind = _KINDS.get(stat.S_IFMT(status.st_mode))
    sha256, size, link = "", 0, ""
    if kind is MemberKind.FILE:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as handle:
            sha256, size = _hash_reader(handle.read), status.st_size
    elif kind is MemberKind.SYMLINK:
        link = os.readlink(path)
    return EntryFacts(
        kind=kind.value if kind else f"file type {stat.S_IFMT(status.st_mode):o}",
        mode=stat.S_IMODE(status.st_mode),
        uid=status.st_uid,
        gid=status.st_gid,
        size=size,
        sha256=sha256,
        link=link,
        mtime_ns=None if kind is MemberKind.DIRECTORY else status.st_mtime_ns,
    )


def restored_entries(root: Path) -> dict[str, EntryFacts]:
    """Each entry of the restored tree by name ('.' for the root), links never followed. Only the drill wrote
    there (a scratch volume no container mounts), from an archive whose members the restore checked."""
    entries = {".": _restored_entry(str(root), os.lstat(root))}
    for directory, directories, files in os.walk(root, followlinks=False):
        relative = os.path.relpath(directory, root)
        for name in (*directories, *files):
            path = os.path.join(directory, name)
            key = name if relative == "." else f"{relative}/{name}"
            entries[key] = _restored_entry(path, os.lstat(path))
    return entries


def listing_of(root: Path) -> tuple[int, str]:
    """The entry count and digest of `root` as a backup's tar index lists it (same options, same order): equal
    to a manifest's `entries` and `entries_digest` exactly when the tree holds the same names. Raises CoordError."""
    command = [
        "tar",
        "--create",
        "--file=/dev/null",
        "--format=posix",
        "--sort=name",
        "--verbose",
        "-C",
        str(root),
        ".",
    ]
    # --file=/dev/null: GNU tar then lists names without reading any content.
    done = subprocess.run(command, capture_output=True, env=TAR_ENVIRONMENT, check=False)
    if done.returncode != 0:
        raise CoordError(f"tar could not list the restored tree: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.count(b"\n"), hashlib.sha256(done.stdout).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Scratch space


@dataclass
class Scratch:
    """Where one drill restores to: a Docker volume (host mode) or a directory in the state directory (sidecar)."""

    name: str
    root: Path
    volume: bool

    def remove(self, docker: Engine | None) -> None:
        """Remove it. Raises CoordError (DockerError) or OSError."""
        if self.volume:
            assert docker is not None
            docker.remove_volume(self.name)
        else:
            shutil.rmtree(self.root)


def create_scratch(volume: str, request: DrillRequest, docker: Engine | None) -> Scratch:
    """A new, empty scratch space for drilling `volume`. Raises CoordError, OSError."""
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}-{volume}"[:200]
    if request.sources.volumes_root is None:
        assert docker is not None
        return Scratch(name, Path(docker.create_volume(name, {DRILL_LABEL: volume})), volume=True)
    root = request.state_dir / name
    root.mkdir(mode=0o700)
    return Scratch(name, root, volume=False)


def remove_leftover_scratch(request: DrillRequest, docker: Engine | None) -> list[str]:
    """Remove the scratch spaces of drills that were killed (the run lock is held: no drill is running). Only
    what carries coord's name prefix AND (for a volume) its drill label. Returns what was removed."""
    removed = []
    if docker is not None and request.sources.volumes_root is None:
        for name in docker.volumes_labelled(DRILL_LABEL):
            if name.startswith(SCRATCH_PREFIX):
                docker.remove_volume(name)
                removed.append(f"volume {name}")
    if request.state_dir.is_dir():
        for entry in os.scandir(request.state_dir):
            if entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
                removed.append(entry.path)
    for what in removed:
        log.warning("removed %s, left by a drill that did not finish", what)
    return removed


# ---------------------------------------------------------------------------------------------------------------
# One drill


def _check_against_manifest(source: ArchiveSource, root: Path, result: DrillResult) -> None:
    """The restored tree's member list against the manifest's entries and entries_digest."""
    manifest = source.manifest or {}
    count, digest = listing_of(root)
    if count != manifest.get("entries"):
        result.problems.append(f"the restored tree has {count} entries, the manifest records {manifest.get('entries')}")
    elif manifest.get("entries_digest") and digest != manifest["entries_digest"]:
        result.problems.append("the restored tree's member list differs from the one the manifest records")


def _restore_and_compare(source: ArchiveSource, scratch: Scratch, request: DrillRequest, result: DrillResult) -> None:
    """Restore `source` into the scratch space and compare it with the manifest and the archive."""
    manifest = source.manifest or {}
    allowed = restore_settings_for(request.policies_dir, result.volume, source.archive)
    content = read_members(source.archive, source.compression, source.decryption, allowed)
    if content.problems:
        result.problems.append(f"a restore would refuse the archive: {_sample(content.problems)}")
        return
    if manifest.get("sha256") != content.stream.sha256:
        result.problems.append(f"sha256 is {content.stream.sha256}, the manifest records {manifest.get('sha256')}")
        return
    if manifest.get("entries") != len(content.members):
        result.problems.append(f"{len(content.members)} members, the manifest records {manifest.get('entries')}")
        return
    for warning in restore_into_directory(source, content, scratch.root, False, Journal(request.state_dir)):
        result.problems.append(f"restore: {warning}")
    result.entries = len(content.members)
    _check_against_manifest(source, scratch.root, result)
    archived, errors = archived_entries(source)
    result.problems += [f"reading the archive again: {error}" for error in errors]
    restored = restored_entries(scratch.root)
    result.problems += compare_entries(archived, restored, owners=os.geteuid() == 0)
    hashed = [facts for facts in restored.values() if facts.kind == MemberKind.FILE.value]
    result.files_hashed, result.bytes_hashed = len(hashed), sum(facts.size for facts in hashed)


def drill_volume(
    store: ArchiveStore,
    volume: str,
    request: DrillRequest,
    docker: Engine | None,
    decryption: Callable[[], Decryption] | None,
) -> DrillResult:
    """Drill the latest verified archive of `volume` on `store`'s target (the caller holds the run lock). Never
    raises for what the drill finds or for an error doing it (CoordError, OSError): those are the result's
    problems."""
    result = DrillResult(volume, started_at=datetime.now(UTC), target=store.name)
    clock = time.monotonic()
    try:
        listing = store.list_volume(volume, result.started_at)
    except CoordError as error:  # the target cannot be read (down, wrong credentials)
        result.problems.append(error.message)
    else:
        chosen, _ = listing.latest()
        result.problems += [_corrupt(line) for line in listing.mismatched]
        if chosen is None:
            result.problems.append(f"no verified archive of volume {volume} in {store.describe()}")
        else:
            result.archive, result.ref = chosen.describe(), str(chosen.ref)
            _drill_archive(store, chosen, request, docker, decryption, result)
    result.duration_s = time.monotonic() - clock
    result.finished_at = datetime.now(UTC)
    log.info("%s", result.line())
    return result


_MISMATCH_ENDINGS = (
    "; does not match its manifest, not counted, left alone",  # a local archive (retention.find_archives)
    "; not counted, left alone",  # a remote one (targets/archives.RcloneStore)
)


def _corrupt(mismatch: str) -> str:
    """The read side's line about an archive that differs from its manifest, said for a drill."""
    for ending in _MISMATCH_ENDINGS:
        mismatch = mismatch.removesuffix(ending)
    named, _, what = mismatch.partition(": ")  # a path or a ref: neither holds ": "
    return (
        f"{named.rsplit('/', 1)[-1]} {what}: it no longer matches its manifest (corrupt or replaced; that backup is "
        "lost, older ones are drilled)"
    )


def _drill_archive(
    store: ArchiveStore,
    chosen: ListedArchive,
    request: DrillRequest,
    docker: Engine | None,
    decryption: Callable[[], Decryption] | None,
    result: DrillResult,
) -> None:
    scratch = None
    try:
        source = archive_source(store.location(chosen.ref), decryption)
        scratch = create_scratch(result.volume, request, docker)
        result.scratch = f"scratch volume {scratch.name}" if scratch.volume else f"scratch directory {scratch.root}"
        _restore_and_compare(source, scratch, request, result)
    except CoordError as error:
        result.problems.append(error.message)
    except (OSError, ValueError, KeyError) as error:
        result.problems.append(f"{type(error).__name__}: {error}")
    finally:
        if scratch is not None:
            with deferred():  # a SIGTERM now waits for the scratch space to go
                _remove_scratch(scratch, docker, result)


def _remove_scratch(scratch: Scratch, docker: Engine | None, result: DrillResult) -> None:
    try:
        scratch.remove(docker)
    except (CoordError, OSError) as error:
        what = error.message if isinstance(error, CoordError) else str(error)
        how = f"docker volume rm {scratch.name}" if scratch.volume else f"rm -r {scratch.root}"
        result.problems.append(f"could not remove {scratch.name} ({what}): remove it with `{how}`")


def drill_volumes(
    request: DrillRequest, docker: Engine | None, decryption: Callable[[], Decryption] | None = None
) -> list[DrillResult]:
    """Drill each requested volume (default: every volume with archives on the target) on each target (default:
    every configured one) under the run lock, recording each drill in the history. A target that cannot be
    listed, or holds no volume, gives one failed result (volume ''), not recorded: it drilled nothing. Raises
    UsageError (no target, an unknown --target), PolicyError (_defaults.yaml), LockError, HistoryError (a drill
    could not be recorded: the results are still printed by the caller)."""
    stores = selected_stores(request.store_options())
    history = History(request.state_dir)
    results: list[DrillResult] = []
    with termination_raises(), run_lock(request.state_dir, request.lock_timeout_s):
        remove_leftover_scratch(request, docker)
        for store in stores:
            try:
                volumes = list(request.volumes) or store.volumes()
            except CoordError as error:  # the target is down, or its credentials are wrong
                results.append(_undrilled(store, error.message))
                continue
            if not volumes:
                results.append(_undrilled(store, f"no volume has archives in {store.describe()}"))
            for volume in volumes:
                result = drill_volume(store, volume, request, docker, decryption)
                results.append(result)
                history.record_drill(result.row(request.trigger))
    return results


def _undrilled(store: ArchiveStore, problem: str) -> DrillResult:
    """The failed result of a target none of whose volumes could be drilled (volume ''): not recorded in the
    history, which keeps drills per volume."""
    result = DrillResult("", started_at=datetime.now(UTC), target=store.name, problems=[problem])
    result.finished_at = result.started_at
    log.info("%s", result.line())
    return result
