"""The read side of targets: which complete archives a target holds, refs that name them, and reading one.

Every target has the layout `--dest` has always had: `<root>/<volume>/<archive file>` with
`<archive file>.manifest.json` beside it; a Swarm node's archives are in its own namespace,
`<root>/_nodes/<node>/<volume>/<archive file>` (on a restic target: the snapshots whose host is the node). A store
reads one namespace (its `node`, None: the flat one); names at a root that start with `_` are never volumes.

An archive is complete only with its manifest (the manifest is written or uploaded last): an archive without one is
never listed, never `latest`, never counted by retention. Files whose names start with `.` (`.coord-*` temporaries,
a local publish's `.publishing` manifest) or end in `.partial` are uploads or writes in progress and are ignored.

A ref names one archive on one target: `<target>:<volume>/<file>` (flat), or `<target>:<node>/<volume>/<file>`
(a node's), as `coord list` prints it. `coord verify` and
`coord restore` take a ref wherever they take an archive's path.

A local target is read by retention's own machinery (retention.find_archives): an archive counts only when its
size and sha256 are its manifest's. A remote one cannot be hashed without downloading it whole, so it counts when
its manifest names it, is for its volume, and records the size the remote reports; `coord verify` reads it
whole and compares the sha256.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from coord.archive_location import ArchiveLocation, LocalArchive, StoredByRef
from coord.encrypt import GPG_SUFFIX
from coord.errors import CoordError, UsageError
from coord.manifest import MANIFEST_SUFFIX, manifest_path_for, read_manifest
from coord.node import NODES_DIRECTORY
from coord.retention import (
    VERIFIED_STATUSES,
    ArchiveHashes,
    StoredArchive,
    find_archives,
    future_reason,
    future_warning,
    is_volume_directory,
    parse_time,
    volume_directories,
)
from coord.stream_types import ByteStream, buffered_pipe
from coord.targets import PARTIAL_SUFFIX, Target, resolve_targets, volume_parts
from coord.targets.config import LOCAL_TARGET
from coord.targets.rclone import Rclone, RemoteFile
from coord.targets.restic import FLAT_HOST, TAG_ARCHIVE, TAG_COORD, TAG_MANIFEST, Restic, Snapshot

# ---------------------------------------------------------------------------------------------------------------
# Refs


@dataclass(frozen=True)
class Ref:
    """One archive on one target: `<target>:<volume>/<file>` (flat layout), or `<target>:<node>/<volume>/<file>`
    (a Swarm node's archive, under `_nodes/<node>/`)."""

    target: str
    volume: str
    file: str
    node: str | None = None

    def __str__(self) -> str:
        if self.node:
            return f"{self.target}:{self.node}/{self.volume}/{self.file}"
        return f"{self.target}:{self.volume}/{self.file}"

    @property
    def directory_parts(self) -> tuple[str, ...]:
        """The path of the archive's directory under the target's root."""
        return volume_parts(self.volume, self.node)


def _usable_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and not name.startswith(".")


def parse_ref(text: str) -> Ref | None:
    """The Ref written as `text`, or None when `text` is not shaped like one (no `:`, a `/` before it, not
    `<volume>/<file>` or `<node>/<volume>/<file>` after it, or a name that is empty, `.`, `..` or starts with `.`;
    a volume starting with `_`)."""
    target, colon, rest = text.partition(":")
    if not colon or not target or "/" in target:
        return None
    parts = rest.split("/")
    if len(parts) not in (2, 3) or not all(_usable_name(part) for part in parts) or not is_volume_directory(parts[-2]):
        return None
    if len(parts) == 3:
        return Ref(target, parts[1], parts[2], node=parts[0])
    return Ref(target, parts[0], parts[1])


def did_you_mean(name: str, known: list[str]) -> str:
    """` (did you mean 'x'?)` for the known name closest to `name`, or ``."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_target(name: str, known: list[str]) -> UsageError:
    """The error for a target name that is not configured: did-you-mean, and the names that are."""
    configured = f"targets: {', '.join(sorted(known))}" if known else "no target is configured"
    return UsageError(
        f"no target named '{name}'{did_you_mean(name, known)}; {configured} "
        "(`targets:` in <policies dir>/_defaults.yaml, or --dest DIR for the target 'local')"
    )


# ---------------------------------------------------------------------------------------------------------------
# What a target holds


@dataclass(frozen=True)
class ListedArchive:
    """A complete archive on a target, as its manifest describes it (and retention sees it)."""

    ref: Ref
    started_at: datetime
    size: int
    status: str
    verdict: str | None
    encrypted: bool
    written_by_this_run: bool = False
    shown_as: str = ""  # how messages name it when not by its ref: a local archive's path

    def describe(self) -> str:
        return self.shown_as or str(self.ref)

    @property
    def archive(self) -> str:
        """The key retention tells archives apart by."""
        return str(self.ref)

    @property
    def verified(self) -> bool:
        """Validated when it was written (the manifest is only written after the check passed)."""
        return self.status in VERIFIED_STATUSES

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "target": self.ref.target,
            "node": self.ref.node,
            "volume": self.ref.volume,
            "archive": self.ref.file,
            "started_at": self.started_at.isoformat(),
            "size": self.size,
            "status": self.status,
            "verdict": self.verdict,
            "encrypted": self.encrypted,
        }


@dataclass
class VolumeListing:
    """What one volume's directory on a target holds, sorted as retention sorts it."""

    target: str
    volume: str
    archives: list[ListedArchive] = field(default_factory=list)  # complete and counted: newest first
    held: list[tuple[ListedArchive, str]] = field(default_factory=list)  # complete, kept, never counted: (why)
    warnings: list[str] = field(default_factory=list)  # what the operator should look at
    mismatched: list[str] = field(default_factory=list)  # of those: archives that differ from their manifest
    ignored: list[str] = field(default_factory=list)  # ordinary leftovers: temporaries, files without manifest

    def count(self, listed: ListedArchive, now: datetime) -> None:
        """Add a complete archive: counted, or held when dated in the future (with the warning)."""
        if (why := future_reason(listed.started_at, now)) is not None:
            self.held.append((listed, why))
            self.warnings.append(future_warning(listed.ref, why))
        else:
            self.archives.append(listed)

    def latest(self) -> tuple[ListedArchive | None, list[str]]:
        """The newest verified archive that counts (None: none), and the newer ones passed over, with why."""
        skipped = list(self.warnings)
        for item in self.archives:
            if item.verified:
                return item, skipped
            skipped.append(f"{item.describe()}: status {item.status or '?'}, not verified")
        return None, skipped


def is_encrypted(file: str, manifest: dict[str, Any]) -> bool:
    """Whether the archive must be decrypted: its name ends in .gpg, or its manifest records encryption."""
    return file.endswith(GPG_SUFFIX) or bool(manifest.get("encryption"))


def listed_from_manifest(ref: Ref, manifest: dict[str, Any], started_at: datetime, size: int) -> ListedArchive:
    """The ListedArchive for `ref`, described by its (already checked) manifest."""
    verdict = manifest.get("verdict")
    return ListedArchive(
        ref=ref,
        started_at=started_at,
        size=size,
        status=str(manifest.get("status", "")),
        verdict=str(verdict) if verdict is not None else None,
        encrypted=is_encrypted(ref.file, manifest),
    )


class ArchiveStore(Protocol):
    """A target as the read side sees it: volumes, complete archives, a location to read, deletion."""

    @property
    def name(self) -> str: ...

    @property
    def node(self) -> str | None:
        """The namespace read: a Swarm node's (`_nodes/<node>/`; a restic host), None for the flat layout."""
        ...

    def describe(self) -> str:
        """Where the target is, for people: a directory or an rclone `remote:path` (no credentials in it)."""
        ...

    def volumes(self) -> list[str]:
        """The volumes that have a directory on the target (in the namespace read). Raises CoordError when the
        target cannot be read."""
        ...

    def nodes(self) -> list[str]:
        """The Swarm nodes that have a namespace on the target (`_nodes/<node>/`; a restic snapshot's host).
        Raises CoordError when the target cannot be read."""
        ...

    def in_namespace(self, node: str | None) -> ArchiveStore:
        """The same target, reading `node`'s namespace (None: the flat layout)."""
        ...

    def list_volume(self, volume: str, now: datetime) -> VolumeListing:
        """The complete archives of `volume` (see the module docstring). Raises CoordError (transport)."""
        ...

    def location(self, ref: Ref) -> ArchiveLocation:
        """The archive `ref` names, to read. Raises UsageError when the target holds no complete archive by
        that name, CoordError (transport)."""
        ...

    def delete(self, archive: ListedArchive) -> None:
        """Delete an archive and its manifest. Raises OSError or CoordError; see the implementations for the
        order."""
        ...


def _missing(ref: Ref, where: str, what: str) -> UsageError:
    return UsageError(
        f"{ref}: {what} on target {ref.target} ({where}); `coord list --target {ref.target}` shows its complete "
        "archives"
    )


@dataclass
class LocalStore:
    """A directory on this host (`--dest`, or `path:` in _defaults.yaml), read by retention's machinery:
    archives count only when their size and sha256 are their manifest's (hashes remembered under `state_dir`)."""

    name: str
    root: Path
    state_dir: Path | None = None
    node: str | None = None  # the namespace read: `<root>/_nodes/<node>/`; None: the flat layout

    @property
    def base(self) -> Path:
        """The directory holding the volume directories of the namespace read."""
        return self.root / NODES_DIRECTORY / self.node if self.node else self.root

    def describe(self) -> str:
        return str(self.base)

    def volumes(self) -> list[str]:
        return volume_directories(self.base)

    def nodes(self) -> list[str]:
        directory = self.root / NODES_DIRECTORY
        if not directory.is_dir() or directory.is_symlink():
            return []
        return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False))

    def in_namespace(self, node: str | None) -> LocalStore:
        return dataclasses.replace(self, node=node)

    def volume_directory(self, volume: str) -> Path:
        return self.root.joinpath(*volume_parts(volume, self.node))

    def list_volume(self, volume: str, now: datetime) -> VolumeListing:
        hashes = ArchiveHashes(self.state_dir)
        found = find_archives(self.volume_directory(volume), now, hashes)
        hashes.save()
        listing = VolumeListing(
            self.name, volume, warnings=found.warnings, mismatched=found.mismatched, ignored=found.ignored
        )
        listing.archives = [self._listed(volume, item) for item in found.archives]
        listing.held = [(self._listed(volume, item), why) for item, why in found.held]
        return listing

    def _listed(self, volume: str, item: StoredArchive) -> ListedArchive:
        try:
            manifest: object = read_manifest(item.manifest)
            size = item.archive.stat().st_size
        except (OSError, ValueError):  # read a moment ago by find_archives: gone or replaced since
            manifest, size = {}, 0
        document = manifest if isinstance(manifest, dict) else {}
        ref = Ref(self.name, volume, item.archive.name, self.node)
        listed = listed_from_manifest(ref, {**document, "status": item.status}, item.started_at, size)
        return dataclasses.replace(listed, shown_as=str(item.archive))

    def path_of(self, ref: Ref) -> Path:
        return self.root.joinpath(*ref.directory_parts, ref.file)

    def location(self, ref: Ref) -> ArchiveLocation:
        path = self.path_of(ref)
        if not path.is_file() or path.is_symlink():  # retention never counts a link: neither does a ref
            raise _missing(ref, self.describe(), f"no archive {ref.file} in {path.parent}")
        if not manifest_path_for(path).is_file():
            raise _missing(ref, self.describe(), f"{ref.file} has no manifest: it is not a complete archive")
        return LocalArchive(path)

    def delete(self, archive: ListedArchive) -> None:
        """The archive first, then its manifest, as `coord prune` always has locally (retention.prune_volume)."""
        path = self.path_of(archive.ref)
        path.unlink()
        manifest_path_for(path).unlink()


