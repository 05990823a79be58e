"""A restic repository as a target: the transport (`Restic`, the restic binary run as a subprocess) and its read
side is `ResticStore` in targets/archives.py, an ArchiveStore like the local and rclone ones.

restic deduplicates with content-defined chunks, so coord's own uncompressed tar stream, fed to
`restic backup --stdin`, stores only the chunks a repository does not hold yet: a nightly backup of a volume
that changed by a few percent adds a few percent. Everything before the sink (quiescing, tar, every tar message
classified, the verdict, the in-line listing) is coord's, as for every target.

How an archive is stored (restic 0.14: one file per `--stdin` snapshot):

- the **archive**: one snapshot per volume and run, holding one file `/<volume>-<time>.tar` (the uncompressed
  tar stream), tagged `coord`, `coord-archive`, `coord-volume=<volume>`, `coord-policy=<policy>`,
  `coord-run=<when the archive started>`;
- its **manifest**: a second, small snapshot holding `/<archive file>.manifest.json` (the same document as on
  every target), written last, after the archive was checked, tagged `coord`, `coord-manifest`,
  `coord-volume=<volume>`, `coord-of=<the archive snapshot's id>` and the figures `coord list` shows
  (`coord-status`, `coord-verdict`, `coord-size`, `coord-entries`, `coord-started`): one `restic snapshots
  --json` lists a whole repository, with no file read.

An archive snapshot without its manifest snapshot is not complete: never listed, never latest, never counted by
retention (as on every target). Retention forgets the manifest snapshot first, then the archive's, then runs
`restic prune` once. A ref is `<target>:<volume>/<archive file>` as everywhere.

Locks: restic 0.14 has no `--retry-lock`. A command that finds the repository locked is retried by coord
(tenacity, `LOCK_WAIT_S` in all, each wait logged); a lock still held then is reported, never broken (`restic
unlock` is for the operator, once they know the process holding it is gone).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from coord.errors import CoordError
from coord.hashing import CHUNK_SIZE
from coord.retention import parse_time
from coord.stream_types import ByteStream, buffered_pipe, child_output
from coord.targets.rclone import RemoteError, rclone_binary, redact, secret_environment_values

log = logging.getLogger("coord")

RESTIC_OVERRIDE = "COORD_RESTIC"  # env: the restic binary to run instead of `restic` on PATH
LOCK_WAIT_ENV = "COORD_RESTIC_LOCK_WAIT_S"  # env: how long coord waits for another restic's lock (default below)
LOCK_WAIT_S = 120.0
TAG_COORD = "coord"
TAG_ARCHIVE = "coord-archive"
TAG_MANIFEST = "coord-manifest"
TAR_SUFFIX = ".tar"
FLAT_HOST = "coord"  # the host of every snapshot outside a swarm; a Swarm node's snapshots carry the node's name
_LOCKED_WORDS = ("repository is already locked", "unable to create lock")
_MISSING_WORDS = ("is there a repository at the following location", "unable to open config file")


def restic_binary() -> str:
    """`$COORD_RESTIC`, else `restic` on PATH (Debian's package). Raises CoordError when there is none."""
    override = os.environ.get(RESTIC_OVERRIDE)
    if override:
        return override
    found = shutil.which("restic")
    if found is None:
        raise CoordError(
            "restic is not installed: `apt-get install restic` (Debian 12: restic 0.14), or set COORD_RESTIC"
        )
    return found


class ResticError(RemoteError):
    """A restic command failed; the message names the target and says what to do, with no secret in it."""

    def __init__(self, message: str, *, locked: bool = False, exit_code: int | None = None) -> None:
        super().__init__(message, exit_code=exit_code)
        self.locked = locked


def tag(key: str, value: object) -> str:
    """A `coord-<key>=<value>` tag (restic splits --tag values at commas: none may contain one)."""
    return f"coord-{key}={str(value).replace(',', '_')}"


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as `restic snapshots --json` lists it; `values`: its `coord-<key>=<value>` tags."""

    id: str
    time: datetime
    paths: tuple[str, ...]
    tags: frozenset[str]
    values: dict[str, str] = field(default_factory=dict)
    host: str = ""  # the host restic recorded (coord passes --host: `coord`, or a Swarm node's name)

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Snapshot:
        tags = [str(item) for item in entry.get("tags") or ()]
        values = {}
        for item in tags:
            key, equals, value = item.partition("=")
            if equals and key.startswith("coord-"):
                values[key.removeprefix("coord-")] = value
        when = parse_time(str(entry.get("time", "")).replace("Z", "+00:00")) or datetime.fromtimestamp(0, UTC)
        paths = tuple(str(p) for p in entry.get("paths") or ())
        return cls(str(entry["id"]), when, paths, frozenset(tags), values, str(entry.get("hostname") or ""))

    @property
    def file(self) -> str:
        """The one file a coord snapshot holds (its base name)."""
        return self.paths[0].rsplit("/", 1)[-1] if self.paths else ""


@dataclass(frozen=True)
class BackupSummary:
    """What `restic backup --json` says it did."""

    snapshot_id: str
    bytes_processed: int
    data_added: int


class Restic:
    """The restic binary against one repository. The password comes from `password_file` (RESTIC_PASSWORD_FILE)
    or restic's own environment; it is never on a command line and never in a message."""

    def __init__(
        self,
        target: str,
        repository: str,
        password_file: Path | None = None,
        rclone_config: Path | None = None,
        host: str = FLAT_HOST,
    ) -> None:
        self.target = target
        self.repository = repository
        self.password_file = password_file
        self.rclone_config = rclone_config
        # Given explicitly on every backup: restic's default is the hostname, a container's inside one, which
        # changes when the container is recreated.
        self.host = host

    def environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["RESTIC_REPOSITORY"] = self.repository
        if self.password_file is not None:
            environment["RESTIC_PASSWORD_FILE"] = str(self.password_file)
            environment.pop("RESTIC_PASSWORD", None)
        if self.rclone_config is not None:
            environment["RCLONE_CONFIG"] = str(self.rclone_config)
        return environment

    def command(self, *arguments: str) -> list[str]:
        # `rclone:` repositories run the rclone installed with coord; other backends ignore the option.
        return [restic_binary(), "-o", f"rclone.program={rclone_binary()}", *arguments]

    def _secrets(self) -> list[str]:
        found = secret_environment_values()
        found += [os.environ[name] for name in ("RESTIC_PASSWORD",) if os.environ.get(name)]
        if self.password_file is not None:
            with suppress(OSError, UnicodeDecodeError):
                found += [line for line in self.password_file.read_text().splitlines() if line]
        return found

    def redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def error(self, what: str, exit_code: int, stderr: str) -> ResticError:
        said = stderr.strip()
        lowered = said.lower()
        where = f"target {self.target}: {what}"
        if "wrong password" in lowered:
            source = f"password_file {self.password_file}" if self.password_file else "RESTIC_PASSWORD_FILE"
            return ResticError(f"{where}: wrong password or no key found (from {source})", exit_code=exit_code)
        if any(words in lowered for words in _LOCKED_WORDS):
            return ResticError(
                f"{where}: the repository is locked by another restic process ({_last_line(said)}); coord did not "
                "break the lock: wait for that process, or run `restic unlock` once you know it is gone",
                locked=True,
                exit_code=exit_code,
            )
        if any(words in lowered for words in _MISSING_WORDS):
            return ResticError(
                f"{where}: no restic repository there, or it cannot be reached ({_last_line(said)}); create one with "
                f"`coord init-target {self.target}`",
                exit_code=exit_code,
            )
        if "no space left on device" in lowered:
            return ResticError(f"{where}: the repository is full (no space left on device)", exit_code=exit_code)
        return ResticError(
            f"{where}: restic exited {exit_code}: {_last_line(said) or 'no message'}", exit_code=exit_code
        )

    def _run_once(self, what: str, arguments: list[str], data: bytes | None = None) -> bytes:
        try:
            done = subprocess.run(
                self.command(*arguments), input=data, capture_output=True, env=self.environment(), check=False
            )
        except OSError as error:
            raise ResticError(f"target {self.target}: {what}: cannot run restic: {error.strerror}") from None
        if done.returncode != 0:
            raise self._redacted(self.error(what, done.returncode, done.stderr.decode("utf-8", "replace")))
        return done.stdout

    def _redacted(self, error: ResticError) -> ResticError:
        error.message = self.redact(error.message)
        error.args = (error.message,)
        return error

    def run(self, what: str, arguments: list[str], data: bytes | None = None) -> bytes:
        """Run restic; a lock held by another process is waited for (logged), up to LOCK_WAIT_S in all."""
        wait_s = float(os.environ.get(LOCK_WAIT_ENV, LOCK_WAIT_S))
        for attempt in Retrying(
            retry=retry_if_exception(lambda error: isinstance(error, ResticError) and error.locked),
            stop=stop_after_delay(wait_s),
            wait=wait_exponential(multiplier=0.5, max=10),
            before_sleep=self._log_wait,
            reraise=True,
        ):
            with attempt:
                return self._run_once(what, arguments, data)
        raise AssertionError("unreachable: Retrying reraises")

    def _log_wait(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("target %s: waiting for another restic's lock (%s)", self.target, getattr(error, "message", ""))

    def init(self) -> None:
        """`restic init`. Raises ResticError (also when a repository is already there: restic refuses)."""
        self.run("init", ["init"])

    def snapshots(self, *tags: str) -> list[Snapshot]:
        """The snapshots carrying every one of `tags` (default: coord's)."""
        wanted = ",".join(tags or (TAG_COORD,))
        output = self.run("listing snapshots", ["snapshots", "--json", "--tag", wanted])
        entries = json.loads(output or b"[]")
        return [Snapshot.of(entry) for entry in entries or ()]

    def backup_stream(self, stream: ByteStream, file_name: str, tags: list[str]) -> BackupSummary:
        """Read `stream` to its end into a new snapshot holding `/<file_name>`. Not retried (a stream cannot be
        replayed). Raises ResticError; a restic killed half-way leaves no snapshot (its pack files are removed by
        the next `restic prune`)."""
        arguments = ["backup", "--stdin", "--stdin-filename", file_name, "--json", "--quiet", "--host", self.host]
        for item in tags:
            arguments += ["--tag", item]
        what = f"backup of {file_name}"
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(
                    self.command(*arguments),
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    env=self.environment(),
                )
            except OSError as error:
                raise ResticError(f"target {self.target}: {what}: cannot run restic: {error.strerror}") from None
            assert process.stdin is not None
            try:
                while count := stream.readinto(buffer):
                    process.stdin.write(view[:count])
                process.stdin.close()
            except BrokenPipeError:
                pass  # restic died: its status says why
            except BaseException:
                process.kill()
                process.wait()
                raise
            finally:
                with suppress(OSError):
                    process.stdin.close()
            status = process.wait()
            if status != 0:
                raise self._redacted(self.error(what, status, _read(stderr)))
            return _summary(_read(stdout), self.target, what)

    def backup_bytes(self, data: bytes, file_name: str, tags: list[str]) -> BackupSummary:
        """A small file (a manifest) as a new snapshot holding `/<file_name>`; a lock is waited for."""
        arguments = ["backup", "--stdin", "--stdin-filename", file_name, "--json", "--quiet", "--host", self.host]
        for item in tags:
            arguments += ["--tag", item]
        what = f"backup of {file_name}"
        return _summary(self.run(what, arguments, data).decode("utf-8", "replace"), self.target, what)

    def read_file(self, snapshot_id: str, file_name: str) -> bytes:
        return self.run(f"reading {file_name}", ["dump", snapshot_id, "/" + file_name])

    @contextmanager
    def open_dump(self, snapshot_id: str, file_name: str) -> Iterator[ByteStream]:
        """`restic dump` of the snapshot's file as a stream. Leaving the block normally reads the rest and checks
        restic's exit (a stream cut short raises ResticError, never passes); with an exception, restic is killed."""
        what = f"reading {file_name} (snapshot {snapshot_id[:8]})"
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(
                    self.command("dump", snapshot_id, "/" + file_name),
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=self.environment(),
                )
            except OSError as error:
                raise ResticError(f"target {self.target}: {what}: cannot run restic: {error.strerror}") from None
            assert process.stdout is not None
            with child_output(process, buffered_pipe(process.stdout)) as stream:
                yield stream
            status = process.wait()
            if status != 0:
                raise self._redacted(self.error(what, status, _read(stderr)))

    def forget(self, *snapshot_ids: str) -> None:
        """Forget snapshots (their data stays until `prune`)."""
        if snapshot_ids:
            self.run("forgetting snapshots", ["forget", *snapshot_ids])

    def prune(self) -> None:
        """Remove the data no snapshot uses any more (restic takes an exclusive lock meanwhile)."""
        self.run("prune", ["prune"])

    def check(self, read_data_subset: str | None = None) -> str:
        """`restic check` (with `--read-data-subset` when given). Returns restic's report; raises ResticError."""
        arguments = ["check"] + (["--read-data-subset", read_data_subset] if read_data_subset else [])
        return self.run("check", arguments).decode("utf-8", "replace")


def _read(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _summary(output: str, target: str, what: str) -> BackupSummary:
    for line in reversed(output.splitlines()):
        with suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict) and document.get("message_type") == "summary":
                return BackupSummary(
                    str(document["snapshot_id"]),
                    int(document.get("total_bytes_processed", 0)),
                    int(document.get("data_added", 0)),
                )
    raise ResticError(f"target {target}: {what}: restic reported no snapshot")
