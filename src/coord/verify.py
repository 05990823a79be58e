"""Checking an archive: the check that replaces "the file is over 1000 bytes", and `coord verify`.

The compressed stream is decrypted when it is a `.gpg` archive (encrypt.py), decompressed and listed by GNU tar, and
the file is hashed. A truncated or corrupted archive fails decryption (gpg's integrity check), decompression (zstd
frames carry checksums, gzip a CRC) or tar's listing; a complete one gives the same sha256, the same number of
members and the same ordered member list (compared by digest) as the write side recorded.

`coord verify` reads the file back whole. A backup checks what it writes while it writes it (`WrittenArchiveCheck`):
the stream is listed on its way to the file, and the file hashed once fsynced.

Two hashes, because gpg sits between them: `sha256` is that of the file on disk, `stream_sha256` that of the
compressed tar stream (inside the encryption). Without encryption they are the same.
"""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from coord.archive import (
    TAR_ENVIRONMENT,
    ArchiveOutcome,
    StreamWriter,
    compression_of,
    decompressor_command,
    write_file,
)
from coord.archive_location import AnyArchive, location_of
from coord.encrypt import (
    GPG_SUFFIX,
    Decryption,
    Encryption,
    EncryptionMethod,
    decrypt_stream,
    encrypt_to_file,
    read_passphrase,
)
from coord.errors import CoordError
from coord.hashing import CHUNK_SIZE, HashingReader, hash_file
from coord.pipe_tee import PipeTee
from coord.policy import Compression
from coord.stream_types import ByteStream, buffered_pipe


@dataclass
class ReadBack:
    sha256: str = ""
    size: int = 0
    stream_sha256: str = ""
    stream_size: int = 0
    entries: int = 0
    entries_digest: str = ""
    errors: list[str] = field(default_factory=list)
    # The file could be read but not decrypted (no key, wrong passphrase): only its sha256 could be checked, and
    # what the stream would have shown is unknown rather than wrong.
    undecrypted: bool = False


@dataclass(frozen=True)
class Expected:
    """What was recorded when the archive was written. A None hash is not compared (not known on that side)."""

    sha256: str | None
    entries: int
    entries_digest: str | None = None
    stream_sha256: str | None = None


def feed_archive(
    archive: AnyArchive,
    decryption: Decryption | None,
    sink: Callable[[bytes], None],
    result: ReadBack,
    *,
    drain: bool,
) -> None:
    """Read the archive (a local file or any ArchiveLocation), decrypt it when `decryption` is given, and hand the
    compressed stream to `sink`.

    Fills `result.sha256`/`size` (what was read) and `result.errors` (decryption, read and transport failures).
    With `drain`, the archive is hashed to its end even when decryption stopped early. Exceptions from `sink`
    propagate.
    """
    location = location_of(archive)
    try:
        with location.open() as handle:
            source = HashingReader(handle)
            try:
                if decryption is None:
                    while chunk := source.read(CHUNK_SIZE):
                        sink(chunk)
                else:
                    decrypt_stream(source, sink, decryption, location.name)
            except CoordError as error:
                result.errors.append(error.message)
                result.undecrypted = decryption is not None
            finally:
                if drain:
                    source.drain()
                result.sha256, result.size = source.digest.hexdigest(), source.size
    except BrokenPipeError:
        raise  # from the sink: its reader went away, not a problem reading the file
    except OSError as error:
        result.errors.append(f"cannot read {location.describe()}: {error.strerror}")
    except CoordError as error:  # the transport ended badly (a remote read cut short): never a complete read
        result.errors.append(error.message)


def _start_decompressor(compression: Compression) -> subprocess.Popen[bytes]:
    """zstd -d / gzip -d with all three pipes: coord feeds it, reads it, and reports what it says."""
    return subprocess.Popen(
        decompressor_command(compression),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=TAR_ENVIRONMENT,
    )