def is_temporary(name: str) -> bool:
    """A name an upload or write in progress uses: `.coord-*` (and every other dot file), `*.partial`."""
    return name.startswith(".") or name.endswith(PARTIAL_SUFFIX)


def is_manifest(name: str) -> bool:
    return name.endswith(MANIFEST_SUFFIX) and not is_temporary(name)


def remote_join(root: str, *names: str) -> str:
    """`root` (an rclone `remote:path`, maybe `remote:`) with `names` below it."""
    joined = "/".join(names)
    return f"{root}{joined}" if root.endswith((":", "/")) else f"{root}/{joined}"


@dataclass(frozen=True)
class RemoteArchive(StoredByRef):
    """An archive on an rclone target, read as a stream (`rclone cat`): never copied to local disk."""

    rclone: Rclone
    path: str  # the full rclone path of the archive
    ref: Ref

    def manifest_bytes(self) -> bytes:
        return self.rclone.read_bytes(self.path + MANIFEST_SUFFIX)

    @contextmanager
    def _opened(self) -> Iterator[ByteStream]:
        with self.rclone.open_read(self.path) as stream:
            yield buffered_pipe(stream)  # `rclone cat`'s stdout, buffered (typed IO[bytes], which lacks readinto)

    def open(self) -> AbstractContextManager[ByteStream]:
        return self._opened()


