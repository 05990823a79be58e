"""Publishing to targets other than the local one the archive was written to, and streaming to a remote when the
volume has no local target at all. Part of the publish step (publish.py), after the group's containers are back.

On a target, an archive never looks finished before it is (`RemoteArchive`):

    journal REMOTE_PUBLISH (key: the final path) -> upload as <file>.partial -> check what landed (size always, and
    md5/sha1 where the backend offers one, computed in the same pass as coord's sha256) -> rename to <file>
    -> upload the manifest as <file>.manifest.json.partial -> rename it -> clear the entry

On an object store (S3, GCS, B2, Azure: rclone reports no server-side Move and no partial uploads), an object
appears whole or not at all and a rename would copy it all: the upload goes straight to <file> (never over an
existing one) and is checked there; the manifest, last, is still what makes it complete.

An archive without its manifest is not complete (never listed, never latest). A failure on the way removes what
this upload put there; a crash leaves the entry, and `coord recover` removes the temporaries and an archive whose
manifest never landed (recovery.py). Transient failures are retried (targets/rclone.py); a target that still fails
is that target's failure: the others keep their archive, and the volume fails naming the target.

With only remote targets, the compressed (and encrypted) stream goes to `rclone rcat` of the temporary name while
tar writes it (`RemoteStore`): no local copy, so a volume larger than the host's free disk can be backed up. The
in-line check (decompress and list while writing) still runs; a passphrase-encrypted archive is read back from
the remote and decrypted (`RemoteArchiveCheck`). Further targets get a copy from that first one. Read while the
containers wait (pause, stop), such an archive is spooled to a local file instead and uploaded afterwards as a
local archive is (`upload_published`): containers never wait for an upload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coord.archive import ArchiveOutcome
from coord.encrypt import Decryption, Encryption, EncryptionMethod, decrypt_stream, encrypt_stream_to, read_passphrase
from coord.errors import CoordError
from coord.hashing import HashingReader, hash_file_with
from coord.journal import REMOTE_PUBLISH, UPLOADING, Journal, JournalEntry
from coord.manifest import MANIFEST_SUFFIX
from coord.policy import Compression
from coord.results import TargetResult, TargetStatus
from coord.stream_types import ByteStream
from coord.targets import PARTIAL_SUFFIX, Target
from coord.targets.rclone import Rclone, RemoteError
from coord.verify import Expected, ReadBack, StreamLister, WrittenArchiveCheck, compare

log = logging.getLogger("coord")

CHECKED_HASHES = ("md5", "sha1")  # rclone's hash names that are hashlib's too; the others are not computed


@dataclass(frozen=True)
class RemoteArchive:
    """One archive's names on one target. `direct`: the target's uploads are atomic (an object store: the object
    appears whole or not at all, and a rename would copy it), so the upload goes to the final name itself; the
    manifest, uploaded last, still is what makes it complete."""

    target: Target
    volume: str
    file_name: str
    direct: bool = False

    @property
    def location(self) -> str:
        return self.target.volume_location(self.volume, self.file_name)

    @property
    def temporary(self) -> str:
        """Where the upload goes before it is checked."""
        return self.location if self.direct else self.location + PARTIAL_SUFFIX

    @property
    def manifest(self) -> str:
        return self.location + MANIFEST_SUFFIX

    @property
    def manifest_temporary(self) -> str:
        return self.manifest + PARTIAL_SUFFIX

    @property
    def ref(self) -> str:
        return self.target.ref(self.volume, self.file_name)

    def identity(self) -> str:
        """What `coord recover` needs to reach the target again (no credential: a config file's path at most)."""
        config = str(self.target.rclone_config) if self.target.rclone_config else None
        return json.dumps({"target": self.target.name, "config": config, "volume": self.volume})


def record_upload(journal: Journal, archive: RemoteArchive) -> JournalEntry:
    """Journal the upload before anything is written to the target (JournalError: nothing is uploaded)."""
    return journal.record(REMOTE_PUBLISH, archive.location, UPLOADING, archive.volume, archive.identity())


class AlreadyThere(RemoteError):
    """The archive's name is taken on the target: that file is not this upload's and is left alone."""


def clean_up(rclone: Rclone, location: str, *, keep_final: bool = False) -> list[str]:
    """Remove what an upload of the archive at `location` left: its temporaries, and the archive itself when its
    manifest never landed (it was this upload's: names carry the run's time, and an upload never replaces a file;
    `keep_final` when the name was found taken). Returns what was there and is gone. Raises RemoteError when the
    target cannot be reached (the journal entry is then kept)."""
    removed = []
    manifest = location + MANIFEST_SUFFIX
    candidates = [location + PARTIAL_SUFFIX, manifest + PARTIAL_SUFFIX]
    if not keep_final and rclone.stat(manifest) is None:
        candidates.append(location)
    for path in candidates:
        if rclone.stat(path) is not None:
            rclone.delete(path)
            removed.append(path)
    return removed


def check_landed(rclone: Rclone, location: str, size: int, hashes: dict[str, str]) -> None:
    """Raise RemoteError unless the file at `location` has `size` bytes and, for each of `hashes` the backend
    reports for it, that hash."""
    found = rclone.stat(location, with_hashes=bool(hashes), what=f"checking {location}")
    where = f"target {rclone.target}: checking {location}"
    if found is None:
        raise RemoteError(f"{where}: not there after the upload")
    if found.size != size:
        raise RemoteError(f"{where}: {found.size} bytes landed, {size} were sent")
    for name, expected in hashes.items():
        landed = found.hashes.get(name)
        if landed and landed.lower() != expected.lower():
            raise RemoteError(f"{where}: {name} {landed} landed, {expected} was sent")


def manifest_bytes(manifest: dict[str, object]) -> bytes:
    """The manifest as stored: the same bytes as the local manifest file (coord/publish.py)."""
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def refuse_taken_name(rclone: Rclone, archive: RemoteArchive) -> None:
    """Raise AlreadyThere when a file has the archive's name on the target: an upload never replaces one."""
    if rclone.stat(archive.location) is not None:
        raise AlreadyThere(f"target {rclone.target}: {archive.location} already exists; not replaced")


def begin(rclone: Rclone, archive: RemoteArchive) -> None:
    """Before an upload straight to the final name: that name must be free. Raises RemoteError."""
    if archive.direct:
        refuse_taken_name(rclone, archive)


def finish(rclone: Rclone, archive: RemoteArchive, manifest: bytes) -> None:
    """Rename the checked temporary to the archive's name (not for a direct upload), then upload its manifest
    (temporary, renamed). Raises RemoteError, also when an archive of that name is already there."""
    if not archive.direct:
        refuse_taken_name(rclone, archive)
        rclone.move(archive.temporary, archive.location)
    write_whole(rclone, manifest, archive.manifest)


def write_whole(rclone: Rclone, data: bytes, location: str) -> None:
    """Put the small file `data` at `location` so that no reader ever sees part of it: written as
    `<location>.partial` (never listed), then renamed. How every manifest lands, and every run record
    (run_records.py). Raises RemoteError."""
    rclone.write_bytes(data, location + PARTIAL_SUFFIX)
    rclone.move(location + PARTIAL_SUFFIX, location)


def give_up(rclone: Rclone, archive: RemoteArchive, journal: Journal, entry: JournalEntry, error: CoordError) -> str:
    """After a failed upload: remove what it left (the entry is cleared when that worked). The error to report."""
    try:
        clean_up(rclone, archive.location, keep_final=isinstance(error, AlreadyThere))
    except RemoteError as cleanup_error:
        log.error("%s: %s (kept in the journal for `coord recover`)", archive.volume, cleanup_error.message)
        return f"{error.message}; {archive.temporary} could not be removed yet (`coord recover` will)"
    with contextlib.suppress(CoordError):
        journal.clear(entry)
    return error.message


def upload_published(
    remote: RemoteArchive, archive: Path, manifest: bytes | Path, hashes: dict[str, str], journal: Journal
) -> TargetResult:
    """Upload a local archive file (published, or spooled) and its manifest (its bytes, or its local file) as
    `remote` (hashes: those of the archive file, by hashlib name). Returns the target's result; never raises for
    the target's failure."""

    def upload(rclone: Rclone) -> int:
        size = archive.stat().st_size
        rclone.upload_file(archive, remote.temporary, checksum=not hashes)  # coord checks its own hashes
        return size

    return _publish_checked(remote, upload, hashes, manifest, journal)


def copy_published(
    source: RemoteArchive, remote: RemoteArchive, size: int, hashes: dict[str, str], manifest: bytes, journal: Journal
) -> TargetResult:
    """Copy an archive published on one target to another (`remote`: rclone copies remote to remote,
    server-side where it can), checked like an upload. Returns the target's result; never raises for the
    target's failure."""

    def copy(rclone: Rclone) -> int:
        rclone.copy(source.location, remote.temporary, checksum=not hashes)
        return size

    return _publish_checked(remote, copy, hashes, manifest, journal)


def _publish_checked(
    remote: RemoteArchive,
    transfer: Callable[[Rclone], int],
    hashes: dict[str, str],
    manifest: bytes | Path,
    journal: Journal,
) -> TargetResult:
    """Put an archive on a target as `remote`: journal the upload, make sure its name is free, `transfer` it to
    `remote.temporary` (returning the bytes it sent), check what landed (size, `hashes`), rename it and upload the
    manifest; on any failure remove what it left (give_up). Returns the target's result; never raises for the
    target's failure (a local file that cannot be read included)."""
    target = remote.target
    rclone = target.rclone()
    try:
        entry = record_upload(journal, remote)
    except CoordError as error:
        return TargetResult(target.name, TargetStatus.FAILED, error=f"target {target.name}: {error.message}")
    try:
        begin(rclone, remote)
        size = transfer(rclone)
        check_landed(rclone, remote.temporary, size, hashes)
        finish(rclone, remote, manifest if isinstance(manifest, bytes) else manifest.read_bytes())
    except CoordError as error:
        return TargetResult(target.name, TargetStatus.FAILED, error=give_up(rclone, remote, journal, entry, error))
    except OSError as error:
        failure = CoordError(f"target {target.name}: cannot read {error.filename}: {error.strerror}")
        return TargetResult(target.name, TargetStatus.FAILED, error=give_up(rclone, remote, journal, entry, failure))
    with contextlib.suppress(CoordError):
        journal.clear(entry)
    return TargetResult(target.name, TargetStatus.OK, ref=remote.ref)


def probe_target(target: Target, volume: str) -> None:
    """Write and remove a small file in the volume's directory on `target`, before any hook runs or container is
    touched: a target that refuses (wrong password, read-only, down) is known before the volume is read.
    Raises RemoteError naming the target."""
    rclone = target.rclone()
    probe = target.volume_location(volume, f".coord-write-probe-{secrets.token_hex(8)}{PARTIAL_SUFFIX}")
    rclone.write_bytes(b"coord write probe\n", probe)
    rclone.delete(probe)


@dataclass(frozen=True)
class Capabilities:
    """What a target's backend offers coord: the hashes it checks uploads by, and whether uploads are atomic."""

    hashes: tuple[str, ...] = ()
    atomic: bool = False


def capabilities_of(target: Target) -> Capabilities:
    """Ask the target's backend once (`rclone backend features`). A local target, or one that cannot be asked,
    gets none: the size check, and a temporary name (its failure, if any, shows at the upload)."""
    if target.is_local:
        return Capabilities()
    rclone = target.rclone()
    try:
        features = rclone.features(target.location())
        hashes = rclone.hash_types(target.location(), features)
        atomic = rclone.uploads_atomically(target.location(), features)
    except RemoteError as error:
        log.warning("%s", error.message)
        return Capabilities()
    return Capabilities(tuple(name for name in CHECKED_HASHES if name in hashes), atomic)


def file_hashes(path: Path, names: Sequence[str]) -> dict[str, str]:
    """`names` hashes of a local file (an encrypted archive: gpg wrote it, so coord's pass never saw its bytes).
    Raises OSError."""
    if not names:
        return {}
    return hash_file_with(path, names)[2]


class RemoteStore:
    """The StreamWriter when a volume has only remote targets: the compressed stream (through gpg when encrypted)
    goes to `rclone rcat` of the archive's temporary name while tar writes it; no local file.

    `stored`: what went to the remote, hashed (sha256 and `extra_hashes`) in the same pass, set once written.
    """

    def __init__(self, archive: RemoteArchive, encryption: Encryption | None, extra_hashes: Sequence[str]) -> None:
        self.archive = archive
        self.encryption = encryption
        self.extra_hashes = tuple(extra_hashes)
        self.stored: HashingReader | None = None

    def __call__(self, stream: ByteStream, _local: Path) -> None:
        rclone = self.archive.target.rclone()
        begin(rclone, self.archive)
        if self.encryption is None:
            rclone.upload_stream(stream, self.archive.temporary)  # the caller's reader hashes these bytes
            return
        self._encrypt_and_upload(stream, rclone)

    def _encrypt_and_upload(self, stream: ByteStream, rclone: Rclone) -> None:
        """gpg writes into a FIFO; a thread reads it (hashing) into rclone. gpg needs a path to write to."""
        failures: list[BaseException] = []
        with tempfile.TemporaryDirectory(prefix="coord-upload-") as scratch:
            fifo = Path(scratch) / "archive.gpg"
            os.mkfifo(fifo, 0o600)

            def upload() -> None:
                try:
                    with open(fifo, "rb") as pipe:
                        self.stored = HashingReader(pipe, extra=self.extra_hashes)
                        rclone.upload_stream(self.stored, self.archive.temporary)
                except BaseException as error:  # reported by the writing thread, below
                    failures.append(error)

            uploader = threading.Thread(target=upload, daemon=True)
            uploader.start()
            gpg_error: CoordError | None = None
            try:
                assert self.encryption is not None
                encrypt_stream_to(stream, fifo, self.encryption)
            except CoordError as error:  # gpg fails too when the upload died (its output has no reader)
                gpg_error = error
            finally:
                _release_reader(fifo, uploader)
        if failures:  # the upload's failure is the cause: reported first
            failure = failures[0]
            raise failure if isinstance(failure, CoordError) else CoordError(f"upload failed: {failure}")
        if gpg_error is not None:
            raise gpg_error


def _release_reader(fifo: Path, uploader: threading.Thread) -> None:
    """Let the upload thread end: if gpg never opened the FIFO (it failed first), open and close it for writing
    so the reader sees its end instead of waiting forever."""
    uploader.join(timeout=0.5)
    while uploader.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        uploader.join(timeout=0.5)


class RemoteArchiveCheck(WrittenArchiveCheck):
    """The WrittenArchiveCheck of an archive streamed to a remote (RemoteStore): the same in-line listing; then
    the remote's size (and hash where offered) checked, and a passphrase-encrypted archive read back from the
    remote and decrypted."""

    def __init__(self, compression: Compression, encryption: Encryption | None, store: RemoteStore) -> None:
        super().__init__(compression, encryption, store)
        self.remote_store = store

    def stored(self, outcome: ArchiveOutcome) -> tuple[int, str, dict[str, str]]:
        """Size, sha256 and extra hashes of what was stored on the remote."""
        reader = self.remote_store.stored
        if self.encryption is None or reader is None:
            return outcome.size, outcome.sha256, dict(outcome.hashes)
        return reader.size, reader.hexdigest(), reader.extra_hexdigests()

    def read_back(self, partial: Path, outcome: ArchiveOutcome) -> tuple[ReadBack, list[str]]:
        archive = self.remote_store.archive
        rclone = archive.target.rclone()
        size, sha256, hashes = self.stored(outcome)
        if self.lists_while_writing:
            read = self.listed or ReadBack()
            read.sha256, read.size = (sha256 if self.encryption else ""), size
        else:
            read = read_back_remote(rclone, archive.temporary, self.compression, self.decryption())
        try:
            check_landed(rclone, archive.temporary, size, hashes)
        except RemoteError as error:
            read.errors.append(error.message)
        expected = Expected(
            sha256=None if self.lists_while_writing else sha256,
            entries=outcome.entries,
            entries_digest=outcome.entries_digest,
            stream_sha256=None if self.lists_while_writing else outcome.sha256,
        )
        return read, compare(read, expected)

    def decryption(self) -> Decryption | None:
        if self.encryption is None or self.encryption.method is not EncryptionMethod.PASSPHRASE:
            return None
        assert self.encryption.passphrase_file is not None
        return Decryption(self.encryption.home, read_passphrase(self.encryption.passphrase_file), managed=True)


def read_back_remote(
    rclone: Rclone, location: str, compression: Compression, decryption: Decryption | None
) -> ReadBack:
    """Read the archive at `location` back from the remote: hash, decrypt, decompress and list it. Never raises
    for a bad archive or a failed read: errors are in the result."""
    lister = StreamLister(compression)
    errors: list[str] = []
    source: HashingReader | None = None
    undecrypted = False
    try:
        with rclone.open_read(location) as stream:
            source = HashingReader(stream)
            try:
                if decryption is None:
                    while chunk := source.read(1 << 20):
                        lister.write(chunk)
                else:
                    decrypt_stream(source, lister.write, decryption, location.rsplit("/", 1)[-1])
            except CoordError as error:
                errors.append(error.message)
                undecrypted = decryption is not None
            finally:
                source.drain()
    except CoordError as error:
        errors.append(error.message)
    finally:
        result = lister.finish()
    result.sha256, result.size = (source.hexdigest(), source.size) if source is not None else ("", 0)
    result.errors[:0] = errors
    if undecrypted:
        result.errors, result.undecrypted = errors, True
    return result
