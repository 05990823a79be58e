"""The manifest written beside each archive (<archive>.manifest.json): what was written and how it went."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1


def manifest_path_for(archive: Path) -> Path:
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write `document` to `path` so that readers see the old file or the whole new one, never a torn one."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not leave a torn temporary file behind
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_manifest(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document