@dataclass
class RcloneStore:
    """An rclone `remote:path` target. An archive counts when its manifest (same name + .manifest.json) is
    there, names it, is for its volume, has a usable start time and records the size the remote lists; its
    sha256 is checked by `coord verify`, which reads it whole."""

    name: str
    root: str
    rclone: Rclone
    node: str | None = None  # the namespace read: `<root>/_nodes/<node>/`; None: the flat layout

    @property
    def base(self) -> str:
        """The rclone path holding the volume directories of the namespace read."""
        return remote_join(self.root, NODES_DIRECTORY, self.node) if self.node else self.root

    def describe(self) -> str:
        return self.base

    def volumes(self) -> list[str]:
        return [name for name in self.rclone.list_dirs(self.base) if is_volume_directory(name)]

    def nodes(self) -> list[str]:
        return [name for name in self.rclone.list_dirs(remote_join(self.root, NODES_DIRECTORY)) if _usable_name(name)]

    def in_namespace(self, node: str | None) -> RcloneStore:
        return dataclasses.replace(self, node=node)

    def list_volume(self, volume: str, now: datetime) -> VolumeListing:
        directory = remote_join(self.root, *volume_parts(volume, self.node))
        files = {item.name: item for item in self.rclone.list_files(directory)}
        listing = VolumeListing(self.name, volume)
        for name, item in files.items():
            where = remote_join(directory, name)
            if is_temporary(name):
                listing.ignored.append(f"{where}: an upload in progress or left by a failed one; not listed")
            elif is_manifest(name):
                if name.removesuffix(MANIFEST_SUFFIX) not in files:
                    listing.ignored.append(f"{where}: its archive is missing; left alone")
            elif name + MANIFEST_SUFFIX not in files:
                listing.ignored.append(f"{where}: no manifest (an upload in progress or one that failed); not listed")
            else:
                self._judge(Ref(self.name, volume, name, self.node), item, listing, now)
        listing.archives.sort(key=lambda found: (found.started_at, found.ref.file), reverse=True)
        return listing

    def _judge(self, ref: Ref, item: RemoteFile, listing: VolumeListing, now: datetime) -> None:
        """Add the archive to `listing`: counted, held (dated in the future), or a warning saying why not."""
        location = RemoteArchive(self.rclone, remote_join(self.root, *ref.directory_parts, ref.file), ref)
        try:
            manifest = location.read_manifest()
        except (CoordError, ValueError) as error:
            why = error.message if isinstance(error, CoordError) else f"unreadable manifest ({error})"
            listing.warnings.append(f"{ref}: {why}; not counted, left alone")
            return
        checked = manifest_problem(ref, manifest, item.size)
        if checked.started_at is None:
            line = f"{ref}: {checked.problem}; not counted, left alone"
            listing.warnings.append(line)
            if checked.differs:
                listing.mismatched.append(line)
            return
        listing.count(listed_from_manifest(ref, manifest, checked.started_at, item.size), now)

    def location(self, ref: Ref) -> ArchiveLocation:
        directory = remote_join(self.root, *ref.directory_parts)
        names = {item.name for item in self.rclone.list_files(directory)}
        if ref.file not in names or is_temporary(ref.file):
            raise _missing(ref, self.describe(), f"no archive {ref.file} in {directory}")
        if ref.file + MANIFEST_SUFFIX not in names:
            raise _missing(
                ref,
                self.describe(),
                f"{ref.file} has no manifest: not a complete archive (an upload in progress or one that failed)",
            )
        return RemoteArchive(self.rclone, remote_join(directory, ref.file), ref)

    def delete(self, archive: ListedArchive) -> None:
        """The manifest first, then the archive: without its manifest the archive is no longer listed, so an
        interruption between the two leaves an archive nothing counts (reported by the next listing), never a
        manifest that names nothing."""
        path = remote_join(self.root, *archive.ref.directory_parts, archive.ref.file)
        self.rclone.delete(path + MANIFEST_SUFFIX)
        self.rclone.delete(path)


