"""Hashing what is read: the one sha256-while-reading wrapper, and a file's sha256 read in chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from coord.stream_types import ByteStream

CHUNK_SIZE = 1 << 20


class HashingReader:
    """A binary stream read through this wrapper is hashed (sha256) and counted as it goes.

    Given the stream and, optionally, `on_data(total_bytes_so_far)`, called after every read that returned data
    (from the reading thread: it may be another one, as python-gnupg's copier when encrypting), and `extra`:
    more hashlib names (md5, sha1) computed in the same pass, for a backend that checks uploads by those
    (`extra_hexdigests()`).
    """

    def __init__(
        self, source: ByteStream, on_data: Callable[[int], None] | None = None, extra: Sequence[str] = ()
    ) -> None:
        self.source = source
        self.on_data = on_data
        self.digest = hashlib.sha256()
        self.extra = {name: hashlib.new(name) for name in extra}
        self.size = 0

    def _count(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self.digest.update(data)
        for digest in self.extra.values():
            digest.update(data)
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

    def extra_hexdigests(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self.extra.items()}


def hash_stream(source: ByteStream) -> tuple[str, int]:
    """sha256 (hex) and size of what is left to read in `source`, read to its end in chunks."""
    reader = HashingReader(source)
    reader.drain()
    return reader.hexdigest(), reader.size


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of the file at `path`. Raises OSError when it cannot be opened or read."""
    with open(path, "rb") as handle:
        return hash_stream(handle)


def hash_file_with(path: Path, extra: Sequence[str]) -> tuple[str, int, dict[str, str]]:
    """sha256 (hex), size and the `extra` hashlib hashes (name -> hex) of the file at `path`, in one pass.
    Raises OSError when it cannot be opened or read."""
    with open(path, "rb") as handle:
        reader = HashingReader(handle, extra=extra)
        reader.drain()
    return reader.hexdigest(), reader.size, reader.extra_hexdigests()
