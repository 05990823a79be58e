"""hashing.py: what passes through HashingReader is hashed and counted exactly once, however it is read."""

import hashlib
import io
from pathlib import Path

from coord.hashing import HashingReader, hash_file, hash_stream

DATA = bytes(range(256)) * 9000  # a little over two chunks


def test_read_readinto_and_drain_hash_every_byte_once() -> None:
    seen: list[int] = []
    reader = HashingReader(io.BytesIO(DATA), seen.append)
    first = reader.read(1000)
    buffer = bytearray(5000)
    count = reader.readinto(buffer)
    reader.drain()
    assert first == DATA[:1000] and bytes(buffer[:count]) == DATA[1000 : 1000 + count]
    assert (reader.hexdigest(), reader.size) == (hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert seen[0] == 1000 and seen[-1] == len(DATA) and seen == sorted(seen)


def test_hash_stream_and_hash_file_agree_with_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    expected = (hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert hash_file(path) == expected
    assert hash_stream(io.BytesIO(DATA)) == expected
    assert hash_stream(io.BytesIO(b"")) == (hashlib.sha256(b"").hexdigest(), 0)