@dataclass(frozen=True)
class ResticArchive(StoredByRef):
    """An archive in a restic repository (targets/restic.py): its snapshot's one file, read as a stream (`restic
    dump`), never copied to local disk; its manifest is the file of a second, small snapshot."""

    restic: Restic
    snapshot_id: str
    manifest_snapshot_id: str
    ref: Ref

    def manifest_bytes(self) -> bytes:
        return self.restic.read_file(self.manifest_snapshot_id, self.name + MANIFEST_SUFFIX)

    @contextmanager
    def _opened(self) -> Iterator[ByteStream]:
        with self.restic.open_dump(self.snapshot_id, self.name) as stream:
            yield stream

    def open(self) -> AbstractContextManager[ByteStream]:
        return self._opened()


@dataclass(frozen=True)
class ResticPair:
    """An archive snapshot and the manifest snapshot that completes it (None: not complete)."""

    archive: Snapshot
    manifest: Snapshot | None


def completes(manifest: Snapshot, of: str, archive: Snapshot) -> bool:
    """Whether `manifest` (whose `coord-of` tag is `of`) is the manifest snapshot of `archive`."""
    return len(of) >= 8 and archive.id.startswith(of) and manifest.file == archive.file + MANIFEST_SUFFIX


def restic_host(node: str | None) -> str:
    """The host restic records for a namespace's snapshots: the Swarm node's name, or `coord` (flat)."""
    return node or FLAT_HOST


