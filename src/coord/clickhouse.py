"""ClickHouse-aware consistency: is a MergeTree part that went missing during a live read still in the archive?

A MergeTree table directory (the one holding `format_version.txt`) holds one directory per data part, named
`<partition_id>_<min_block>_<max_block>_<level>[_<mutation>]`. Each INSERT gets the next block number; a merge
writes a new part covering its sources' block range at a higher level, and ClickHouse deletes the sources once
they are outdated; a mutation rewrites a part under the same range with a `_<mutation>` suffix. So the names alone
tell whether one part holds every row of another: `contains` below is ClickHouse's own rule
(MergeTreePartInfo::contains).

The generic rule (consistency.py) calls a directory at-risk when it both lost and gained entries during the read.
In a table directory that also happens when nothing is missing: an INSERT adds a part while an old part, already
merged into a part tar archived, is deleted. `judge_table_directory` looks at the part names instead: every part
that went missing during the read (deleted before or while tar read it, or archived incompletely) must be
contained in a part that tar archived completely. If one is contained only in parts that are not in the archive
(written after tar listed the directory), its rows are in neither copy: at-risk.

Entries that are not parts (`format_version.txt`, `detached/`, `mutation_*.txt`, `tmp_*`, `delete_tmp_*`...) are
not judged by the part rule; the generic rule applies to them among themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

FORMAT_VERSION_FILE = "format_version.txt"
# ClickHouse's levels for "virtual" covering parts (drop ranges): a part at this level contains any part in range.
MAX_LEVELS = (999_999_999, 4_294_967_295)
# Directories with these prefixes are never parts, even when the rest parses (`tmp-fetch_all_1_1_0` would: its
# prefix is made of characters a partition id may use). ClickHouse skips them on load the same way.
NOT_PART_PREFIXES = ("tmp", "delete_tmp_", "detached", "moving")

# Partition ids are `[A-Za-z0-9-]+` (ClickHouse validates them: `all`, `202601`, `202601-3` for a tuple key, a
# 32-hex hash for other keys), so they never contain `_`: the name is read from the right as 3 or 4 numbers
# after a partition id without `_`.
_MODERN = re.compile(r"^(?P<partition>[A-Za-z0-9-]+)_(?P<min>\d+)_(?P<max>\d+)_(?P<level>\d+)(?:_(?P<mutation>\d+))?$")
# format_version 0 (tables created with the deprecated `MergeTree(date, ...)` syntax): `<min date>_<max date>_...`,
# partitioned by month.
_LEGACY = re.compile(
    r"^(?P<min_date>\d{8})_(?P<max_date>\d{8})_(?P<min>\d+)_(?P<max>\d+)_(?P<level>\d+)(?:_(?P<mutation>\d+))?$"
)


@dataclass(frozen=True, order=True)
class PartName:
    partition: str
    min_block: int
    max_block: int
    level: int
    mutation: int = 0

    def contains(self, other: PartName) -> bool:
        """True when this part holds every row of `other` (ClickHouse's MergeTreePartInfo::contains)."""
        strictly = (
            (self.min_block, self.max_block) == (other.min_block, other.max_block)
            or self.level > other.level
            or self.level in MAX_LEVELS
        )
        return (
            self.partition == other.partition
            and self.min_block <= other.min_block
            and self.max_block >= other.max_block
            and self.level >= other.level
            and self.mutation >= other.mutation
            and strictly
        )


def parse_part_name(name: str, format_version: int = 1) -> PartName | None:
    """The part a directory name denotes, or None when the name is not a part's (tmp_*, detached, files...).

    `format_version` is the content of the table's format_version.txt: 0 is the legacy date-range naming.
    """
    if name.startswith(NOT_PART_PREFIXES):
        return None
    match = (_LEGACY if format_version == 0 else _MODERN).match(name)
    if match is None:
        return None
    partition = match["min_date"][:6] if format_version == 0 else match["partition"]
    part = PartName(partition, int(match["min"]), int(match["max"]), int(match["level"]), int(match["mutation"] or 0))
    return part if part.min_block <= part.max_block else None


def parse_format_version(text: str) -> int | None:
    """The number in a table's format_version.txt, None when it holds something else."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else None


@dataclass(frozen=True)
class MissingPart:
    """A part whose rows no completely archived part holds."""

    name: str
    covered_now_by: list[str]  # parts present after the read that hold its rows (written after tar listed them)

    def describe(self) -> str:
        if self.covered_now_by:
            return f"{self.name}, now only in {', '.join(self.covered_now_by)}"
        return f"{self.name}, in no part now"


@dataclass(frozen=True)
class TableJudgement:
    """What the part rule found in one table directory."""

    missing: list[MissingPart] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)  # went missing, but an archived part holds their rows
    other_lost: list[str] = field(default_factory=list)  # entries that are not parts
    other_gained: list[str] = field(default_factory=list)

    @property
    def at_risk(self) -> bool:
        return bool(self.missing) or bool(self.other_lost and self.other_gained)


def judge_table_directory(
    archived: Set[str],
    vanished: Set[str],
    damaged: Set[str],
    after: Set[str],
    format_version: int = 1,
    reported: Iterable[str] = (),
) -> TableJudgement:
    """Judge one table directory after a live read.

    Given the names tar archived in it, the names tar reported vanished before or while it read them, the archived
    names with a file at or below them that vanished or shrank while tar read it (an incomplete copy; a file that
    only "changed" was read whole, as parts are immutable), the names in it after the read (excluded ones left
    out) and other names tar reported about (skipped...).
    Returns the parts whose rows are missing from the archive, the ones that went missing harmlessly, and the
    non-part entries lost and gained (judged by the generic rule among themselves).
    """
    seen = set(archived) | set(vanished) | set(reported)
    lost = (seen - set(after)) | set(vanished)
    gained = set(after) - seen

    def parse(name: str) -> PartName | None:
        return parse_part_name(name, format_version)

    complete = [part for name in archived - vanished - damaged if (part := parse(name)) is not None]
    present = {name: part for name in after if (part := parse(name)) is not None}
    missing: list[MissingPart] = []
    covered: list[str] = []
    # A part needs a cover when the archive lacks a complete copy of it: it vanished, or its copy is damaged.
    # A part deleted after tar read it completely is in the archive: nothing to check.
    for name in sorted((lost | damaged) - (archived - vanished - damaged)):
        part = parse(name)
        if part is None:
            continue
        if any(other.contains(part) for other in complete):
            covered.append(name)
        else:
            covers = sorted(other_name for other_name, other in present.items() if other.contains(part))
            missing.append(MissingPart(name, covers))
    return TableJudgement(
        missing=missing,
        covered=covered,
        other_lost=sorted(name for name in lost if parse(name) is None),
        other_gained=sorted(name for name in gained if parse(name) is None),
    )
