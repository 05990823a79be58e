"""The consistency verdict of a live read: what tar saw, compared with the tree once tar is done.

tar lists a directory once, when it enters it. If a ClickHouse merge writes part C after that listing and then
deletes its sources A and B, the archive can hold neither A, B nor C (docs/platform.md: the silent-loss race).
So after the read coord lists every archived directory again and compares:

- seen(D)   = names tar archived in D, plus names it reported about (vanished, skipped, unreadable);
- lost(D)   = names in seen(D) no longer present, plus names that vanished before tar could read them;
- gained(D) = names present now that tar never saw (created after tar listed D), excluded names aside.

Verdicts:
- consistent: tar reported nothing changing and no directory lost or gained an entry;
- fuzzy: entries vanished, changed, appeared or disappeared, but no directory both lost and gained entries;
- at-risk: some directory both lost and gained entries (data may be in neither the old nor the new entry's
  archived copy), or a member shrank while read (tar padded it with zeros: damaged content).

The re-listing happens after tar ends, so a change in that short window counts too: the rule errs on the side
of at-risk, never of consistent.

A file rewritten in place keeps its name, so the listings cannot see it, and tar only says "file changed as we
read it" when the change falls inside its read of that very file: a writer that updates `a.dat` and then
`z.dat` while tar reads what lies between them leaves an archive holding the old `a.dat` beside the new `z.dat`.
So for a live read (`read_started_ns` given) the re-listing also takes each archived non-directory's ctime (lstat
through directory descriptors, never following a link): one after the read began means that file changed during
the read, and the verdict is fuzzy at best (the reason names a file and the count). ctime, not mtime: a program
can set mtime back (`touch -d`), never ctime. Under pause or stop such a file was changed by something other
than the quiesced containers (a host process, a container outside the group): the read was still not one instant.
A hard link of an archived file removed or added during the read moves its ctime too; that also counts (the rule
errs on the side of fuzzy). Snapshot reads are judged by Snapshot.modified_since_unpause instead.

With the policy's `consistency: clickhouse`, a MergeTree table directory (one holding format_version.txt) is
judged by its part names instead (clickhouse.py): at-risk only when a part that went missing during the read is
contained in no part the archive holds completely; when every such part is, the directory is harmless (fuzzy).
Other directories keep the generic rule.
"""

from __future__ import annotations

import errno
import marshal
import os
import stat
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO

from coord.clickhouse import FORMAT_VERSION_FILE, TableJudgement, judge_table_directory, parse_format_version
from coord.excludes import ExcludeMatcher
from coord.grammar import plural
from coord.policy import ConsistencyRule
from coord.problems import EntryProblem, ProblemKind, member_to_path

SAMPLE_SIZE = 20
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Verdict(StrEnum):
    CONSISTENT = "consistent"
    FUZZY = "fuzzy"
    AT_RISK = "at-risk"


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return (parent or "."), name


def _join(directory: str, name: str) -> str:
    return name if directory == "." else f"{directory}/{name}"


@dataclass
class _OpenDirectory:
    path: str
    archived: bool  # tar archived the directory itself (False only for a parent met out of tar's usual order)
    names: list[str] = field(default_factory=list)


