"""The anomaly rules (coord.anomaly): a sudden fall of an archive's size or entry count from the volume's last
successful one is a warning with the figures; an `expect:` pattern that no archived entry matches fails the
volume. The run-level tests drive run_and_record with the in-memory engine; GNU tar and zstd read real files."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.fakes import FakeEngine

from coord.anomaly import Baseline, count_expected, drop_warning, missing_expected
from coord.consistency import ArchivedTree
from coord.history import MIGRATIONS, History
from coord.manifest import read_manifest
from coord.policy import parse_policy
from coord.recording import run_and_record
from coord.render import run_summary
from coord.results import VolumeStatus
from coord.runner import BackupRequest

BASELINE = Baseline(run_id=7, started_at=datetime(2026, 11, 30, 3, 0, tzinfo=UTC), size=2_000_000, entries=1_000)


def test_a_fall_beyond_max_drop_is_told_with_both_figures() -> None:
    warning = drop_warning(35_000, 40, BASELINE, 0.5)
    assert warning == (
        "anomaly: size fell by 98% (2.0 MB -> 35.0 KB) and entries fell by 96% (1,000 -> 40) since the last "
        "successful backup (run 7, 2026-11-30 03:00:00Z), more than anomaly.max_drop 50%: check the policy's "
        "exclude patterns and what the volume holds"
    )


@pytest.mark.parametrize(
    ("size", "entries", "max_drop", "found"),
    [
        (1_000_001, 500, 0.5, None),  # exactly half the entries: not more than 50%
        (999_999, 1_000, 0.5, "size fell by 50% (2.0 MB -> 1000.0 KB)"),
        (2_000_000, 499, 0.5, "entries fell by 50% (1,000 -> 499)"),  # 50.1%
        (10, 1, 1.0, None),  # 1 turns the check off
        (5_000_000, 9_000, 0.0, None),  # growth is never an anomaly
    ],
)
def test_the_threshold(size: int, entries: int, max_drop: float, found: str | None) -> None:
    warning = drop_warning(size, entries, BASELINE, max_drop)
    assert (warning is None) if found is None else (warning is not None and found in warning)


def test_nothing_to_compare_with_is_no_finding() -> None:
    assert drop_warning(1, 1, None, 0.5) is None
    old_row = Baseline(1, BASELINE.started_at, 1_000_000, entries=None)  # recorded before entries were kept
    assert drop_warning(2_000_000, 1, old_row, 0.5) is None


def tree_of(members: list[str]) -> ArchivedTree:
    tree = ArchivedTree()
    tree.add_members(members)
    return tree


def test_expected_patterns_count_the_entries_at_and_below_a_match() -> None:
    members = [
        "./",
        "./format_version.txt",
        "./store/",
        "./store/263/",
        "./store/263/u1/",
        "./store/263/u1/all_1_1_0/",
        "./store/263/u1/all_1_1_0/data.bin",
        "./store/263/u1/all_1_1_0/checksums.txt",
        "./store/263/u1/all_2_2_0/",
        "./store/263/u1/format_version.txt",
    ]
    with tree_of(members) as tree:
        counts = count_expected(tree, ["store/*/*/*_*_*_*", "metadata/*.sql", "format_version.txt"])
    assert counts == {"store/*/*/*_*_*_*": 4, "metadata/*.sql": 0, "format_version.txt": 2}
    assert missing_expected(counts) == [
        "expect: no archived entry matches 'metadata/*.sql' (the policy says the volume must hold such entries): "
        "the archive was not kept; check the policy's exclude patterns and what the volume holds"
    ]


def test_expect_and_anomaly_are_policy_keys_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "ch.yaml"
    text = "volumes: [v]\nstrategy: live\nexpect: [store/**/x]\nanomaly:\n  max_drop: 2\n  max_dorp: 1\n"
    policy, problems = parse_policy(path, text)
    assert policy is None
    assert any(problem.startswith(f"{path}:3: expect") and "'**' is not supported" in problem for problem in problems)
    assert any(f"{path}:5: anomaly.max_drop: " in problem for problem in problems), problems
    assert any(f"{path}:6: anomaly.max_dorp: unknown key" in problem for problem in problems), problems
    policy, problems = parse_policy(path, "volumes: [v]\nstrategy: live\nexpect: [store/*/*/*_*_*_*]\n")
    assert problems == [] and policy is not None
    assert (policy.expect, policy.anomaly.max_drop) == (["store/*/*/*_*_*_*"], 0.5)


# A run whose excludes suddenly drop every ClickHouse part ---------------------------------------------------------

PART_BYTES = 200_000


def clickhouse_volume(engine: FakeEngine) -> Path:
    """A ClickHouse-shaped volume: metadata, and one table with six parts of incompressible data."""
    root = engine.add_volume("ch", {"metadata/default/events.sql": "ATTACH TABLE events ...\n"})
    table = root / "store" / "263" / "2637f2a1-aaaa-bbbb-cccc-000000000001"
    table.mkdir(parents=True)
    (table / "format_version.txt").write_text("1")
    for block in range(1, 7):
        part = table / f"all_{block}_{block}_0"
        part.mkdir()
        (part / "data.bin").write_bytes(os.urandom(PART_BYTES))
        (part / "checksums.txt").write_text("checksums\n")
        (part / "columns.txt").write_text("columns\n")
    return root


def backup(tmp_path: Path, engine: FakeEngine, policy_text: str) -> tuple[VolumeStatus, list[str], list[str]]:
    """Write the policy, run and record a backup; returns the volume's status, errors and the summary lines."""
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "clickhouse.yaml").write_text("volumes: [ch]\nstrategy: live\n" + policy_text)
    request = BackupRequest(policies_dir=policies, dest=tmp_path / "dest", state_dir=tmp_path / "state")
    result, _ = run_and_record(request, lambda: engine, History(tmp_path / "state"))
    volume = result.volumes[0]
    return volume.status, volume.errors, run_summary(result)


