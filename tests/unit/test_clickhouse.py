"""The ClickHouse part rule: part-name grammar, containment, and the judgement of a table directory after a read."""

from pathlib import Path

import pytest

from coord.clickhouse import PartName, judge_table_directory, parse_format_version, parse_part_name
from coord.consistency import ArchivedTree, Verdict, assess_consistency
from coord.excludes import ExcludeMatcher
from coord.policy import ConsistencyRule
from coord.problems import EntryProblem, ProblemKind


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("all_1_1_0", PartName("all", 1, 1, 0)),
        ("202601_223092_223092_0", PartName("202601", 223092, 223092, 0)),
        ("0_1_192_103", PartName("0", 1, 192, 103)),
        ("1_201_296_19", PartName("1", 201, 296, 19)),
        ("all_1_1_0_5", PartName("all", 1, 1, 0, 5)),  # mutated
        ("202601_1_8_2_12", PartName("202601", 1, 8, 2, 12)),
        ("4f1e0c1d2b3a49588c7d6e5f4a3b2c1d_3_7_1", PartName("4f1e0c1d2b3a49588c7d6e5f4a3b2c1d", 3, 7, 1)),  # hash
        ("202601-3_1_2_1", PartName("202601-3", 1, 2, 1)),  # tuple partition key
        ("-1_4_4_0", PartName("-1", 4, 4, 0)),  # negative integer key
        ("all_0_5_999999999", PartName("all", 0, 5, 999999999)),
    ],
)
def test_part_names_parse(name: str, expected: PartName) -> None:
    assert parse_part_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "format_version.txt",
        "detached",
        "mutation_5.txt",
        "tmp_insert_all_1_1_0",
        "tmp_merge_202601_1_8_2",
        "tmp-fetch_all_1_1_0",  # its prefix is made of characters a partition id may hold
        "delete_tmp_all_1_1_0",
        "moving",
        "all_5_1_0",  # min block above max block
        "all_1_1",
        "all_1_1_0_5_6",
        "part_2026_1_1_0",  # a partition id never holds '_': this is no part
        "all_1_1_0.txt",
        "",
    ],
)
def test_other_names_are_not_parts(name: str) -> None:
    assert parse_part_name(name) is None


def test_legacy_names_follow_format_version_0() -> None:
    assert parse_part_name("20140317_20140323_2_2_0", format_version=0) == PartName("201403", 2, 2, 0)
    assert parse_part_name("20140301_20140331_1_9_2_11", format_version=0) == PartName("201403", 1, 9, 2, 11)
    assert parse_part_name("20140317_20140323_2_2_0") is None  # read as modern: min block above max block
    assert parse_part_name("all_1_1_0", format_version=0) is None
    assert (parse_format_version("1\n"), parse_format_version("0"), parse_format_version("x")) == (1, 0, None)


@pytest.mark.parametrize(
    ("outer", "inner", "contains"),
    [
        ("all_1_6_2", "all_6_6_0", True),  # a merge
        ("all_1_6_2", "all_1_5_1", True),
        ("all_1_6_2", "all_1_6_2", True),
        ("all_1_6_2", "all_7_7_0", False),  # outside the range
        ("all_1_6_2", "all_1_7_1", False),
        ("0_1_6_2", "1_6_6_0", False),  # another partition
        ("all_0_5_2", "all_0_4_2", False),  # same level, other range: never the product of a merge
        ("all_0_5_3", "all_0_4_2", True),
        ("all_1_1_0_5", "all_1_1_0", True),  # a mutation rewrites the same rows
        ("all_1_1_0", "all_1_1_0_5", False),  # the mutated version is newer
        ("all_1_6_2_9", "all_4_4_0_7", True),
        ("all_1_6_2", "all_4_4_0_7", False),
        ("all_0_9_999999999", "all_3_9_4", True),  # a drop range's covering part
    ],
)
def test_containment_is_clickhouses(outer: str, inner: str, contains: bool) -> None:
    assert parse_part_name(outer).contains(parse_part_name(inner)) is contains