class ArchivedTree:
    """The members tar wrote, directory by directory; built from tar's index output as it streams.

    tar --sort=name writes depth-first: a directory, then its entries in name order, each subdirectory's whole
    subtree before the next entry. So once a member's parent is not the directory tar entered last, every directory
    entered since is complete: its names go to a spool file (unlinked, in the temporary directory) and leave
    memory. Memory follows the depth times the largest directory, not the number of files (keeping every name
    cost 120 MB per million files: docs/benchmarks.md).
    """

    def __init__(self) -> None:
        self.count = 0
        self._open: list[_OpenDirectory] = []  # the directories tar is inside, the volume root first
        self._spool: IO[bytes] | None = None
        self._in_order = True

    def add_member(self, escaped_member: str) -> None:
        """Record one line of tar's index ('./store/263/x/' for a directory, escaped as tar prints it)."""
        self.add_members([escaped_member])

    def add_members(self, escaped_members: list[str]) -> None:
        """Record lines of tar's index in order (the hot loop of a live read: once per file)."""
        open_directories = self._open
        for member in escaped_members:
            path = member_to_path(member)
            if path != ".":
                parent, name = _split(path)
                top = open_directories[-1] if open_directories else None
                (top if top is not None and top.path == parent else self._enter(parent)).names.append(name)
            if member.endswith("/"):
                open_directories.append(_OpenDirectory(path, archived=True))
        self.count += len(escaped_members)

    @property
    def names_in_memory(self) -> int:
        """Names held for the directories tar is still inside (the rest are spooled)."""
        return sum(len(directory.names) for directory in self._open)

    def _enter(self, parent: str) -> _OpenDirectory:
        """The open directory `parent`, closing every directory entered after it."""
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth].path == parent:
                while len(self._open) > depth + 1:
                    self._close(self._open.pop())
                return self._open[depth]
        # Not among the open directories: not tar's depth-first order (never seen with --sort=name). Still
        # correct: `directories` then merges the spooled names per directory, at the old memory cost.
        self._in_order = False
        directory = _OpenDirectory(parent, archived=False)
        self._open.append(directory)
        return directory

    def _close(self, directory: _OpenDirectory) -> None:
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(buffering=1 << 20)  # noqa: SIM115 - closed by close()
        # Length-prefixed: marshal.load on a file reads in tiny steps, marshal.loads of one record is ~4x faster.
        record = marshal.dumps((directory.path, directory.archived, directory.names))
        self._spool.write(len(record).to_bytes(4, "little"))
        self._spool.write(record)

    def directories(self) -> Iterator[tuple[str, set[str]]]:
        """Each directory tar archived with the names it archived in it, once tar is done (in tar's order)."""
        while self._open:
            self._close(self._open.pop())
        if self._spool is None:
            return
        self._spool.flush()
        self._spool.seek(0)
        if self._in_order:
            for path, archived, names in self._records():
                if archived:
                    yield path, set(names)
            return
        merged: dict[str, set[str]] = defaultdict(set)
        archived_directories = set()
        for path, archived, names in self._records():
            merged[path].update(names)
            if archived:
                archived_directories.add(path)
        for path in sorted(archived_directories):
            yield path, merged[path]

    def _records(self) -> Iterator[tuple[str, bool, list[str]]]:
        assert self._spool is not None
        while header := self._spool.read(4):
            yield marshal.loads(self._spool.read(int.from_bytes(header, "little")))

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> ArchivedTree:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(frozen=True)
class DirectoryChange:
    directory: str
    lost: list[str]
    gained: list[str]

    def to_json(self) -> dict[str, object]:
        return {
            "directory": self.directory,
            "lost": self.lost[:SAMPLE_SIZE],
            "gained": self.gained[:SAMPLE_SIZE],
            "lost_count": len(self.lost),
            "gained_count": len(self.gained),
        }


@dataclass(frozen=True)
class Consistency:
    verdict: Verdict
    reasons: list[str]
    at_risk_directories: list[DirectoryChange]
    gained: int
    lost: int
    excluded: list[str]
    # consistency: clickhouse: table directories the generic rule would call at-risk, cleared by the part rule
    cleared_directories: list[DirectoryChange] = field(default_factory=list)
    # live reads: archived files whose ctime is after the read began (modified in place during the read)
    modified_count: int = 0
    modified_sample: list[str] = field(default_factory=list)


def _damaged_children(problems: list[EntryProblem]) -> dict[str, set[str]]:
    """For each directory, its children with a member at or below them that vanished or shrank while read."""
    damaged: dict[str, set[str]] = defaultdict(set)
    for problem in problems:
        if problem.kind not in (ProblemKind.VANISHED, ProblemKind.SHRANK) or not problem.path:
            continue
        path = problem.path
        while path and path != ".":
            parent, name = _split(path)
            damaged[parent].add(name)
            path = "" if parent == "." else parent
    return damaged


