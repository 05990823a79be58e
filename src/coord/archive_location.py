"""Where an archive's bytes are read from, for `coord verify` and `coord restore`: a local file, or a file on a
target that only streams (targets/archives.py). Both commands read every archive through this one interface, so a
remote archive is checked and extracted by the same code as a local one, from a stream, with no local copy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coord.manifest import MANIFEST_SUFFIX, manifest_path_for, read_manifest
from coord.stream_types import ByteStream


class ArchiveLocation(Protocol):
    """An archive and its manifest, wherever they are stored."""

    @property
    def name(self) -> str:
        """The archive file's name: its compression and encryption are read from it when the manifest is silent."""
        ...

    def describe(self) -> str:
        """How messages name the archive: its path, or its ref (`offsite:volume/file`)."""
        ...

    def manifest_name(self) -> str:
        """How messages name the archive's manifest."""
        ...

    def read_manifest(self) -> dict[str, Any]:
        """The manifest document. Raises FileNotFoundError when there is none, OSError/ValueError when it cannot
        be read or parsed, CoordError when the transport fails."""
        ...

    def open(self) -> AbstractContextManager[ByteStream]:
        """The archive's bytes from the start, read once to the end (or abandoned). Raises OSError, or CoordError
        (possibly on leaving the block: a transport that ended badly must never pass for a complete read)."""
        ...


@dataclass(frozen=True)
class LocalArchive:
    """An archive file on this host; its manifest is `<archive>.manifest.json` beside it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        return str(self.path)

    def manifest_name(self) -> str:
        return str(manifest_path_for(self.path))

    def read_manifest(self) -> dict[str, Any]:
        return read_manifest(manifest_path_for(self.path))

    @contextmanager
    def _opened(self) -> Iterator[ByteStream]:
        with open(self.path, "rb") as handle:
            yield handle

    def open(self) -> AbstractContextManager[ByteStream]:
        return self._opened()


class NamedByRef(Protocol):
    """A ref (targets.archives.Ref): str() gives `<target>:<volume>/<file>`."""

    @property
    def file(self) -> str:
        """The archive file's name."""
        ...


class StoredByRef:
    """An archive on a target, named by its ref (`offsite:volume/file`): how a ArchiveLocation on a remote or in
    a repository names itself and reads its manifest's bytes (`manifest_bytes`, what each store implements)."""

    ref: NamedByRef

    @property
    def name(self) -> str:
        return str(self.ref.file)

    def describe(self) -> str:
        return str(self.ref)

    def manifest_name(self) -> str:
        return f"{self.ref}{MANIFEST_SUFFIX}"

    def manifest_bytes(self) -> bytes:
        raise NotImplementedError

    def read_manifest(self) -> dict[str, Any]:
        document: object = json.loads(self.manifest_bytes())
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document


AnyArchive = Path | ArchiveLocation  # what readers accept: a local file's path, or any location


def location_of(archive: AnyArchive) -> ArchiveLocation:
    """`archive` as an ArchiveLocation: a path becomes the LocalArchive at that path."""
    return LocalArchive(archive) if isinstance(archive, Path) else archive