def restic_pairs(snapshots: list[Snapshot], volume: str | None = None) -> list[ResticPair]:
    """coord's archive snapshots (of `volume` when given), each with its manifest snapshot when there is one.
    `snapshots`: those of one namespace (one host: of_host)."""
    # `coord-of` holds the id restic's backup summary gave (its short form, 8 hex digits): a prefix of the id.
    manifests = {item.values["of"]: item for item in snapshots if TAG_MANIFEST in item.tags and item.values.get("of")}
    return [
        ResticPair(item, next((found for of, found in manifests.items() if completes(found, of, item)), None))
        for item in snapshots
        if TAG_ARCHIVE in item.tags and (volume is None or item.values.get("volume") == volume)
    ]


@dataclass
class ResticStore:
    """A restic repository target. An archive counts when its manifest snapshot is there and names it (tag
    `coord-of=<id>`), with a usable start time and size; `coord verify` reads the archive whole (and can run
    `restic check`). Retention forgets the manifest snapshot first, then the archive's; `compact()` prunes."""

    name: str
    restic: Restic
    node: str | None = None  # the namespace read: snapshots whose host is the node; None: host `coord` (flat)

    def describe(self) -> str:
        host = f" (host {self.node})" if self.node else ""
        return f"restic {self.restic.repository}{host}"

    def snapshots(self, node: str | None) -> list[Snapshot]:
        """coord's snapshots of one namespace: those restic recorded with the node's host (`coord`: flat)."""
        host = restic_host(node)
        return [item for item in self.restic.snapshots(TAG_COORD) if item.host == host]

    def nodes(self) -> list[str]:
        hosts = {item.host for item in self.restic.snapshots(TAG_COORD) if TAG_ARCHIVE in item.tags}
        return sorted(host for host in hosts if host and host != FLAT_HOST)

    def in_namespace(self, node: str | None) -> ResticStore:
        return dataclasses.replace(self, node=node)

    def volumes(self) -> list[str]:
        snapshots = self.snapshots(self.node)
        return sorted(
            {item.values["volume"] for item in snapshots if TAG_ARCHIVE in item.tags and "volume" in item.values}
        )

    def list_volume(self, volume: str, now: datetime) -> VolumeListing:
        listing = VolumeListing(self.name, volume)
        for pair in restic_pairs(self.snapshots(self.node), volume):
            ref = Ref(self.name, volume, pair.archive.file, self.node)
            if pair.manifest is None:
                listing.ignored.append(
                    f"{ref} (snapshot {pair.archive.id[:8]}): no manifest snapshot (a backup in progress or one "
                    "that failed); not listed"
                )
                continue
            values = pair.manifest.values
            started_at = parse_time(values.get("started"))
            size = values.get("size", "")
            if started_at is None or not size.isdigit():
                listing.warnings.append(f"{ref}: its manifest snapshot has no usable start or size; not counted")
                continue
            verdict = values.get("verdict")
            listed = ListedArchive(
                ref, started_at, int(size), values.get("status", ""), verdict if verdict != "none" else None, False
            )
            listing.count(listed, now)
        listing.archives.sort(key=lambda found: (found.started_at, found.ref.file), reverse=True)
        return listing

    def _pair(self, ref: Ref) -> ResticPair:
        for pair in restic_pairs(self.snapshots(ref.node), ref.volume):
            if pair.archive.file == ref.file and pair.manifest is not None:
                return pair
        raise _missing(ref, self.describe(), f"no complete archive {ref.file} of volume {ref.volume}")

    def location(self, ref: Ref) -> ArchiveLocation:
        pair = self._pair(ref)
        assert pair.manifest is not None
        return ResticArchive(self.restic, pair.archive.id, pair.manifest.id, ref)

    def delete(self, archive: ListedArchive) -> None:
        """Forget the manifest snapshot first (the archive leaves the listing), then the archive's; the data goes
        at the next `compact()` (restic prune)."""
        pair = self._pair(archive.ref)
        assert pair.manifest is not None
        self.restic.forget(pair.manifest.id)
        self.restic.forget(pair.archive.id)

    def compact(self) -> None:
        """`restic prune`: remove the data of forgotten snapshots. Raises ResticError."""
        self.restic.prune()