class _DirectoryOpener:
    """Opens directories below a root one component at a time, never following a link (O_NOFOLLOW at each step).

    tar's directories come depth-first, so the descriptors of the last path opened are kept and reused for the
    next one's common prefix: opening a directory costs about one open, not one per level.
    """

    def __init__(self, root: str) -> None:
        # The root itself is coord's (a volume's mount point, or /proc/<pid>/fd/<n> of the snapshot coord holds:
        # a link to follow); O_NOFOLLOW applies below it, inside what the containers write.
        self._chain: list[tuple[str, int]] = [(".", os.open(root, _DIRECTORY_FLAGS & ~os.O_NOFOLLOW))]

    def open(self, directory: str) -> int:
        """A descriptor of `directory` (relative, "." for the root), owned by the opener: do not close it.

        Raises FileNotFoundError when a component is gone, NotADirectoryError when one is now a file or a link.
        """
        components = [] if directory == "." else directory.split("/")
        keep = 1
        while keep < len(self._chain) and keep <= len(components):
            if self._chain[keep][0] != components[keep - 1]:
                break
            keep += 1
        while len(self._chain) > keep:
            os.close(self._chain.pop()[1])
        for name in components[keep - 1 :]:
            try:
                descriptor = os.open(name, _DIRECTORY_FLAGS, dir_fd=self._chain[-1][1])
            except OSError as error:
                if error.errno == errno.ELOOP:  # a symlink where the directory was: never followed
                    raise NotADirectoryError(error.errno, error.strerror, name) from None
                raise
            self._chain.append((name, descriptor))
        return self._chain[-1][1]

    def close(self) -> None:
        while self._chain:
            os.close(self._chain.pop()[1])


class _ModifiedFiles:
    """The archived non-directories whose ctime is after the read began: a count and a sample of paths."""

    def __init__(self, read_started_ns: int | None) -> None:
        # Not a tick earlier to allow for the coarse clock file times come from: files written just before the read
        # (a test tree, a container's last write before its pause) would all count. What that misses, a change in
        # the read's first clock tick, is small, and on kernels with fine-grained ctime (6.13+, once tar stat()ed
        # the file) nothing.
        self.threshold_ns = read_started_ns
        self.count = 0
        self.sample: list[str] = []

    def check(self, directory: str, listing: list[os.DirEntry[str]], archived: set[str]) -> None:
        """lstat each archived non-directory of `listing` (fstatat on the directory's descriptor, no link followed)."""
        if self.threshold_ns is None:
            return
        for entry in listing:
            if entry.name not in archived:
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the listing: lost, not modified
            if stat.S_ISDIR(status.st_mode) or status.st_ctime_ns <= self.threshold_ns:
                continue
            self.count += 1
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append(_join(directory, entry.name))

    def reason(self) -> str | None:
        if not self.count:
            return None
        return (
            f"{self.count} archived file(s) were modified during the read (ctime after the read began, e.g. "
            f"{min(self.sample)}): the archive does not show the volume at one instant"
        )


def _table_format_version(root: str, directory: str) -> int | None:
    """The format version of a MergeTree table directory, None when `directory` is not one."""
    try:
        with open(os.path.join(root, directory, FORMAT_VERSION_FILE), encoding="ascii", errors="replace") as handle:
            return parse_format_version(handle.read(64))
    except OSError:
        return None


def assess_consistency(
    root: str,
    tree: ArchivedTree,
    problems: list[EntryProblem],
    matcher: ExcludeMatcher,
    rule: ConsistencyRule = ConsistencyRule.GENERIC,
    *,
    read_started_ns: int | None = None,
) -> Consistency:
    """Compare what tar archived under `root` with the tree now, and give the verdict with its reasons.

    `rule` is the policy's `consistency`: under clickhouse, table directories are judged by their part names.
    `read_started_ns` (time.time_ns() taken before tar started; live reads only) turns on the ctime check: an
    archived non-directory whose ctime is later makes the verdict fuzzy at best. Raises OSError only when the
    root itself cannot be opened.
    """
    reported = _ReportedNames.of(problems, rule)
    comparison = _Comparison(root, matcher, rule, reported, _ModifiedFiles(read_started_ns))
    opener = _DirectoryOpener(root)
    try:
        for directory, archived in tree.directories():
            listing = _listing_now(opener, directory)
            if listing is not None:
                comparison.add(directory, archived, listing)
    finally:
        opener.close()
    return comparison.consistency(problems)