def test_a_merged_away_part_deleted_during_the_read_is_covered_by_the_archived_merge() -> None:
    # Listed: two outdated parts and the part they were merged into. 0_6_6_0 was deleted before tar read it,
    # 0_1_5_1 after; an insert added 0_7_7_0. The generic rule says at-risk (lost and gained); nothing is missing.
    judgement = judge_table_directory(
        archived={"0_1_5_1", "0_1_6_2", "format_version.txt", "detached"},
        vanished={"0_6_6_0"},
        damaged=set(),
        after={"0_1_6_2", "0_7_7_0", "format_version.txt", "detached"},
    )
    assert not judgement.at_risk
    assert judgement.covered == ["0_6_6_0"]
    assert (judgement.missing, judgement.other_lost, judgement.other_gained) == ([], [], [])


def test_a_part_merged_after_the_listing_and_deleted_before_the_read_is_missing() -> None:
    judgement = judge_table_directory(
        archived={"0_1_5_1", "format_version.txt"},
        vanished={"0_6_6_0"},
        damaged=set(),
        after={"0_1_6_2", "format_version.txt"},
    )
    assert judgement.at_risk
    [missing] = judgement.missing
    assert (missing.name, missing.covered_now_by) == ("0_6_6_0", ["0_1_6_2"])
    assert missing.describe() == "0_6_6_0, now only in 0_1_6_2"


def test_a_part_of_another_partition_does_not_cover() -> None:
    judgement = judge_table_directory(
        archived={"0_1_10_2"}, vanished={"1_11_11_0"}, damaged=set(), after={"0_1_10_2", "1_11_12_1"}
    )
    assert [part.name for part in judgement.missing] == ["1_11_11_0"]


def test_mutations_cover_their_source_but_not_the_other_way_round() -> None:
    mutated_archived = judge_table_directory(
        archived={"all_1_1_0_5"}, vanished={"all_1_1_0"}, damaged=set(), after={"all_1_1_0_5", "mutation_5.txt"}
    )
    assert mutated_archived.covered == ["all_1_1_0"] and not mutated_archived.at_risk
    source_archived = judge_table_directory(
        archived={"all_1_1_0"}, vanished={"all_1_1_0_5"}, damaged=set(), after={"all_1_1_0_6"}
    )
    assert [part.name for part in source_archived.missing] == ["all_1_1_0_5"]


def test_an_incomplete_copy_needs_a_cover_and_is_none() -> None:
    # 0_1_6_2 was archived, but files of it vanished while tar read it (it was being deleted after a merge into
    # 0_1_7_3, written after the listing): neither 0_1_6_2 nor 0_6_6_0 has a complete copy in the archive.
    judgement = judge_table_directory(
        archived={"0_1_6_2"}, vanished={"0_6_6_0"}, damaged={"0_1_6_2"}, after={"0_1_7_3"}
    )
    assert [(p.name, p.covered_now_by) for p in judgement.missing] == [
        ("0_1_6_2", ["0_1_7_3"]),
        ("0_6_6_0", ["0_1_7_3"]),
    ]
    covered = judge_table_directory(
        archived={"0_1_6_2", "0_1_7_3"}, vanished=set(), damaged={"0_1_6_2"}, after={"0_1_7_3"}
    )
    assert covered.covered == ["0_1_6_2"] and not covered.at_risk


def test_a_part_read_completely_then_deleted_is_in_the_archive() -> None:
    judgement = judge_table_directory(archived={"all_1_1_0"}, vanished=set(), damaged=set(), after={"all_2_2_0"})
    assert (judgement.missing, judgement.covered, judgement.at_risk) == ([], [], False)


def test_a_vanished_part_nothing_covers_is_missing() -> None:
    judgement = judge_table_directory(
        archived={"all_2_2_0"}, vanished={"all_1_1_0"}, damaged=set(), after={"all_2_2_0"}
    )
    assert judgement.missing[0].describe() == "all_1_1_0, in no part now"


def test_entries_that_are_not_parts_follow_the_generic_rule_among_themselves() -> None:
    one_side = judge_table_directory(
        archived={"tmp_insert_all_3_3_0", "all_1_2_1"}, vanished=set(), damaged=set(), after={"all_1_2_1", "all_3_3_0"}
    )
    assert (one_side.other_lost, one_side.other_gained, one_side.at_risk) == (["tmp_insert_all_3_3_0"], [], False)
    both = judge_table_directory(
        archived={"mutation_5.txt", "all_1_2_1"}, vanished=set(), damaged=set(), after={"all_1_2_1", "mutation_6.txt"}
    )
    assert (both.other_lost, both.other_gained, both.at_risk) == (["mutation_5.txt"], ["mutation_6.txt"], True)


