"""The manifest written beside each archive (<archive>.manifest.json): what was written and how it went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Re-exported for publish.py, which took it from here before it moved to fsutil.py (to import from fsutil).

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1


def manifest_path_for(archive: Path) -> Path:
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def read_manifest(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    return document