class ManifestCheck(NamedTuple):
    """What a remote archive's manifest proves: its start time when it proves the archive complete, else why not."""

    problem: str | None
    started_at: datetime | None  # None: not proven (then `problem` says why)
    differs: bool = False  # the archive is not the size its manifest records: corrupt, cut short or replaced


def manifest_problem(ref: Ref, manifest: dict[str, Any], size: int) -> ManifestCheck:
    """Whether a remote archive's manifest (given the size the remote lists) proves the archive complete."""
    started_at = parse_time(manifest.get("started_at"))
    recorded = manifest.get("size")
    if manifest.get("archive") != ref.file:
        return ManifestCheck(f"its manifest names archive {manifest.get('archive')!r}", None)
    if manifest.get("volume") != ref.volume:
        return ManifestCheck(f"its manifest is for volume {manifest.get('volume')!r}, not {ref.volume!r}", None)
    if started_at is None:
        return ManifestCheck("its manifest has no usable 'started_at'", None)
    if not isinstance(recorded, int) or isinstance(recorded, bool):
        return ManifestCheck("its manifest records no usable 'size'", None)
    if recorded != size:
        return ManifestCheck(f"is {size} bytes on the target, its manifest says {recorded}", None, differs=True)
    return ManifestCheck(None, started_at)


