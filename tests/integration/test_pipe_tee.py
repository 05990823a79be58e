"""tee(2) between real pipes (pipe_tee.py): the reader and the copy get the same bytes, and a copy whose reader
went away is reported, the rest still read. And the in-line check uses it on the compressor's pipe."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

from coord.hashing import HashingReader
from coord.pipe_tee import PipeTee
from coord.policy import Compression
from coord.stream_types import buffered_pipe
from coord.verify import StreamLister

DATA = os.urandom(3 << 20) + b"tail"


def write_all(descriptor: int, data: bytes) -> None:
    with os.fdopen(descriptor, "wb") as pipe:
        pipe.write(data)


def read_all(descriptor: int, into: list[bytes]) -> None:
    with os.fdopen(descriptor, "rb") as pipe:
        into.append(pipe.read())


def test_the_reader_and_the_copy_get_every_byte() -> None:
    source_read, source_write = os.pipe()
    copy_read, copy_write = os.pipe()
    assert PipeTee.available(source_read, copy_write)
    copied: list[int] = []
    received: list[bytes] = []
    threads = [
        threading.Thread(target=write_all, args=(source_write, DATA)),
        threading.Thread(target=read_all, args=(copy_read, received)),
    ]
    for thread in threads:
        thread.start()
    tee = PipeTee(source_read, copy_write, copied.append, lambda: copied.append(-1))
    read = bytearray()
    buffer = bytearray(100_000)  # not a multiple of anything the pipes hold
    while count := tee.readinto(buffer):
        read += buffer[:count]
    os.close(copy_write)
    os.close(source_read)
    for thread in threads:
        thread.join()
    assert bytes(read) == DATA
    assert received == [DATA]
    assert sum(copied) == len(DATA) and -1 not in copied


def test_a_copy_whose_reader_is_gone_is_reported_and_the_stream_still_read_whole() -> None:
    source_read, source_write = os.pipe()
    copy_read, copy_write = os.pipe()
    os.close(copy_read)  # the decoder died before reading anything
    gone: list[bool] = []
    writer = threading.Thread(target=write_all, args=(source_write, DATA))
    writer.start()
    tee = PipeTee(source_read, copy_write, lambda count: None, lambda: gone.append(True))
    assert tee.read() == DATA
    writer.join()
    os.close(copy_write)
    os.close(source_read)
    assert gone == [True]


def test_the_in_line_check_tees_the_compressors_pipe(tmp_path: Path) -> None:
    """StreamLister.feeding puts the kernel's tee under the HashingReader create_archive hands it (a Popen pipe),
    and the listing still sees the whole stream."""
    (tmp_path / "file").write_bytes(DATA)
    producer = subprocess.Popen(["sh", "-c", f"tar -C '{tmp_path}' -cf - file | zstd -q -c"], stdout=subprocess.PIPE)
    stream = HashingReader(buffered_pipe(producer.stdout))
    lister = StreamLister(Compression.ZSTD, hash_stream=False)
    fed = lister.feeding(stream)
    assert fed is stream and isinstance(stream.source, PipeTee)
    stored = hashlib.sha256()
    while chunk := fed.read(1 << 16):
        stored.update(chunk)
    assert producer.wait() == 0
    listed = lister.finish()
    assert listed.errors == []
    assert listed.entries == 1
    assert listed.stream_size == stream.size
    assert stored.hexdigest() == stream.hexdigest()