@dataclass(frozen=True)
class _ReportedNames:
    """What tar's messages say about entries, by directory: every name a message is about, the names that
    vanished, and (consistency: clickhouse only) the children with a member at or below them that vanished or
    shrank."""

    names: dict[str, set[str]]
    vanished: dict[str, set[str]]
    damaged: dict[str, set[str]]

    @classmethod
    def of(cls, problems: list[EntryProblem], rule: ConsistencyRule) -> _ReportedNames:
        names: dict[str, set[str]] = defaultdict(set)
        vanished: dict[str, set[str]] = defaultdict(set)
        for problem in problems:
            if not problem.path or problem.path == ".":
                continue
            parent, name = _split(problem.path)
            names[parent].add(name)
            if problem.kind is ProblemKind.VANISHED:
                vanished[parent].add(name)
        damaged = _damaged_children(problems) if rule is ConsistencyRule.CLICKHOUSE else {}
        return cls(names, vanished, damaged)


def _listing_now(opener: _DirectoryOpener, directory: str) -> list[os.DirEntry[str]] | None:
    """The entries of `directory` now: None when the directory itself went away (its parent records it as lost),
    none when it was replaced by a file or a link (what tar archived in it is gone)."""
    try:
        with os.scandir(opener.open(directory)) as entries:
            return list(entries)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return []


class _Comparison:
    """The archived directories compared with their listings now, one at a time (`add`), then the verdict."""

    def __init__(
        self,
        root: str,
        matcher: ExcludeMatcher,
        rule: ConsistencyRule,
        reported: _ReportedNames,
        modified: _ModifiedFiles,
    ) -> None:
        self.root = root
        self.matcher = matcher
        self.rule = rule
        self.reported = reported
        self.modified = modified
        self.changes: list[DirectoryChange] = []  # at-risk directories
        self.cleared: list[DirectoryChange] = []  # table directories the part rule cleared
        self.judged: list[tuple[str, TableJudgement]] = []
        self.excluded: list[str] = []
        self.gained = 0
        self.lost = 0

    def add(self, directory: str, archived: set[str], listing: list[os.DirEntry[str]]) -> None:
        """Compare the names tar archived in `directory` with its `listing` now."""
        present = {entry.name for entry in listing}
        self.modified.check(directory, listing, archived)
        seen = archived | self.reported.names.get(directory, set())
        # Only names tar did not see can be excluded ones (tar never touches those): match just these.
        excluded_here = {name for name in present - seen if self.matcher.excludes(_join(directory, name))}
        self.excluded.extend(_join(directory, name) for name in excluded_here)
        kept = present - excluded_here
        change = DirectoryChange(
            directory,
            lost=sorted((seen - kept) | self.reported.vanished.get(directory, set())),
            gained=sorted(kept - seen),
        )
        self.gained += len(change.gained)
        self.lost += len(change.lost)
        clickhouse = self.rule is ConsistencyRule.CLICKHOUSE
        format_version = _table_format_version(self.root, directory) if clickhouse else None
        if format_version is not None:
            self._judge_table(change, archived, kept, format_version)
        elif change.gained and change.lost:
            self.changes.append(change)

    def _judge_table(self, change: DirectoryChange, archived: set[str], kept: set[str], format_version: int) -> None:
        """Judge a MergeTree table directory by its part names (clickhouse.py) instead of the generic rule."""
        directory = change.directory
        judgement = judge_table_directory(
            archived=archived,
            vanished=self.reported.vanished.get(directory, set()),
            damaged=self.reported.damaged.get(directory, set()),
            after=kept,
            format_version=format_version,
            reported=self.reported.names.get(directory, set()),
        )
        self.judged.append((directory, judgement))
        if judgement.at_risk:
            missing = [part.name for part in judgement.missing] or judgement.other_lost
            self.changes.append(DirectoryChange(directory, missing, change.gained))
        elif change.gained and change.lost:
            self.cleared.append(change)

    def consistency(self, problems: list[EntryProblem]) -> Consistency:
        """The verdict and its reasons, once every archived directory was added; `problems` are tar's messages."""
        for found in (self.changes, self.cleared):
            found.sort(key=lambda change: change.directory)
        self.judged.sort(key=lambda item: item[0])
        shrank = sum(1 for p in problems if p.kind is ProblemKind.SHRANK)
        reasons = self._at_risk_reasons(shrank)
        at_risk = bool(self.changes or shrank)
        if not at_risk:
            reasons.extend(self._fuzzy_reasons(problems))
        modified_reason = self.modified.reason()
        if modified_reason:
            reasons.append(modified_reason)
        verdict = Verdict.AT_RISK if at_risk else Verdict.FUZZY if reasons else Verdict.CONSISTENT
        return Consistency(
            verdict=verdict,
            reasons=reasons,
            at_risk_directories=self.changes,
            gained=self.gained,
            lost=self.lost,
            excluded=sorted(self.excluded),
            cleared_directories=self.cleared,
            modified_count=self.modified.count,
            modified_sample=sorted(self.modified.sample),
        )

    def _at_risk_reasons(self, shrank: int) -> list[str]:
        """Directories that lost and gained entries (the part rule's findings first), members that shrank; and
        under consistency: clickhouse why the directories it cleared are harmless."""
        reasons = _clickhouse_reasons(self.judged, self.cleared) if self.rule is ConsistencyRule.CLICKHOUSE else []
        generic_changes = [c for c in self.changes if all(c.directory != d for d, _ in self.judged)]
        if generic_changes:
            reasons.insert(
                0,
                f"{len(generic_changes)} director{'y' if len(generic_changes) == 1 else 'ies'} lost entries and "
                f"gained new ones during the read (e.g. {generic_changes[0].directory}): data may be in neither copy",
            )
        if shrank:
            reasons.append(f"{shrank} file(s) shrank while read and were padded with zeros")
        return reasons

    def _fuzzy_reasons(self, problems: list[EntryProblem]) -> list[str]:
        """What makes a read that is not at-risk fuzzy, the ctime check aside: entries vanished, changed,
        appeared or deleted during the read."""
        reasons = []
        for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED):
            count = sum(1 for p in problems if p.kind is kind)
            if count:
                reasons.append(f"{count} entries {kind.value} during the read")
        if self.gained:
            reasons.append(f"{self.gained} entries appeared during the read")
        if self.lost:
            reasons.append(f"{self.lost} archived entries were deleted during the read")
        return reasons