# ---------------------------------------------------------------------------------------------------------------
# Which targets a command reads


@dataclass(frozen=True)
class StoreOptions:
    """What a read command was given to find its targets: the policies directory (its _defaults.yaml), --dest,
    --target (empty: all), the state directory (remembered hashes of local archives), --rclone-config."""

    policies_dir: Path
    dest: Path | None = None
    names: tuple[str, ...] = ()
    state_dir: Path | None = None
    rclone_config: Path | None = None
    node: str | None = None  # the namespace read (a Swarm node's, or --node NAME); None: the flat layout


def store_of(target: Target, state_dir: Path | None = None) -> ArchiveStore:
    """The read side of one of the run's targets (targets.Target): a LocalStore, a ResticStore or an RcloneStore,
    reading the namespace of `target.node` (None: the flat layout)."""
    if target.local_path is not None:
        return LocalStore(target.name, target.local_path, state_dir, target.node)
    if target.restic is not None:
        return ResticStore(target.name, target.repository(), target.node)
    assert target.rclone_path is not None
    return RcloneStore(target.name, target.rclone_path, target.rclone(), target.node)


def configured_stores(options: StoreOptions) -> dict[str, ArchiveStore]:
    """Every target the command may read, by name: `local` for --dest, and those of _defaults.yaml (resolved as
    a backup resolves them: targets.resolve_targets). Empty when there is none. Raises UsageError (--dest and a
    different `local` target), PolicyError (invalid _defaults.yaml)."""
    from coord.defaults import load_defaults

    defined = load_defaults(options.policies_dir).targets
    if not defined and options.dest is None:
        return {}
    targets = resolve_targets(defined, options.dest, (), options.rclone_config)
    return {target.name: store_of(target.for_node(options.node), options.state_dir) for target in targets}


def selected_stores(options: StoreOptions) -> list[ArchiveStore]:
    """The targets named by --target (all when none is named), in name order. Raises UsageError for a name that
    is not configured (did-you-mean) or when there is no target at all."""
    from coord.defaults import load_defaults

    defined = load_defaults(options.policies_dir).targets
    if not defined and options.dest is None:
        raise UsageError(
            "no target: pass --dest DIR (or set COORD_DEST), or define `targets:` in <policies dir>/_defaults.yaml"
        )
    targets = resolve_targets(defined, options.dest, options.names, options.rclone_config)
    ordered = sorted(targets, key=lambda target: target.name)
    return [store_of(target.for_node(options.node), options.state_dir) for target in ordered]


def store_for_latest(options: StoreOptions) -> ArchiveStore:
    """The one target `--latest VOLUME` reads: the one --target names, else `local` when --dest is given, else the
    only configured target. Raises UsageError when that leaves several or none."""
    if len(options.names) > 1:
        raise UsageError("--latest reads one target: give --target once")
    if not options.names and options.dest is not None:
        return LocalStore(LOCAL_TARGET, options.dest, options.state_dir, options.node)
    stores = selected_stores(options)
    if len(stores) > 1:
        names = ", ".join(store.name for store in stores)
        raise UsageError(f"--latest reads one target and several are configured ({names}): pass --target NAME")
    return stores[0]


@dataclass
class LatestChoice:
    """What `--latest VOLUME` found on its one target: the archive to read (None: no verified one), what was
    passed over and why, and the archives that no longer match their manifest."""

    volume: str
    target_root: str  # the target's directory or remote:path, for messages
    archive: ArchiveLocation | None
    skipped: list[str]
    mismatched: list[str]

    @property
    def where(self) -> str:
        """The volume's directory on the target."""
        return f"{self.target_root}/{self.volume}"

    def problem(self) -> str:
        """Why there is nothing to read (when `archive` is None)."""
        passed = f"; passed over: {'; '.join(self.skipped)}" if self.skipped else ""
        return f"no verified archive of volume {self.volume} in {self.target_root}{passed}"


