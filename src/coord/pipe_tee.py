"""Duplicating a pipe's bytes into another pipe with tee(2): the kernel shares the pages, no byte is copied.

The in-line check (verify.py) feeds the compressed stream to `pzstd -d | tar --list` while coord hashes it and
writes it to the archive. Writing it to the decoder's pipe from Python cost as much CPU as hashing it
(docs/benchmarks.md, issue 16: 800 MB through the pump, 2.3-2.5 s of coord's CPU with the write, 1.2 s without).
With tee(2) the decoder gets the bytes from the kernel and coord reads each one once, for the hash and the file.

Python's os module has splice(2) but not tee(2), so libc's is called through ctypes; where there is no libc tee
(not Linux) `PipeTee.available()` is False and the caller copies as before.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import stat
from collections.abc import Callable
from contextlib import suppress

F_SETPIPE_SZ = 1031  # Linux: a pipe's capacity, fewer wake-ups per MiB than the default 64 KiB
PIPE_SIZE = 1 << 20


@functools.cache
def _libc_tee() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tee = libc.tee
    except (OSError, AttributeError):
        return None
    tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    tee.restype = ctypes.c_ssize_t
    return tee


def _is_pipe(descriptor: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(descriptor).st_mode)
    except OSError:
        return False


class PipeTee:
    """A readable stream over the pipe `source`: every byte read from it is first duplicated into the pipe
    `copy` by tee(2).

    `on_copied(count)` is told of each duplicated run of bytes; `on_copy_closed()` once `copy`'s reader went away
    (EPIPE), after which the stream is read without duplicating. Neither descriptor is closed here.
    """

    def __init__(
        self, source: int, copy: int, on_copied: Callable[[int], None], on_copy_closed: Callable[[], None]
    ) -> None:
        self.source = source
        self.copy = copy
        self.on_copied = on_copied
        self.on_copy_closed = on_copy_closed
        self._copying = True
        for descriptor in (source, copy):
            with suppress(OSError):  # a larger pipe only saves system calls; refused above pipe-max-size
                fcntl.fcntl(descriptor, F_SETPIPE_SZ, PIPE_SIZE)

    @staticmethod
    def available(source: int, copy: int) -> bool:
        """Whether tee(2) can join these two descriptors: libc has it, and both are pipes."""
        return _libc_tee() is not None and _is_pipe(source) and _is_pipe(copy)

    def _duplicate(self, size: int) -> int:
        """tee up to `size` bytes into `copy` (waits for data); 0 at the end of the stream, -1 once `copy` closed."""
        tee = _libc_tee()
        assert tee is not None
        while True:
            count = tee(self.source, self.copy, size, 0)
            if count >= 0:
                return count
            error = ctypes.get_errno()
            if error == errno.EINTR:
                continue  # a signal handler that raises has run by now; one that does not: try again
            if error == errno.EPIPE:
                return -1
            raise OSError(error, os.strerror(error))

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        if not self._copying:
            return os.readv(self.source, [view])
        count = self._duplicate(len(view))
        if count < 0:
            self._copying = False
            self.on_copy_closed()
            return os.readv(self.source, [view])
        done = 0
        while done < count:  # exactly the bytes duplicated: tee left them in the pipe, this consumes them
            got = os.readv(self.source, [view[done:count]])
            if got == 0:  # cannot happen: tee saw them there, and only this reads the pipe
                raise OSError(errno.EIO, "the pipe ended before the bytes tee(2) duplicated")
            done += got
        self.on_copied(count)
        return count

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            chunks = []
            while chunk := self.read(PIPE_SIZE):
                chunks.append(chunk)
            return b"".join(chunks)
        buffer = bytearray(size)
        count = self.readinto(buffer)
        return bytes(buffer[:count])
