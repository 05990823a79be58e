"""Hashing what is read: the one sha256-while-reading wrapper, and a file's sha256 read in chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from coord.stream_types import ByteStream

CHUNK_SIZE = 1 << 20


class HashingReader:
    """A binary stream read through this wrapper is hashed (sha256) and counted as it goes.

    Given the stream and, optionally, `on_data(total_bytes_so_far)`, called after every read that returned data
    (from the reading thread: it may be another one, as python-gnupg's copier when encrypting).
    """

    def __init__(self, source: ByteStream, on_data: Callable[[int], None] | None = None) -> None:
        self.source = source
        self.on_data = on_data
        self.digest = hashlib.sha256()
        self.size = 0

    def _count(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.digest.update(data)
        self.size += len(data)
        if self.on_data is not None:
            self.on_data(self.size)

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self._count(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self.source.readinto(buffer)
        self._count(memoryview(buffer)[:count])
        return count

    def drain(self) -> None:
        """Read and hash the rest of the stream (after a reader stopped early), so its sha256 covers all of it."""
        while self.read(CHUNK_SIZE):
            pass

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def hash_stream(source: ByteStream) -> tuple[str, int]:
    """sha256 (hex) and size of what is left to read in `source`, read to its end in chunks."""
    reader = HashingReader(source)
    reader.drain()
    return reader.hexdigest(), reader.size


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of the file at `path`. Raises OSError when it cannot be opened or read."""
    with open(path, "rb") as handle:
        return hash_stream(handle)