BAD_EXCLUDE = "exclude: [store/*/*/*_*_*_*]\n"  # meant for tmp_* parts, matches every part


def test_excludes_that_suddenly_drop_every_part_warn_with_the_figures(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path / "volumes")
    clickhouse_volume(engine)
    status, errors, _ = backup(tmp_path, engine, "")
    assert (status, errors) == (VolumeStatus.OK, [])
    status, errors, summary = backup(tmp_path, engine, BAD_EXCLUDE)
    assert status is VolumeStatus.WARNING
    assert len(errors) == 1 and errors[0].startswith("anomaly: size fell by 99% (1.2 MB -> ")
    assert "and entries fell by 75% (32 -> 8)" in errors[0]
    assert "since the last successful backup (run 1, " in errors[0]
    assert any(errors[0] in line for line in summary), summary  # the run's summary says it, as the CLI prints it
    rows = History(tmp_path / "state").volume_runs()
    assert [(row.status, row.entries) for row in rows] == [("ok", 32), ("warning", 8)]
    status, errors, _ = backup(tmp_path, engine, BAD_EXCLUDE)  # the small archive is now the baseline
    assert (status, errors) == (VolumeStatus.OK, [])


def test_expected_parts_missing_fail_the_volume_and_keep_no_archive(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path / "volumes")
    clickhouse_volume(engine)
    expect = "expect: [store/*/*/*_*_*_*, metadata/*/*.sql]\n"
    status, errors, _ = backup(tmp_path, engine, expect)
    assert (status, errors) == (VolumeStatus.OK, [])
    (archive,) = (tmp_path / "dest" / "ch").glob("*.tar.zst")
    assert read_manifest(Path(f"{archive}.manifest.json"))["expected"] == {
        "store/*/*/*_*_*_*": 24,
        "metadata/*/*.sql": 1,
    }
    status, errors, summary = backup(tmp_path, engine, expect + BAD_EXCLUDE)
    assert status is VolumeStatus.FAILED
    assert errors == [
        "expect: no archived entry matches 'store/*/*/*_*_*_*' (the policy says the volume must hold such "
        "entries): the archive was not kept; check the policy's exclude patterns and what the volume holds"
    ]
    assert list((tmp_path / "dest" / "ch").glob("*.tar.zst")) == [archive]  # only the first run's archive
    assert summary[0].startswith("FAIL ch (policy clickhouse, live)")


def test_an_old_history_gains_the_entries_column(tmp_path: Path) -> None:
    """A history written by schema version 1 is migrated: its rows have no entry count, new ones do."""
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "history.sqlite3") as connection:
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("PRAGMA user_version = 1")
    history = History(state)
    assert history.last_success_of("ch") is None  # migrated on open, then read
    with sqlite3.connect(state / "history.sqlite3") as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(volume_runs)")]
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert "entries" in columns and "drills" in tables