# assess_consistency on a real directory: the table directory after the read, and what tar saw of it.
TABLE = "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3"


def table_after_read(root: Path, parts: list[str]) -> None:
    table = root / TABLE
    table.mkdir(parents=True)
    (table / "format_version.txt").write_text("1")
    for part in parts:
        (table / part).mkdir()
        (table / part / "data.bin").write_text(part)


def archived_tree(members: list[str]) -> ArchivedTree:
    tree = ArchivedTree()
    for member in ["./", "./store/", "./store/263/", f"./{TABLE}/", f"./{TABLE}/format_version.txt", *members]:
        tree.add_member(member)
    return tree


def assess(root: Path, members: list[str], problems: list[EntryProblem], rule: ConsistencyRule):
    return assess_consistency(str(root), archived_tree(members), problems, ExcludeMatcher.of([]), rule)


def test_a_harmless_race_is_at_risk_under_generic_and_fuzzy_under_clickhouse(tmp_path: Path) -> None:
    table_after_read(tmp_path, ["0_1_6_2", "0_7_7_0"])
    members = [f"./{TABLE}/{part}/{name}" for part in ("0_1_5_1", "0_1_6_2") for name in ("", "data.bin")]
    problems = [EntryProblem(ProblemKind.VANISHED, f"{TABLE}/0_6_6_0", "File removed before we read it")]

    generic = assess(tmp_path, members, problems, ConsistencyRule.GENERIC)
    assert generic.verdict is Verdict.AT_RISK

    clickhouse = assess(tmp_path, members, problems, ConsistencyRule.CLICKHOUSE)
    assert clickhouse.verdict is Verdict.FUZZY
    assert clickhouse.at_risk_directories == []
    assert [change.directory for change in clickhouse.cleared_directories] == [TABLE]
    assert clickhouse.reasons[0] == (
        "1 table directory lost and gained parts during the read (the generic rule would say at-risk), but "
        "the 1 part that went missing is contained in a part the archive holds (consistency: clickhouse)"
    )


def test_rows_missing_are_at_risk_under_clickhouse(tmp_path: Path) -> None:
    table_after_read(tmp_path, ["0_1_6_2"])
    members = [f"./{TABLE}/0_1_5_1/", f"./{TABLE}/0_1_5_1/data.bin"]
    problems = [EntryProblem(ProblemKind.VANISHED, f"{TABLE}/0_6_6_0", "File removed before we read it")]
    result = assess(tmp_path, members, problems, ConsistencyRule.CLICKHOUSE)
    assert result.verdict is Verdict.AT_RISK
    [change] = result.at_risk_directories
    assert (change.directory, change.lost, change.gained) == (TABLE, ["0_6_6_0"], ["0_1_6_2"])
    assert result.reasons[0] == (
        f"1 part in 1 table went missing during the read and no part in the archive contains them "
        f"(e.g. {TABLE}/0_6_6_0, now only in 0_1_6_2): their rows are missing from the archive"
    )


def test_a_file_vanished_inside_a_part_makes_its_copy_incomplete(tmp_path: Path) -> None:
    table_after_read(tmp_path, ["0_1_7_3"])
    members = [f"./{TABLE}/0_1_6_2/", f"./{TABLE}/0_1_6_2/columns.txt"]
    problems = [EntryProblem(ProblemKind.VANISHED, f"{TABLE}/0_1_6_2/data.bin", "File removed before we read it")]
    assert assess(tmp_path, members, problems, ConsistencyRule.GENERIC).verdict is Verdict.AT_RISK
    result = assess(tmp_path, members, problems, ConsistencyRule.CLICKHOUSE)
    assert result.verdict is Verdict.AT_RISK
    assert result.at_risk_directories[0].lost == ["0_1_6_2"]


def test_directories_outside_tables_keep_the_generic_rule(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "new.sql").write_text("")
    tree = ArchivedTree()
    for member in ["./", "./store/", "./store/old.sql"]:
        tree.add_member(member)
    result = assess_consistency(str(tmp_path), tree, [], ExcludeMatcher.of([]), ConsistencyRule.CLICKHOUSE)
    assert result.verdict is Verdict.AT_RISK
    assert result.reasons == [
        "1 directory lost entries and gained new ones during the read (e.g. store): data may be in neither copy"
    ]