class StreamLister:
    """`decompressor | tar --list`, fed the compressed stream chunk by chunk; counts and digests the members.

    `write` never raises: a decompressor that stops reading (corrupt data) is recorded, and the stream is still
    hashed to its end. `finish` waits for both processes and returns what they found.
    """

    def __init__(self, compression: Compression, *, hash_stream: bool = True) -> None:
        self.result = ReadBack()
        # Off when the writer already hashes the same bytes in this process (`tee`): a second sha256 proves nothing.
        self._digest = hashlib.sha256() if hash_stream else None
        self._listing_digest = hashlib.sha256()
        self._stopped = False
        self._stderr: dict[str, bytes] = {}
        self.decompressor = _start_decompressor(compression)
        self.lister = subprocess.Popen(
            ["tar", "--list", "--file=-"],
            stdin=self.decompressor.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=TAR_ENVIRONMENT,
        )
        assert self.decompressor.stdout is not None
        self.decompressor.stdout.close()
        self._threads = [
            threading.Thread(target=self._drain, args=("decompressor", self.decompressor.stderr), daemon=True),
            threading.Thread(target=self._drain, args=("tar", self.lister.stderr), daemon=True),
            threading.Thread(target=self._count, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, name: str, stream: IO[bytes]) -> None:
        self._stderr[name] = stream.read()

    def _count(self) -> None:
        """Count and hash tar's listing in chunks: a line per member, so per-line Python work would add up."""
        listing = buffered_pipe(self.lister.stdout)
        with listing:
            while chunk := listing.read1(1 << 16):
                self._listing_digest.update(chunk)
                self.result.entries += chunk.count(b"\n")

    def feeding(self, stream: ByteStream) -> ByteStream:
        """`stream`, every chunk read from it also fed to the decompressor.

        When `stream` is a HashingReader that has read nothing yet, straight over a pipe (the compressor's, as
        create_archive hands it), the kernel duplicates the bytes into the decompressor's pipe (tee(2), pipe_tee.py)
        and coord copies none; otherwise each chunk read is written to the decompressor (`write`)."""
        pipe = stream.source if isinstance(stream, HashingReader) and stream.size == 0 else None
        decompressor_input = self.decompressor.stdin
        if (
            self._digest is None  # with its own hash the lister must see the bytes in this process
            and isinstance(pipe, io.BufferedReader)
            and decompressor_input is not None
            and PipeTee.available(pipe.fileno(), decompressor_input.fileno())
        ):
            assert isinstance(stream, HashingReader)
            stream.source = PipeTee(pipe.fileno(), decompressor_input.fileno(), self._teed, self._decompressor_gone)
            return stream
        return _TeeStream(stream, self.write)

    def _teed(self, count: int) -> None:
        self.result.stream_size += count

    def _decompressor_gone(self) -> None:
        self._stopped = True
        self.result.errors.append("the decompressor stopped reading (corrupt data)")

    def write(self, chunk: bytes | memoryview) -> None:
        if self._digest is not None:
            self._digest.update(chunk)
        self.result.stream_size += len(chunk)
        if self._stopped:
            return
        assert self.decompressor.stdin is not None
        try:
            self.decompressor.stdin.write(chunk)
        except BrokenPipeError:
            self._stopped = True
            self.result.errors.append("the decompressor stopped reading (corrupt data)")

    def finish(self) -> ReadBack:
        assert self.decompressor.stdin is not None
        with suppress(BrokenPipeError):
            self.decompressor.stdin.close()
        lister_status = self.lister.wait()
        decompressor_status = self.decompressor.wait()
        for thread in self._threads:
            thread.join()
        result = self.result
        result.stream_sha256 = self._digest.hexdigest() if self._digest is not None else ""
        result.entries_digest = self._listing_digest.hexdigest()
        if decompressor_status != 0:
            said = self._stderr.get("decompressor", b"").decode(errors="replace").strip()
            result.errors.append(f"decompression failed (exit {decompressor_status}): {said or 'no message'}")
        if lister_status != 0:
            said = self._stderr.get("tar", b"").decode(errors="replace").strip()
            result.errors.append(f"tar could not list the archive (exit {lister_status}): {said or 'no message'}")
        return result


class _TeeStream:
    """A readable stream that also hands every chunk read to `also` (a view: `also` must not keep it)."""

    def __init__(self, source: ByteStream, also: Callable[[bytes | memoryview], None]) -> None:
        self.source = source
        self.also = also

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        if data:
            self.also(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self.source.readinto(buffer)
        if count:
            self.also(memoryview(buffer)[:count])
        return count


def read_back(path: AnyArchive, compression: Compression, decryption: Decryption | None = None) -> ReadBack:
    """Hash, decrypt (when `decryption` is given), decompress and list the archive at `path` (a local file or any
    ArchiveLocation).

    Never raises for a bad archive: errors are in the result.
    """
    lister = StreamLister(compression)
    file_side = ReadBack()
    try:
        feed_archive(path, decryption, lister.write, file_side, drain=True)
    finally:
        result = lister.finish()
    result.sha256, result.size = file_side.sha256, file_side.size
    if file_side.undecrypted:  # the lister saw nothing: its complaints are consequences, not findings
        result.errors, result.undecrypted = file_side.errors, True
    else:
        result.errors[:0] = file_side.errors
    return result


def compare(read: ReadBack, expected: Expected) -> list[str]:
    """Every way the archive read back differs from what was recorded when it was written (the file's hash first)."""
    problems = []
    if expected.sha256 is not None and read.sha256 != expected.sha256:
        problems.append(f"sha256 mismatch: recorded {expected.sha256}, read {read.sha256}")
    problems.extend(read.errors)
    if read.undecrypted:  # the root cause is said; the stream's checks could not be made, so they did not fail
        return problems
    if expected.stream_sha256 is not None and read.stream_sha256 != expected.stream_sha256:
        problems.append(
            f"sha256 of the compressed stream mismatch: recorded {expected.stream_sha256}, read {read.stream_sha256}"
        )
    if read.entries != expected.entries:
        problems.append(f"entry count mismatch: recorded {expected.entries}, listed {read.entries}")
    elif expected.entries_digest and read.entries_digest != expected.entries_digest:
        problems.append("member list differs from the one recorded when the archive was written")
    return problems


class WrittenArchiveCheck:
    """How the runner stores an archive and then checks it against what the write side saw.

    Plain archives and archives encrypted to public keys are checked in line: the compressed stream is decompressed
    and listed (`StreamLister`) while it is written, instead of decompressing the archive a second time after the
    write (benchmarks.md: that serial read-back was a fifth of a backup's time). With public keys it is also the
    only check possible: coord cannot decrypt, so it lists the stream on its way to gpg; gpg writes the file, which
    is hashed afterwards (the manifest records that hash).

    A plain archive is not re-read: `write_file` wrote it from the very bytes that were hashed and listed, checked
    the count of every write and fsynced it, so a re-read could only return those bytes from the page cache. That
    re-read cost 8% of a 2 GiB backup and could not see the device (benchmarks.md); the file's size is checked, and
    `coord verify` reads an archive back whole, best once it has left the cache.

    Passphrase-encrypted archives are read back whole, decrypted with the passphrase: that also proves gpg's output.
    """

    def __init__(
        self, compression: Compression, encryption: Encryption | None, store: StreamWriter | None = None
    ) -> None:
        """`store` writes the stream to the file; by default gpg when `encryption` is given, else `write_file`."""
        self.compression = compression
        self.encryption = encryption
        if store is None:
            store = write_file if encryption is None else functools.partial(encrypt_to_file, encryption=encryption)
        self._store = store
        self._lister: StreamLister | None = None
        self._listed: ReadBack | None = None

    @property
    def lists_while_writing(self) -> bool:
        return self.encryption is None or self.encryption.method is EncryptionMethod.PUBLIC_KEY

    def write(self, stream: ByteStream, path: Path) -> None:
        """The StreamWriter for create_archive: stores the stream, listing it on the way when checked in line."""
        if not self.lists_while_writing:
            self._store(stream, path)
            return
        self._lister = StreamLister(self.compression, hash_stream=False)
        self._store(self._lister.feeding(stream), path)

    @property
    def listed(self) -> ReadBack | None:
        """What the in-line listing found, once writing ended (None when the archive is checked by reading it)."""
        return self._listed

    def end_writing(self) -> None:
        """Call once writing is over, whether it worked or not (waits for the in-line lister)."""
        if self._lister is not None and self._listed is None:
            self._listed = self._lister.finish()

    def read_back(self, partial: Path, outcome: ArchiveOutcome) -> tuple[ReadBack, list[str]]:
        """What was read and every mismatch with `outcome` (the write side's hashes and member list)."""
        if self._listed is not None:
            read = self._listed
            try:
                if self.encryption is None:
                    read.size = partial.stat().st_size
                    if read.size != outcome.size:
                        read.errors.append(f"size mismatch: {outcome.size} bytes written, the file has {read.size}")
                else:  # gpg wrote the file: its hash is learnt here
                    read.sha256, read.size = hash_file(partial)
            except OSError as error:
                read.errors.append(f"cannot read {partial}: {error.strerror}")
            expected = Expected(sha256=None, entries=outcome.entries, entries_digest=outcome.entries_digest)
            return read, compare(read, expected)
        decryption = None
        if self.encryption is not None:
            assert self.encryption.passphrase_file is not None
            passphrase = read_passphrase(self.encryption.passphrase_file)
            decryption = Decryption(self.encryption.home, passphrase, managed=True)
        read = read_back(partial, self.compression, decryption)
        expected = Expected(
            sha256=None if self.encryption else outcome.sha256,  # the encrypted file's hash is known only by reading
            entries=outcome.entries,
            entries_digest=outcome.entries_digest,
            stream_sha256=outcome.sha256,
        )
        return read, compare(read, expected)

    @staticmethod
    def method(encryption: Encryption | None) -> str:
        """How the check was done, in words, for the manifest."""
        if encryption is None:
            return (
                "compressed stream hashed, decompressed and listed while written to the file (every write complete, "
                "fsynced, size checked); `coord verify` reads it back"
            )
        if encryption.method is EncryptionMethod.PASSPHRASE:
            return "read back: decrypted, decompressed and listed"
        return (
            "compressed stream listed on its way to gpg, file hashed after writing; not decrypted (coord holds only "
            "the public keys: `coord verify --gpg-home DIR` with a secret key checks the whole file)"
        )


@dataclass
class TarStream:
    """The decompressed (and decrypted) tar stream of an archive, for a reader in this process."""

    stream: IO[bytes]
    result: ReadBack


@contextmanager
def open_tar_stream(path: AnyArchive, compression: Compression, decryption: Decryption | None) -> Iterator[TarStream]:
    """Yield the archive's tar stream; a background thread feeds the archive (a local file or any ArchiveLocation),
    decrypting, into the decompressor.

    When the block ends normally the rest of the stream is drained and `result` holds both sha256s and every error
    (decryption, decompression, reading); the caller checks them AFTER the block. When the block raises, the
    decompressor is killed and the feeding stops early.
    """
    decompressor = _start_decompressor(compression)
    assert decompressor.stdin is not None and decompressor.stdout is not None and decompressor.stderr is not None
    # Locals, not attributes, for the closures below: the checks above hold for them there too.
    decompressor_input, decompressor_errors = decompressor.stdin, decompressor.stderr
    result = ReadBack()
    feed_side = ReadBack()  # the file's hash and the reading/decryption errors: the cause, reported first
    stream_digest = hashlib.sha256()
    stderr_text: list[bytes] = []

    def sink(chunk: bytes) -> None:
        stream_digest.update(chunk)
        result.stream_size += len(chunk)
        decompressor_input.write(chunk)

    def feed() -> None:
        try:
            feed_archive(path, decryption, sink, feed_side, drain=False)
        except BrokenPipeError:
            feed_side.errors.append("the decompressor stopped reading (corrupt data, or the reader gave up)")
        except Exception as error:  # a thread's exception would otherwise vanish with it
            feed_side.errors.append(f"reading {location_of(path).describe()} failed: {error!r}")
        finally:
            with suppress(BrokenPipeError):
                decompressor_input.close()

    def drain_stderr() -> None:
        stderr_text.append(decompressor_errors.read())

    feeder = threading.Thread(target=feed, daemon=True)
    drainer = threading.Thread(target=drain_stderr, daemon=True)
    feeder.start()
    drainer.start()
    completed = False
    try:
        yield TarStream(decompressor.stdout, result)
        while decompressor.stdout.read(CHUNK_SIZE):  # tar's end-of-archive padding: read it, do not cut it off
            pass
        completed = True
    finally:
        if not completed:
            decompressor.kill()
        decompressor.stdout.close()
        status = decompressor.wait()
        feeder.join()
        drainer.join()
        result.sha256, result.size = feed_side.sha256, feed_side.size
        result.errors[:0] = feed_side.errors
        result.stream_sha256 = stream_digest.hexdigest()
        if completed and status != 0:
            said = b"".join(stderr_text).decode(errors="replace").strip()
            result.errors.append(f"decompression failed (exit {status}): {said or 'no message'}")


@dataclass
class Verification:
    """The verdict of `coord verify` on one archive."""

    archive: str
    problems: list[str] = field(default_factory=list)
    sha256: str = ""
    entries: int = 0
    encrypted: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def verdict(self) -> str:
        """One line: OK or FAIL, the archive, and what was found."""
        if self.ok:
            how = "decrypted, decompressed" if self.encrypted else "decompressed"
            return f"OK {self.archive}: sha256 matches the manifest; {how} and listed: {self.entries} entries"
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        return f"FAIL {self.archive}: {self.problems[0]}{more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "archive": self.archive,
            "verdict": self.verdict(),
            "sha256": self.sha256,
            "entries": self.entries,
            "encrypted": self.encrypted,
            "problems": list(self.problems),
        }


def archive_is_encrypted(archive: Path, manifest: dict[str, Any] | None) -> bool:
    """Whether `archive` must be decrypted: its name ends in .gpg, or its manifest (None: none) records encryption."""
    return archive.name.endswith(GPG_SUFFIX) or bool(manifest and manifest.get("encryption"))


def archive_compression(archive: Path, manifest: dict[str, Any] | None) -> Compression:
    """The compression of `archive`: what its manifest (None: none) records, else what its name says.

    Raises ValueError when the manifest records a compression coord does not know.
    """
    recorded = manifest.get("compression") if manifest else None
    return Compression(recorded) if recorded else compression_of(archive)


def verify_archive(archive: AnyArchive, decryption: Callable[[], Decryption]) -> Verification:
    """Read the whole archive (a local file or any ArchiveLocation; decrypting with `decryption()` when it is
    encrypted) and compare it with its manifest.

    Never raises for a bad archive or manifest: the problems are in the result.
    """
    location = location_of(archive)
    result = Verification(archive=location.describe())
    try:
        manifest = location.read_manifest()
        expected = Expected(
            sha256=str(manifest["sha256"]),
            entries=int(manifest["entries"]),
            entries_digest=manifest.get("entries_digest"),
            stream_sha256=manifest.get("stream_sha256"),
        )
        compression = archive_compression(Path(location.name), manifest)
    except FileNotFoundError:
        manifest_name = Path(location.manifest_name()).name
        result.problems.append(f"no manifest {manifest_name} beside the archive: nothing to verify it against")
        return result
    except (OSError, ValueError, KeyError, TypeError) as error:
        result.problems.append(f"unreadable manifest {location.manifest_name()}: {error}")
        return result
    except CoordError as error:  # the transport could not fetch it
        result.problems.append(error.message)
        return result
    result.encrypted = archive_is_encrypted(Path(location.name), manifest)
    try:
        read = read_back(location, compression, decryption() if result.encrypted else None)
    except CoordError as error:
        result.problems.append(error.message)
        return result
    result.sha256, result.entries = read.sha256, read.entries
    result.problems = compare(read, expected)
    return result