def choose_latest(options: StoreOptions, volume: str, now: datetime) -> LatestChoice:
    """The newest verified archive of `volume` on the one target `--latest` reads (store_for_latest). Raises
    UsageError, CoordError (the target cannot be read)."""
    store = store_for_latest(options)
    listing = store.list_volume(volume, now)
    chosen, skipped = listing.latest()
    location = store.location(chosen.ref) if chosen is not None else None
    return LatestChoice(volume, store.describe(), location, skipped, listing.mismatched)


def resolve_archive(text: str, options: StoreOptions) -> Path | ArchiveLocation:
    """What an ARCHIVE argument names: an existing local path is that file; `<target>:<volume>/<file>` whose
    target is configured is that archive on that target; anything else is a local path (which the caller finds
    missing). Targets are read only for a ref. Raises UsageError (a ref to an unknown target or to no complete
    archive), PolicyError, CoordError (the target cannot be read)."""
    path = Path(text)
    ref = parse_ref(text)
    if path.exists() or ref is None:
        return path
    stores = configured_stores(options)
    if ref.target not in stores:
        raise UsageError(
            f"{text}: no such file, and not a ref to a configured target: {unknown_target(ref.target, list(stores))}"
        )
    return stores[ref.target].location(ref)


def init_restic_target(policies_dir: Path, name: str, rclone_config: Path | None = None) -> None:
    """`coord init-target NAME`: `restic init` of the restic target NAME of _defaults.yaml. Raises UsageError (no
    such target, not a restic one), PolicyError, CoordError (restic refused)."""
    from coord.defaults import load_defaults

    defined = load_defaults(policies_dir).targets
    if name not in defined:
        raise unknown_target(name, list(defined))
    target = Target.of(name, defined[name], rclone_config)
    if target.restic is None:
        raise UsageError(
            f"target {name} is not a restic target ({target.describe()}): only a restic repository is initialised"
        )
    target.repository().init()


def check_repository(archive: Path | ArchiveLocation, read_data_subset: str | None) -> list[str]:
    """`coord verify --read-data-subset`: `restic check` of the repository holding `archive` (a restic target's);
    the problems found (none for an archive elsewhere, or without the option)."""
    if read_data_subset is None or not isinstance(archive, ResticArchive):
        return []
    try:
        archive.restic.check(read_data_subset)
    except CoordError as error:
        return [error.message]
    return []


# ---------------------------------------------------------------------------------------------------------------
# `coord list`


@dataclass
class TargetListing:
    """The complete archives of one target, per volume, or why the target could not be listed."""

    target: str
    where: str
    volumes: list[VolumeListing] = field(default_factory=list)
    error: str | None = None
    node: str | None = None  # the Swarm node whose namespace was listed; None: the flat layout

    @property
    def archives(self) -> list[ListedArchive]:
        return [item for listing in self.volumes for item in listing.archives]

    @property
    def warnings(self) -> list[str]:
        return [line for listing in self.volumes for line in listing.warnings]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "node": self.node,
            "where": self.where,
            "error": self.error,
            "archives": [item.to_json() for item in self.archives],
            "held": [{**item.to_json(), "why": why} for listing in self.volumes for item, why in listing.held],
            "warnings": self.warnings,
        }


def list_targets(stores: list[ArchiveStore], volumes: tuple[str, ...], now: datetime) -> list[TargetListing]:
    """The complete archives on each of `stores` (of `volumes` only, when any is given), newest first per volume.
    Never raises for a target that cannot be read: its listing carries the error, and the others are listed."""
    listings = []
    for store in stores:
        listing = TargetListing(store.name, store.describe(), node=store.node)
        try:
            for volume in store.volumes():
                if not volumes or volume in volumes:
                    listing.volumes.append(store.list_volume(volume, now))
        except CoordError as error:
            listing.error = error.message
        listings.append(listing)
    return listings
