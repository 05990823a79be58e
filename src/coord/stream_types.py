"""What coord's readers need of a binary stream, as protocols, so that a child's pipe, an open file and coord's own
wrappers (which hash, count or copy what passes through them) are all accepted and checked alike.

typeshed types a `Popen` pipe as `IO[bytes]`, which has no `readinto` or `read1`; the pipe itself is an
`io.BufferedReader` (Popen's default bufsize, -1, makes one): `buffered_pipe` says so once, checked.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol, TypeVar


class ByteReader(Protocol):
    """A binary stream read with `read(size)`: at most `size` bytes (all of it for -1), b"" at its end."""

    def read(self, size: int = -1, /) -> bytes: ...


class ByteStream(ByteReader, Protocol):
    """A ByteReader that can also fill a caller's buffer: `readinto` returns how many bytes it put there, 0 at the
    end (what a StreamWriter reads from, chunk after chunk, without a new bytes object per chunk)."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int: ...


def buffered_pipe(pipe: IO[bytes] | None) -> io.BufferedReader:
    """The `stdout` or `stderr` of a Popen started with that stream as PIPE and the default bufsize.

    Given the pipe as typeshed types it; returns it as what it is. Raises TypeError for anything else (a Popen
    started without the pipe, or unbuffered): a programming error, not an operator's.
    """
    if not isinstance(pipe, io.BufferedReader):
        raise TypeError(f"expected a buffered pipe from Popen, got {type(pipe).__name__}")
    return pipe


DRAIN_CHUNK_SIZE = 1 << 20
Reader = TypeVar("Reader", bound=ByteReader)


@contextmanager
def child_output(process: subprocess.Popen[bytes], stream: Reader) -> Iterator[Reader]:
    """`stream` (what the caller reads of `process`'s stdout) for the block, then the rest of it read, so the
    child runs to its end and its exit status counts; with an exception in the block the child is killed and the
    exception goes through. The pipe is closed either way; the caller then checks `process.wait()`."""
    try:
        yield stream
        while stream.read(DRAIN_CHUNK_SIZE):
            pass
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()