def _clickhouse_reasons(judged: list[tuple[str, TableJudgement]], cleared: list[DirectoryChange]) -> list[str]:
    """The part rule's findings, in words: rows missing (at-risk), or why a racy table directory is harmless."""
    reasons = []
    missing = [(directory, part) for directory, judgement in judged for part in judgement.missing]
    if missing:
        directory, part = missing[0]
        tables = len({directory for directory, _ in missing})
        reasons.append(
            f"{plural(len(missing), 'part')} in {plural(tables, 'table')} went missing during the read and no part in "
            f"the archive contains them (e.g. {directory}/{part.describe()}): their rows are missing from the archive"
        )
    for directory, judgement in judged:
        if not judgement.missing and judgement.at_risk:
            reasons.append(
                f"{directory}: entries other than parts were lost and gained during the read "
                f"(e.g. {judgement.other_lost[0]}, {judgement.other_gained[0]}): data may be in neither copy"
            )
    if cleared:
        covered = sum(len(judgement.covered) for _, judgement in judged)
        reasons.append(
            f"{len(cleared)} table director{'y' if len(cleared) == 1 else 'ies'} lost and gained parts during the read "
            f"(the generic rule would say at-risk), but {_parts_contained(covered)} (consistency: clickhouse)"
        )
    return reasons


def _parts_contained(count: int) -> str:
    if count == 0:
        return "no part went missing"
    if count == 1:
        return "the 1 part that went missing is contained in a part the archive holds"
    return f"each of the {count:,} parts that went missing is contained in a part the archive holds"
