"""Retention: the rules (pure), and pruning real files in a temporary destination."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_coord, write_policy
from coord.policy import RetentionSettings
from coord.retention import StoredArchive, plan_retention, prune_volume

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def stored(days_ago: float, status: str = "ok", name: str | None = None) -> StoredArchive:
    started = NOW - timedelta(days=days_ago)
    name = name or f"v-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    return StoredArchive(Path(name), Path(name + ".manifest.json"), started, status)


def kept_ages(archives: list[StoredArchive], rules: RetentionSettings) -> list[float]:
    plan = plan_retention(archives, rules, NOW)
    assert len(plan.keep) + len(plan.delete) == len(archives)
    return [round((NOW - item.started_at).total_seconds() / 86400, 1) for item, _ in plan.keep]


def newest_first(*ages: float, status: str = "ok") -> list[StoredArchive]:
    return sorted((stored(age, status) for age in ages), key=lambda item: item.started_at, reverse=True)


def test_keep_last_keeps_the_newest_n() -> None:
    assert kept_ages(newest_first(0, 1, 2, 3, 4), RetentionSettings(keep_last=2)) == [0, 1]


def test_keep_days_keeps_the_recent_ones() -> None:
    assert kept_ages(newest_first(0.5, 2, 6.9, 7.1, 30), RetentionSettings(keep_days=7)) == [0.5, 2, 6.9]


def test_either_rule_keeps_an_archive() -> None:
    rules = RetentionSettings(keep_last=1, keep_days=3)
    assert kept_ages(newest_first(0, 1, 2, 5, 9), rules) == [0, 1, 2]
    assert kept_ages(newest_first(10, 20, 30), rules) == [10]


def test_the_newest_verified_archive_survives_any_rule() -> None:
    # keep_days 0 keeps nothing by age; the newest verified archive still stays.
    assert kept_ages(newest_first(40, 50), RetentionSettings(keep_days=0)) == [40]


def test_unverified_archives_neither_count_nor_protect() -> None:
    archives = sorted([stored(0, "failed"), stored(1), stored(2), stored(3)], key=lambda a: a.started_at, reverse=True)
    plan = plan_retention(archives, RetentionSettings(keep_last=2), NOW)
    assert [round((NOW - a.started_at).days) for a, _ in plan.keep] == [1, 2]
    assert "status failed" in plan.delete[0][1]
    assert "newest verified archive" in plan.keep[0][1]


def test_nothing_to_decide_on_an_empty_directory() -> None:
    plan = plan_retention([], RetentionSettings(keep_last=1), NOW)
    assert plan.keep == [] and plan.delete == []


def write_archive(directory: Path, started: datetime, status: str = "ok", volume: str = "v") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    archive.write_bytes(b"archive")
    manifest = archive.with_name(archive.name + ".manifest.json")
    manifest.write_text(json.dumps({"archive": archive.name, "started_at": started.isoformat(), "status": status}))
    return archive


def test_prune_deletes_archive_and_manifest_together_and_leaves_strangers_alone(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    archives = [write_archive(directory, NOW - timedelta(days=age)) for age in (0, 1, 2, 3)]
    (directory / "v-20260101T000000Z.tar.zst").write_bytes(b"no manifest")
    (directory / "v-20260601T120500Z.tar.zst.partial").write_bytes(b"being written")
    orphan = directory / "gone.tar.zst.manifest.json"
    orphan.write_text(json.dumps({"archive": "gone.tar.zst", "started_at": "2020-01-01T00:00:00+00:00"}))
    (directory / "broken.tar.zst.manifest.json").write_text("{not json")

    dry = prune_volume("v", directory, RetentionSettings(keep_last=2), NOW, dry_run=True)
    assert [Path(p).name for p, _ in dry.deleted] == [archives[2].name, archives[3].name]
    assert all(path.exists() for path in archives)

    result = prune_volume("v", directory, RetentionSettings(keep_last=2), NOW)
    assert result.errors == []
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [
            archives[0].name,
            archives[0].name + ".manifest.json",
            archives[1].name,
            archives[1].name + ".manifest.json",
            "v-20260101T000000Z.tar.zst",
            "v-20260601T120500Z.tar.zst.partial",
            "gone.tar.zst.manifest.json",
            "broken.tar.zst.manifest.json",
        ]
    )
    reasons = "\n".join(result.ignored)
    assert "no manifest" in reasons and "being written" in reasons
    assert "archive gone.tar.zst is missing" in reasons and "unreadable manifest" in reasons


def test_a_file_that_cannot_be_deleted_is_an_error_and_keeps_its_manifest(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    write_archive(directory, NOW)
    old = write_archive(directory, NOW - timedelta(days=9))
    subprocess.run(["chattr", "+i", str(old)], check=True)  # immutable: even root cannot delete it
    try:
        result = prune_volume("v", directory, RetentionSettings(keep_last=1), NOW)
    finally:
        subprocess.run(["chattr", "-i", str(old)], check=True)
    assert result.deleted == []
    assert result.errors == [f"cannot delete {old}: Operation not permitted"]
    assert old.exists() and old.with_name(old.name + ".manifest.json").exists()


def test_prune_command_uses_policies_and_dry_run(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    for age in (0, 1, 2):
        write_archive(dest / "app-data", NOW - timedelta(days=age), volume="app-data")
        write_archive(dest / "other", NOW - timedelta(days=age), volume="other")
    policies = tmp_path / "policies"
    write_policy(policies, "app", "volumes: ['app-*']\nstrategy: live\nretention: {keep_last: 1}\n")
    write_policy(policies, "rest", "volumes: [other]\nstrategy: live\n")

    dry = run_coord("prune", "--policies-dir", str(policies), "--dest", str(dest), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    [volume] = dry.json["volumes"]
    assert volume["volume"] == "app-data" and len(volume["deleted"]) == 2 and volume["dry_run"]
    assert len(list((dest / "app-data").iterdir())) == 6

    done = run_coord("prune", "--policies-dir", str(policies), "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    assert "app-data: deleted" in done.stdout and "keep" in done.stdout
    assert len(list((dest / "app-data").iterdir())) == 2
    assert len(list((dest / "other").iterdir())) == 6  # no retention in its policy: nothing deleted


@pytest.mark.parametrize("text", ["volumes: [v]\nstrategy: live\nretention: {keep_last: 0}\n"])
def test_prune_refuses_an_invalid_policy_before_deleting(tmp_path: Path, text: str) -> None:
    dest = tmp_path / "dest"
    for age in (0, 1, 2):
        write_archive(dest / "v", NOW - timedelta(days=age))
    write_policy(tmp_path / "policies", "p", text)
    result = run_coord("prune", "--policies-dir", str(tmp_path / "policies"), "--dest", str(dest))
    assert result.returncode == 2
    assert len(list((dest / "v").iterdir())) == 6
