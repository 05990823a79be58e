"""The archiving step: GNU tar | compressor | coord (sha256) -> <archive>.partial, every tar message classified.

Processes, so no per-file Python work sits in the hot path:

    tar --create ... .  --stdout-->  pzstd / pigz  --stdout-->  coord: sha256 + write to the .partial file
        |--index (one line per member, via a pipe)--> coord: entry count, digest, per-directory listing
        |--stderr--> coord: every line classified (problems.py)

The archive is written under a `.partial` name. This module never renames it: the runner publishes it only
after validation. On any exception (Ctrl-C included) the children are killed and the partial file removed,
so a failed run never leaves a file that looks like a backup.

Where the compressed stream ends up is a `StreamWriter`: `write_file` by default, or encryption (encrypt.py),
where gpg reads the stream and writes the file itself. Either way coord hashes the compressed stream as it passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from coord.anomaly import count_expected
from coord.consistency import ArchivedTree, Consistency, assess_consistency
from coord.errors import CoordError
from coord.excludes import ExcludeMatcher
from coord.hashing import CHUNK_SIZE, HashingReader
from coord.policy import Compression, ConsistencyRule
from coord.problems import EntryProblem, ProblemKind, classify_tar_line
from coord.stream_types import ByteStream, buffered_pipe

log = logging.getLogger("coord")

INDEX_CHUNK_SIZE = 1 << 16
TAR_ENVIRONMENT = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

ProgressCallback = Callable[[int, int], None]  # (entries archived so far, compressed bytes written so far)
StreamWriter = Callable[[ByteStream, Path], None]
"""Reads the compressed stream to its end and stores it at the path (which must not exist yet).

Raises a CoordError saying why the destination does not hold the whole stream; the caller removes the file.
"""


class DestinationError(CoordError):
    """The archive could not be written where it belongs (full disk, permissions, missing directory)."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"cannot write to destination {path}: {error.strerror}")


# pzstd (Debian's zstd package ships it) cuts the stream into independent frames, each announced by a skippable
# frame holding its size, so `pzstd -d -p N` decodes them on N cores: the in-line check then keeps up with the
# compression instead of decoding one frame on one core (docs/benchmarks.md, issue 16). The frames are ordinary
# zstd frames: `zstd -dc X.tar.zst | tar -x` restores such an archive, and pzstd -d reads one-frame archives too.
PARALLEL_ZSTD = "pzstd"
PARALLEL_GZIP = "pigz"  # gzip's format on every core; `gzip -dc` reads what it writes
_missing_tools_noted: set[str] = set()


def worker_count(threads: int = 0) -> int:
    """`threads`, or with 0 the cores this process may run on (its CPU affinity, not the machine's count)."""
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parallel_tool_available(tool: str) -> bool:
    """Whether `tool` (pzstd or pigz) is on PATH; the first time it is not, a note says what that costs."""
    if shutil.which(tool) is not None:
        return True
    if tool not in _missing_tools_noted:
        _missing_tools_noted.add(tool)
        if tool == PARALLEL_ZSTD:
            log.warning(
                "pzstd is not on PATH: zstd writes one frame, which the archive's check decodes on one core "
                "(install pzstd: Debian's zstd package, Fedora's zstd, Alpine's zstd)"
            )
        else:
            log.info("%s is not on PATH: gzip compresses on one core (Debian: apt-get install %s)", tool, tool)
    return False


def compressor_command(compression: Compression, level: int | None = None, threads: int = 0) -> list[str]:
    """The compressor reading tar's stream: zstd -3 in independent frames on every core (pzstd; plain zstd
    -T0 when pzstd is missing), or gzip -6 on every core (pigz; gzip when pigz is missing). `threads` 0 means
    every core."""
    if compression is Compression.ZSTD:
        if parallel_tool_available(PARALLEL_ZSTD):
            return [PARALLEL_ZSTD, "-q", "-c", f"-{level or 3}", "-p", str(worker_count(threads))]
        return ["zstd", "-q", "-c", f"-{level or 3}", f"-T{threads}"]
    if compression is Compression.NONE:
        return ["cat"]  # the same pipeline, so tar's stream is handled (hashed, listed, stored) one way
    if parallel_tool_available(PARALLEL_GZIP):
        return [PARALLEL_GZIP, "-c", f"-{level or 6}", "-p", str(worker_count(threads))]
    return ["gzip", "-c", f"-{level or 6}"]


