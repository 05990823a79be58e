"""Reading an archive back: the check that replaces "the file is over 1000 bytes".

The whole file is read, hashed, decompressed and listed by GNU tar. A truncated or corrupted archive fails
decompression (zstd frames carry checksums, gzip a CRC) or tar's listing; a complete one gives the same sha256,
the same number of members and the same ordered member list (compared by digest) as the write side recorded.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from coord.archive import CHUNK_SIZE, TAR_ENVIRONMENT, decompressor_command
from coord.policy import Compression


@dataclass
class ReadBack:
    sha256: str = ""
    size: int = 0
    entries: int = 0
    entries_digest: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Expected:
    sha256: str
    entries: int
    entries_digest: str | None = None


def read_back(path: Path, compression: Compression) -> ReadBack:
    """Hash, decompress and list the archive at `path`. Never raises for a bad archive: errors are in the result."""
    result = ReadBack()
    decompressor = subprocess.Popen(
        decompressor_command(compression),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=TAR_ENVIRONMENT,
    )
    lister = subprocess.Popen(
        ["tar", "--list", "--file=-"],
        stdin=decompressor.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=TAR_ENVIRONMENT,
    )
    assert decompressor.stdin and decompressor.stdout and decompressor.stderr and lister.stdout and lister.stderr
    decompressor.stdout.close()
    feed_errors: list[str] = []

    def feed() -> None:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as source, decompressor.stdin:
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    result.size += len(chunk)
                    try:
                        decompressor.stdin.write(chunk)
                    except BrokenPipeError:
                        feed_errors.append("the decompressor stopped reading (corrupt data)")
                        # keep hashing: the sha256 comparison must still be reported
                        while chunk := source.read(CHUNK_SIZE):
                            digest.update(chunk)
                            result.size += len(chunk)
                        break
        except OSError as error:
            feed_errors.append(f"cannot read {path}: {error.strerror}")
        result.sha256 = digest.hexdigest()

    stderr_text: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:  # type: ignore[no-untyped-def]
        stderr_text[name] = stream.read()

    threads = [
        threading.Thread(target=feed, daemon=True),
        threading.Thread(target=drain, args=("decompressor", decompressor.stderr), daemon=True),
        threading.Thread(target=drain, args=("tar", lister.stderr), daemon=True),
    ]
    for thread in threads:
        thread.start()
    listing_digest = hashlib.sha256()
    with lister.stdout:
        for line in lister.stdout:
            listing_digest.update(line)
            result.entries += 1
    lister_status = lister.wait()
    decompressor_status = decompressor.wait()
    for thread in threads:
        thread.join()
    result.entries_digest = listing_digest.hexdigest()
    result.errors.extend(feed_errors)
    if decompressor_status != 0:
        said = stderr_text.get("decompressor", b"").decode(errors="replace").strip()
        result.errors.append(f"decompression failed (exit {decompressor_status}): {said or 'no message'}")
    if lister_status != 0:
        said = stderr_text.get("tar", b"").decode(errors="replace").strip()
        result.errors.append(f"tar could not list the archive (exit {lister_status}): {said or 'no message'}")
    return result


def compare(read: ReadBack, expected: Expected) -> list[str]:
    """Every way the archive read back differs from what was recorded when it was written."""
    problems = list(read.errors)
    if read.sha256 != expected.sha256:
        problems.append(f"sha256 mismatch: recorded {expected.sha256}, read {read.sha256}")
    if read.entries != expected.entries:
        problems.append(f"entry count mismatch: recorded {expected.entries}, listed {read.entries}")
    elif expected.entries_digest and read.entries_digest != expected.entries_digest:
        problems.append("member list differs from the one recorded when the archive was written")
    return problems
