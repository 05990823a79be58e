"""Exclude patterns: the Python matcher and GNU tar agree, and the shipped ClickHouse policy keeps every part.

docs/platform.md: with tar's default rules the incident's `store/*/*_*_*_*` matched every data part; an
exclude that removes data parts must fail a test. These tests run the real GNU tar over a real ClickHouse-like
layout.
"""

import subprocess
from pathlib import Path

import pytest

from coord.excludes import ExcludeMatcher
from coord.policy import load_policies

REPO = Path(__file__).resolve().parents[2]
TABLE = "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3"
DATA_PARTS = [f"{TABLE}/202601_223092_223092_0", f"{TABLE}/202601_1_8_1", f"{TABLE}/all_1_1_0", f"{TABLE}/all_2_2_0_5"]
TRANSIENT = [
    f"{TABLE}/tmp_insert_202601_9_9_0",
    f"{TABLE}/tmp_merge_202601_1_9_2",
    f"{TABLE}/tmp_mut_all_1_1_0_6",
    f"{TABLE}/tmp-fetch_all_3_3_0",
    f"{TABLE}/delete_tmp_all_0_0_0",
    f"{TABLE}/moving",
    "tmp",
    "shadow",
    "preprocessed_configs",
    "status",
]
KEPT = [*DATA_PARTS, f"{TABLE}/format_version.txt", f"{TABLE}/detached", "metadata/default/events.sql", "data/x/tmp"]


@pytest.fixture
def clickhouse_layout(tmp_path: Path) -> Path:
    root = tmp_path / "volume"
    for part in DATA_PARTS + [p for p in TRANSIENT if p != "status"]:
        (root / part).mkdir(parents=True)
        (root / part / "data.bin").write_bytes(b"x" * 10)
        (root / part / "columns.txt").write_text("n UInt64")
    (root / "status").write_text("PID: 1")
    (root / TABLE / "format_version.txt").write_text("1")
    (root / TABLE / "detached").mkdir()
    (root / "metadata/default").mkdir(parents=True)
    (root / "metadata/default/events.sql").write_text("ATTACH TABLE ...")
    (root / "data/x/tmp").mkdir(parents=True)  # a same-named entry deeper down: /tmp must not take it
    return root


def tar_members(root: Path, arguments: list[str]) -> set[str]:
    listing = subprocess.run(
        f"tar -C {root} -cf - {' '.join(repr(a) for a in arguments)} . | tar -tf -",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    ).stdout
    return {line.removeprefix("./").rstrip("/") for line in listing.splitlines()}


def shipped_clickhouse_matcher() -> ExcludeMatcher:
    policy = next(item.policy for item in load_policies(REPO / "policies") if item.name == "clickhouse")
    return ExcludeMatcher.of(policy.exclude)


def test_shipped_clickhouse_policy_keeps_every_data_part_and_drops_transient_paths(clickhouse_layout: Path) -> None:
    matcher = shipped_clickhouse_matcher()
    members = tar_members(clickhouse_layout, matcher.tar_arguments())
    for kept in KEPT:
        assert kept in members, f"{kept} missing from the archive"
        assert not matcher.excludes(kept)
    for part in DATA_PARTS:
        assert f"{part}/data.bin" in members
    for transient in TRANSIENT:
        assert transient not in members, f"{transient} should be excluded"
        assert matcher.excludes(transient)
        assert not any(m.startswith(transient + "/") for m in members)


def test_the_incident_pattern_under_tar_defaults_drops_every_part_but_not_under_coord(clickhouse_layout: Path) -> None:
    incident = "store/*/*_*_*_*"
    with_tar_defaults = tar_members(clickhouse_layout, [f"--exclude=./{incident}"])
    assert not any(part in with_tar_defaults for part in DATA_PARTS), "tar's '*' matches '/': parts are gone"
    # coord's rule: '*' stays inside one component, and this pattern names depth 3 (the uuid has no '_')
    with_coord = tar_members(clickhouse_layout, ExcludeMatcher.of([incident]).tar_arguments())
    assert all(part in with_coord for part in DATA_PARTS)


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["tmp"], "tmp", True),
        (["tmp"], "a/b/tmp", True),
        (["tmp"], "a/b/tmp/c", True),
        (["tmp"], "a/tmpx", False),
        (["/tmp"], "tmp/c", True),
        (["/tmp"], "a/tmp", False),
        (["store/*/*/tmp_*"], f"{TABLE}/tmp_merge_x/data.bin", True),
        (["store/*/*/tmp_*"], "store/263/tmp_x", False),
        (["store/*"], "store", False),
        (["*.log"], "var/log/app.log", True),
        (["[!a]*"], "b", True),
    ],
)
def test_matcher_semantics(patterns: list[str], path: str, excluded: bool) -> None:
    assert ExcludeMatcher.of(patterns).excludes(path) is excluded


@pytest.mark.parametrize("patterns", [["tmp"], ["/tmp"], ["store/*/*/tmp_*"], ["*.bin"], ["detached", "/status"]])
def test_python_matcher_agrees_with_tar(clickhouse_layout: Path, patterns: list[str]) -> None:
    matcher = ExcludeMatcher.of(patterns)
    everything = tar_members(clickhouse_layout, [])
    kept = tar_members(clickhouse_layout, matcher.tar_arguments())
    assert kept == {m for m in everything if m == "." or not matcher.excludes(m)}