def decompressor_command(compression: Compression) -> list[str]:
    """The decompressor of an archive's stream. pzstd -d decodes the frames pzstd wrote on every core, and a
    one-frame archive (plain zstd's, coord's before issue 16) on one, as zstd -d does. gzip's format decodes on
    one core whoever wrote it (pigz -d only moves the CRC to another thread), so gzip -d reads it."""
    if compression is Compression.ZSTD:
        if parallel_tool_available(PARALLEL_ZSTD):
            return [PARALLEL_ZSTD, "-q", "-d", "-c", "-p", str(worker_count())]
        return ["zstd", "-q", "-d", "-c"]
    if compression is Compression.NONE:
        return ["cat"]
    return ["gzip", "-d", "-c"]


def archive_suffix(compression: Compression) -> str:
    return {Compression.ZSTD: ".tar.zst", Compression.GZIP: ".tar.gz", Compression.NONE: ".tar"}[compression]


def compression_of(path: Path) -> Compression:
    """The compression of an archive, from its name (the manifest records it too)."""
    name = path.name.removesuffix(".gpg").removesuffix(".partial")
    if name.endswith(".tar.gz"):
        return Compression.GZIP
    if name.endswith(".tar"):
        return Compression.NONE
    return Compression.ZSTD


@dataclass
class ArchiveOutcome:
    """What one archiving step produced. `problems` holds every classified tar message, critical ones included."""

    partial_path: Path
    size: int = 0
    sha256: str = ""
    entries: int = 0
    entries_digest: str = ""
    problems: list[EntryProblem] = field(default_factory=list)
    # snapshot reads: files tar called changed whose content provably is the snapshot's (a hard link removed)
    relinked: list[str] = field(default_factory=list)
    consistency: Consistency | None = None
    expected: dict[str, int] = field(default_factory=dict)  # each `expect:` pattern: archived entries it matches
    started_at: float = 0.0
    finished_at: float = 0.0
    # settings.extra_hashes of the compressed stream (md5, sha1), computed in the pass that computes sha256
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def critical(self) -> list[EntryProblem]:
        return [p for p in self.problems if p.kind is ProblemKind.CRITICAL]

    def of_kind(self, kind: ProblemKind) -> list[EntryProblem]:
        return [p for p in self.problems if p.kind is kind]


