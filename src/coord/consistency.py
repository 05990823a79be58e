"""The consistency verdict of a live read: what tar saw, compared with the tree once tar is done.

tar lists a directory once, when it enters it. If a ClickHouse merge writes part C after that listing and then
deletes its sources A and B, the archive can hold neither A, B nor C (facts.md: the silent-loss race). So after
the read coord lists every archived directory again and compares:

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

With the policy's `consistency: clickhouse`, a MergeTree table directory (one holding format_version.txt) is
judged by its part names instead (clickhouse.py): at-risk only when a part that went missing during the read is
contained in no part the archive holds completely; when every such part is, the directory is harmless (fuzzy).
Other directories keep the generic rule.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from coord.clickhouse import FORMAT_VERSION_FILE, TableJudgement, judge_table_directory, parse_format_version
from coord.excludes import ExcludeMatcher
from coord.policy import ConsistencyRule
from coord.problems import EntryProblem, ProblemKind, member_to_path

SAMPLE_SIZE = 20


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
class ArchivedTree:
    """The members tar wrote, grouped by directory; built from tar's index output as it streams."""

    children: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    directories: set[str] = field(default_factory=set)
    count: int = 0

    def add_member(self, escaped_member: str) -> None:
        """Record one line of tar's index ('./store/263/x/' for a directory, escaped as tar prints it)."""
        self.count += 1
        path = member_to_path(escaped_member)
        if escaped_member.endswith("/"):
            self.directories.add(path)
        if path != ".":
            parent, name = _split(path)
            self.children[parent].add(name)


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
) -> Consistency:
    """Compare what tar archived under `root` with the tree now, and give the verdict with its reasons.

    `rule` is the policy's `consistency`: under clickhouse, table directories are judged by their part names.
    """
    reported: dict[str, set[str]] = defaultdict(set)
    vanished: dict[str, set[str]] = defaultdict(set)
    for problem in problems:
        if not problem.path or problem.path == ".":
            continue
        parent, name = _split(problem.path)
        reported[parent].add(name)
        if problem.kind is ProblemKind.VANISHED:
            vanished[parent].add(name)
    damaged = _damaged_children(problems) if rule is ConsistencyRule.CLICKHOUSE else {}

    changes: list[DirectoryChange] = []
    cleared: list[DirectoryChange] = []
    judged: list[tuple[str, TableJudgement]] = []
    excluded: list[str] = []
    total_gained = total_lost = 0
    for directory in sorted(tree.directories):
        try:
            with os.scandir(os.path.join(root, directory)) as entries:
                present = {entry.name for entry in entries}
        except FileNotFoundError:
            continue  # the directory itself went away: its parent records it as lost
        except NotADirectoryError:
            continue
        kept = set()
        for name in present:
            if matcher.excludes(_join(directory, name)):
                excluded.append(_join(directory, name))
            else:
                kept.add(name)
        seen = tree.children.get(directory, set()) | reported.get(directory, set())
        gained = sorted(kept - seen)
        lost = sorted((seen - kept) | vanished.get(directory, set()))
        total_gained += len(gained)
        total_lost += len(lost)
        format_version = _table_format_version(root, directory) if rule is ConsistencyRule.CLICKHOUSE else None
        if format_version is not None:
            judgement = judge_table_directory(
                archived=tree.children.get(directory, set()),
                vanished=vanished.get(directory, set()),
                damaged=damaged.get(directory, set()),
                after=kept,
                format_version=format_version,
                reported=reported.get(directory, set()),
            )
            judged.append((directory, judgement))
            if judgement.at_risk:
                missing = [part.name for part in judgement.missing] or judgement.other_lost
                changes.append(DirectoryChange(directory, missing, gained))
            elif gained and lost:
                cleared.append(DirectoryChange(directory, lost, gained))
        elif gained and lost:
            changes.append(DirectoryChange(directory, lost, gained))

    kinds = {kind: sum(1 for p in problems if p.kind is kind) for kind in ProblemKind}
    reasons = _clickhouse_reasons(judged, cleared) if rule is ConsistencyRule.CLICKHOUSE else []
    generic_changes = [c for c in changes if all(c.directory != d for d, _ in judged)]
    if generic_changes:
        reasons.insert(
            0,
            f"{len(generic_changes)} director{'y' if len(generic_changes) == 1 else 'ies'} lost entries and gained "
            f"new ones during the read (e.g. {generic_changes[0].directory}): data may be in neither copy",
        )
    if kinds[ProblemKind.SHRANK]:
        reasons.append(f"{kinds[ProblemKind.SHRANK]} file(s) shrank while read and were padded with zeros")
    if changes or kinds[ProblemKind.SHRANK]:
        verdict = Verdict.AT_RISK
    else:
        for kind in (ProblemKind.VANISHED, ProblemKind.CHANGED):
            if kinds[kind]:
                reasons.append(f"{kinds[kind]} entries {kind.value} during the read")
        if total_gained:
            reasons.append(f"{total_gained} entries appeared during the read")
        if total_lost:
            reasons.append(f"{total_lost} archived entries were deleted during the read")
        verdict = Verdict.FUZZY if reasons else Verdict.CONSISTENT
    return Consistency(
        verdict=verdict,
        reasons=reasons,
        at_risk_directories=changes,
        gained=total_gained,
        lost=total_lost,
        excluded=sorted(excluded),
        cleared_directories=cleared,
    )


def _clickhouse_reasons(judged: list[tuple[str, TableJudgement]], cleared: list[DirectoryChange]) -> list[str]:
    """The part rule's findings, in words: rows missing (at-risk), or why a racy table directory is harmless."""
    reasons = []
    missing = [(directory, part) for directory, judgement in judged for part in judgement.missing]
    if missing:
        directory, part = missing[0]
        tables = len({directory for directory, _ in missing})
        reasons.append(
            f"{len(missing)} part(s) in {tables} table(s) went missing during the read and no part in the archive "
            f"contains them (e.g. {directory}/{part.describe()}): their rows are missing from the archive"
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
            f"(the generic rule would say at-risk), but each of the {covered} part(s) that went missing is contained "
            f"in a part the archive holds (consistency: clickhouse)"
        )
    return reasons