class _LineCollector(threading.Thread):
    """Reads a text pipe to its end in the background, handing each line to `on_line`."""

    def __init__(self, stream: IO[bytes], on_line: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.on_line = on_line

    def run(self) -> None:
        with self.stream:
            for raw in self.stream:
                self.on_line(raw.decode("utf-8", "surrogateescape").rstrip("\n"))


def _collect_index(stream: io.BufferedReader, tree: ArchivedTree, digest: hashlib._Hash) -> None:
    """Read tar's index (one member per line) to its end into `tree`, hashing it.

    Runs in its own thread, the only writer of `tree` and `digest` (the stream's reader only reads tree.count, for
    progress). It handles a million lines per million files, so it works in chunks: one hash update and one decode
    per chunk (tar ends every line with one newline and escapes newlines in names, so the digest of the chunks is
    that of the lines), leaving the per-line work to ArchivedTree.add_members.
    """
    pending = b""
    with stream:
        while chunk := stream.read1(INDEX_CHUNK_SIZE):  # what the pipe holds, no wait
            digest.update(chunk)
            data = pending + chunk
            end = data.rfind(b"\n") + 1  # decode whole lines only: a UTF-8 sequence may straddle the chunks
            pending = data[end:]
            if end:
                tree.add_members(data[:end].decode("utf-8", "surrogateescape").split("\n")[:-1])
    if pending:  # not from tar (it ends every line), but do not lose it
        digest.update(b"\n")
        tree.add_members([pending.decode("utf-8", "surrogateescape")])


def tar_create_command(source: Path, matcher: ExcludeMatcher, index_fd: int) -> list[str]:
    return [
        "tar",
        "--create",
        "--file=-",
        f"--directory={source}",
        # pax keeps what the file system holds: nanosecond mtimes, every extended attribute (file capabilities are
        # security.capability), POSIX ACLs, and holes (GNU sparse 1.0, listed under the file's own name). atime and
        # ctime are left out: restoring them means nothing, and atime changes with every read.
        "--format=posix",
        "--pax-option=delete=atime,delete=ctime",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--sparse",
        # uids, not names: a restore on any host (or into a container) gives files back to the same ids.
        "--numeric-owner",
        "--sort=name",
        "--verbose",
        f"--index-file=/dev/fd/{index_fd}",
        *matcher.tar_arguments(),
        ".",
    ]


def remove_partial(path: Path) -> None:
    """Remove a partial archive if there is one (its directory may not even exist)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()


def _check_source(source: Path) -> EntryProblem | None:
    try:
        if not source.is_dir():
            return EntryProblem(ProblemKind.CRITICAL, ".", f"volume root {source} is missing or not a directory")
        os.listdir(source)
    except PermissionError:
        return EntryProblem(
            ProblemKind.CRITICAL,
            ".",
            f"volume root {source} is not readable (coord must run as root on the host, or as a sidecar with "
            "the volume mounted)",
        )
    except OSError as error:
        return EntryProblem(ProblemKind.CRITICAL, ".", f"volume root {source}: {error.strerror}")
    return None


def write_file(stream: ByteStream, path: Path) -> None:
    """The default StreamWriter: copy the stream into a new file at `path`, then fsync it."""
    try:
        # Unbuffered: a full disk must surface at the write that failed, not later in close().
        output = open(path, "xb", buffering=0)  # noqa: SIM115 - closed by the with below
    except OSError as error:
        raise DestinationError(path, error) from None
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with output:
        try:
            while count := stream.readinto(buffer):
                chunk = view[:count]
                while chunk:
                    chunk = chunk[output.write(chunk) :]
            os.fsync(output.fileno())
        except OSError as error:
            raise DestinationError(path, error) from None


@dataclass(frozen=True)
class ArchiveSettings:
    """How create_archive reads a source and stores it.

    `matcher`: what tar leaves out. `compressor`: the command reading tar's stream (compressor_command).
    `write`: where the compressed stream goes (a new file by default). `consistency`: the rule of the verdict
    (consistency.py). `content_unchanged(path)`, for a snapshot read only: whether a file tar called changed is
    still as it was at the snapshot (Snapshot.content_unchanged); such files go to `relinked`, not to the problems.
    Without it the read is live (or quiesced), and every archived file's ctime is checked once tar is done: one
    modified after the read began makes the verdict fuzzy at best. `on_progress`: told of the progress.
    `expect`: the policy's `expect:` patterns; how many archived entries each matches goes to outcome.expected.
    """

    matcher: ExcludeMatcher
    compressor: list[str]
    write: StreamWriter = write_file
    consistency: ConsistencyRule = ConsistencyRule.GENERIC
    content_unchanged: Callable[[str], bool] | None = None
    on_progress: ProgressCallback | None = None
    expect: tuple[str, ...] = ()  # the policy's `expect:` patterns, counted in outcome.expected (anomaly.py)
    extra_hashes: tuple[str, ...] = ()  # hashlib names computed with sha256 (a target checks uploads by them)


def create_archive(source: Path, partial_path: Path, settings: ArchiveSettings) -> ArchiveOutcome:
    """Archive the directory `source` into `partial_path` (created; must not exist) as `settings` say.

    Returns the outcome with every problem classified; problems with the source or the destination are CRITICAL
    problems in the outcome, not exceptions. `sha256`/`size` in the outcome are those of the compressed stream.
    On an exception (KeyboardInterrupt, SystemExit from a signal) the child processes are killed and
    `partial_path` removed before it propagates.
    """
    outcome = ArchiveOutcome(partial_path=partial_path, started_at=time.time())
    source_problem = _check_source(source)
    if source_problem:
        outcome.problems.append(source_problem)
        outcome.finished_at = time.time()
        return outcome
    try:
        partial_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _destination_failed(outcome, error)
        outcome.finished_at = time.time()
        return outcome
    try:
        with ArchivedTree() as tree:
            _run_pipeline(tree, source, settings, outcome)
    except BaseException:
        remove_partial(partial_path)
        raise
    outcome.finished_at = time.time()
    return outcome


def _run_pipeline(tree: ArchivedTree, source: Path, settings: ArchiveSettings, outcome: ArchiveOutcome) -> None:
    """tar | compressor | settings.write into outcome.partial_path, to the end; then tar's messages classified and
    the verdict given, all into `outcome`. The members tar archived go to `tree`."""
    digest = hashlib.sha256()
    read_started_ns = time.time_ns()
    with _Children() as children:
        tar, compressor = children.start(source, settings, tree, digest)
        written_ok = _store_stream(tar, compressor, tree, settings, outcome)
        tar_status = tar.wait()
        compressor_status = compressor.wait()
        children.join()
    outcome.entries = tree.count
    outcome.entries_digest = digest.hexdigest()
    _classify_tar_messages(children.tar_messages, settings.content_unchanged, outcome)
    if written_ok:
        outcome.problems.extend(
            _exit_status_problems(tar_status, compressor_status, outcome, children.compressor_messages)
        )
    outcome.consistency = assess_consistency(
        str(source),
        tree,
        outcome.problems,
        settings.matcher,
        settings.consistency,
        # A snapshot read is judged by Snapshot.modified_since_unpause, which tells a removed hard link from a write.
        read_started_ns=read_started_ns if settings.content_unchanged is None else None,
    )
    if settings.expect:
        outcome.expected = count_expected(tree, settings.expect)


class _Children:
    """tar and the compressor with the threads reading their side outputs (tar's index, both stderrs).

    Leaving the with block (an exception included) kills a child still running and closes the ends of the index
    pipe not handed on to tar or to the index reader.
    """

    def __init__(self) -> None:
        self._index_read, self._index_write = os.pipe()
        self._processes: list[subprocess.Popen[bytes]] = []
        self._collectors: list[threading.Thread] = []
        self.tar_messages: list[str] = []
        self.compressor_messages: list[str] = []

    def start(
        self, source: Path, settings: ArchiveSettings, tree: ArchivedTree, digest: hashlib._Hash
    ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
        """Start tar (reading `source`) | the compressor, and the collectors: tar's index into `tree`, hashed into
        `digest`. tar's stdout belongs to the compressor, so tar gets SIGPIPE if the compressor dies."""
        tar = subprocess.Popen(
            tar_create_command(source, settings.matcher, self._index_write),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            pass_fds=(self._index_write,),
            env=TAR_ENVIRONMENT,
        )
        self._processes.append(tar)
        os.close(self._index_write)
        self._index_write = -1
        compressor = subprocess.Popen(
            settings.compressor,
            stdin=tar.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=TAR_ENVIRONMENT,
        )
        self._processes.append(compressor)
        assert tar.stdout is not None and tar.stderr is not None
        assert compressor.stdout is not None and compressor.stderr is not None
        tar.stdout.close()  # the compressor owns it now
        index = os.fdopen(self._index_read, "rb")
        self._index_read = -1  # the index reader owns it now
        self._collectors = [
            threading.Thread(target=_collect_index, args=(index, tree, digest), daemon=True),
            _LineCollector(tar.stderr, self.tar_messages.append),
            _LineCollector(compressor.stderr, self.compressor_messages.append),
        ]
        for collector in self._collectors:
            collector.start()
        return tar, compressor

    def join(self) -> None:
        """Wait until the collectors read their pipes to the end (the children have ended)."""
        for collector in self._collectors:
            collector.join()

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *_: object) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for descriptor in (self._index_read, self._index_write):
            if descriptor >= 0:
                os.close(descriptor)


def _store_stream(
    tar: subprocess.Popen[bytes],
    compressor: subprocess.Popen[bytes],
    tree: ArchivedTree,
    settings: ArchiveSettings,
    outcome: ArchiveOutcome,
) -> bool:
    """Hand the compressor's output to settings.write, recording its size and sha256 in `outcome`. Returns whether
    the writer stored it all; when it could not, its error is a CRITICAL problem and both children are killed."""
    assert compressor.stdout is not None
    on_progress = settings.on_progress
    reporter = _ProgressReporter(on_progress, lambda: tree.count) if on_progress is not None else None
    stream = HashingReader(buffered_pipe(compressor.stdout), reporter, settings.extra_hashes)
    try:
        settings.write(stream, outcome.partial_path)
        written_ok = True
    except CoordError as error:
        outcome.problems.append(EntryProblem(ProblemKind.CRITICAL, "", error.message))
        written_ok = False
        tar.kill()
        compressor.kill()
    compressor.stdout.close()  # after the kill: a reader thread may still be blocked on it
    outcome.size, outcome.sha256 = stream.size, stream.digest.hexdigest()
    outcome.hashes = stream.extra_hexdigests()
    if on_progress is not None:
        on_progress(tree.count, stream.size)
    return written_ok


def _classify_tar_messages(
    messages: list[str], content_unchanged: Callable[[str], bool] | None, outcome: ArchiveOutcome
) -> None:
    """Every tar message classified into outcome.problems; a file a snapshot read saw changing whose content is
    still the snapshot's goes to outcome.relinked instead."""
    for line in messages:
        problem = classify_tar_line(line)
        if problem is None:
            continue
        if problem.kind is ProblemKind.CHANGED and content_unchanged is not None and content_unchanged(problem.path):
            outcome.relinked.append(problem.path)
        else:
            outcome.problems.append(problem)


def _exit_status_problems(
    tar_status: int, compressor_status: int, outcome: ArchiveOutcome, compressor_messages: list[str]
) -> list[EntryProblem]:
    """Problems only the exit statuses show: a child killed, or tar failing without saying why."""
    problems = []
    if tar_status < 0:
        problems.append(EntryProblem(ProblemKind.CRITICAL, "", f"tar was killed by signal {-tar_status}"))
    elif tar_status >= 2 and not outcome.critical:
        # Exit 2 means a fatal error. A vanished entry seen through a path other than "File removed" (ENOENT
        # from open/savedir) also gives 2, so exit 2 is fine only when every message was classified.
        if not any(p.kind is ProblemKind.VANISHED for p in outcome.problems):
            problems.append(EntryProblem(ProblemKind.CRITICAL, "", f"tar exited with status {tar_status}"))
    elif tar_status == 1 and not outcome.problems and not outcome.relinked:
        problems.append(EntryProblem(ProblemKind.CRITICAL, "", "tar exited with status 1 and reported nothing"))
    if compressor_status != 0:
        said = "; ".join(compressor_messages) or "no message"
        problems.append(EntryProblem(ProblemKind.CRITICAL, "", f"compressor exited {compressor_status}: {said}"))
    return problems


def _destination_failed(outcome: ArchiveOutcome, error: OSError) -> None:
    problem = DestinationError(outcome.partial_path, error).message
    outcome.problems.append(EntryProblem(ProblemKind.CRITICAL, "", problem))


class _ProgressReporter:
    """Passes the compressed stream's progress on, at most five times a second: (entries so far, bytes so far).

    Called by the stream's reader, which may be another thread (python-gnupg's copier when encrypting).
    """

    def __init__(self, on_progress: ProgressCallback, entries_so_far: Callable[[], int]) -> None:
        self.on_progress = on_progress
        self.entries_so_far = entries_so_far
        self._last_report = 0.0

    def __call__(self, size: int) -> None:
        if time.monotonic() - self._last_report > 0.2:
            self._last_report = time.monotonic()
            self.on_progress(self.entries_so_far(), size)
