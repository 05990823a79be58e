"""Retention: the rules (pure), and pruning real files in a temporary destination."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import run_coord, write_policy
from coord.policy import RetentionSettings
from coord.retention import (
    FUTURE_TOLERANCE,
    ArchiveHashes,
    StoredArchive,
    WrittenArchive,
    choose_latest,
    plan_retention,
    prune_volume,
)

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


def write_archive(directory: Path, started: datetime, status: str = "ok", volume: str | None = None) -> Path:
    """An archive file and its manifest as coord writes them (name, volume, size, sha256), in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    volume = volume or directory.name
    archive = directory / f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    content = f"archive of {volume} started {started.isoformat()}".encode()
    archive.write_bytes(content)
    manifest = archive.with_name(archive.name + ".manifest.json")
    document = {
        "volume": volume,
        "archive": archive.name,
        "started_at": started.isoformat(),
        "status": status,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    manifest.write_text(json.dumps(document))
    return archive


def test_prune_deletes_archive_and_manifest_together_and_leaves_strangers_alone(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    archives = [write_archive(directory, NOW - timedelta(days=age)) for age in (0, 1, 2, 3)]
    (directory / "v-20260101T000000Z.tar.zst").write_bytes(b"no manifest")
    (directory / "v-20260601T120500Z.tar.zst.partial").write_bytes(b"being written")
    orphan = directory / "gone.tar.zst.manifest.json"
    orphan.write_text(json.dumps({"archive": "gone.tar.zst", "started_at": "2020-01-01T00:00:00+00:00"}))
    (directory / "broken.tar.zst.manifest.json").write_text("{not json")

    dry = prune_volume(directory, RetentionSettings(keep_last=2), NOW, dry_run=True)
    assert [Path(p).name for p, _ in dry.deleted] == [archives[2].name, archives[3].name]
    assert all(path.exists() for path in archives)

    result = prune_volume(directory, RetentionSettings(keep_last=2), NOW)
    assert result.errors == [] and result.volume == dry.volume == "v"  # the directory's name is the volume's
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
        result = prune_volume(directory, RetentionSettings(keep_last=1), NOW)
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


# --- Retention never trusts a file's name or a manifest's claim alone (issue 11, findings 3 and 4) ---


def manifest_of(archive: Path) -> Path:
    return archive.with_name(archive.name + ".manifest.json")


def rewrite_manifest(archive: Path, **changes: object) -> None:
    manifest = manifest_of(archive)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **changes}))


def names(pairs: list[tuple[str, str]]) -> list[str]:
    return [Path(path).name for path, _ in pairs]


def written_from(archive: Path) -> WrittenArchive:
    """What the run that wrote `archive` knows of it (its own read-back), as the runner passes it."""
    document = json.loads(manifest_of(archive).read_text())
    return WrittenArchive(archive, document["size"], document["sha256"])


def test_plan_a_future_dated_archive_takes_no_place_and_is_not_the_newest() -> None:
    future, today, yesterday = stored(-30), stored(0), stored(1)
    plan = plan_retention([future, today, yesterday], RetentionSettings(keep_last=1), NOW)
    assert [(item, why.split(";")[0]) for item, why in plan.keep] == [
        (future, f"dated in the future (started_at {future.started_at.isoformat()}): not counted"),
        (today, "newest verified archive (always kept)"),
    ]
    assert [item for item, _ in plan.delete] == [yesterday]


def test_plan_a_start_time_within_the_tolerance_still_counts() -> None:
    almost_now = stored(-(FUTURE_TOLERANCE / 2) / timedelta(days=1))
    plan = plan_retention([almost_now, stored(1)], RetentionSettings(keep_last=1), NOW)
    assert plan.keep[0][0] is almost_now and "newest verified" in plan.keep[0][1]
    assert len(plan.delete) == 1


def test_plan_an_archive_listed_twice_is_kept_once_and_never_deleted() -> None:
    archive = stored(3)
    plan = plan_retention([stored(0), archive, archive], RetentionSettings(keep_last=1), NOW)
    assert [item.archive for item, _ in plan.keep] == [stored(0).archive, archive.archive]
    assert "listed more than once" in plan.keep[1][1]
    assert plan.delete == []


def test_plan_the_archive_this_run_wrote_is_always_kept() -> None:
    # Even when older ones rank above it (a restored clock): this run never deletes what it just wrote.
    mine = StoredArchive(Path("mine.tar.zst"), Path("mine.tar.zst.manifest.json"), NOW - timedelta(days=2), "ok", True)
    plan = plan_retention([stored(0), stored(1), mine], RetentionSettings(keep_last=1), NOW)
    assert [item.archive.name for item, _ in plan.delete] == [stored(1).archive.name]
    assert (mine, "written by this run") in plan.keep


@pytest.mark.parametrize(("keep_last", "previous_survives"), [(1, False), (2, True)])
def test_finding_3_a_future_dated_archive_neither_displaces_the_new_one_nor_the_previous(
    tmp_path: Path, keep_last: int, previous_survives: bool
) -> None:
    directory = tmp_path / "v"
    previous = write_archive(directory, NOW - timedelta(days=1))
    future = write_archive(directory, NOW + timedelta(days=30))  # a matching archive, from a clock 30 days ahead
    new = write_archive(directory, NOW)
    result = prune_volume(directory, RetentionSettings(keep_last=keep_last), NOW, written=written_from(new))
    assert result.errors == []
    assert new.exists() and manifest_of(new).exists()
    assert future.exists() and manifest_of(future).exists()
    assert previous.exists() == previous_survives and manifest_of(previous).exists() == previous_survives
    assert names(result.deleted) == ([] if previous_survives else [previous.name])
    kept = dict(result.kept)
    assert "dated in the future" in kept[str(future)] and "not counted" in kept[str(future)]
    assert kept[str(new)].startswith("written by this run; newest verified archive (always kept)")
    [warning] = result.warnings
    assert warning.startswith(f"{future}: dated in the future") and "check the clock" in warning


def test_finding_4_a_copied_manifest_never_gets_the_only_archive_deleted(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    only = write_archive(directory, NOW - timedelta(days=2))
    copy = directory / "v-20260101T000000Z.tar.zst.manifest.json"
    copy.write_bytes(manifest_of(only).read_bytes())
    result = prune_volume(directory, RetentionSettings(keep_last=1), NOW)
    assert result.errors == [] and result.deleted == []
    assert names(result.kept) == [only.name]  # once: never both kept and deleted
    assert "claimed twice, never deleted" in result.kept[0][1]
    assert sorted(p.name for p in directory.iterdir()) == sorted([only.name, manifest_of(only).name, copy.name])
    warnings = "\n".join(result.warnings)
    assert f"{copy}: names archive {only.name} but is not {manifest_of(only).name} (a copy?)" in warnings
    assert f"{only}: also named by {copy}" in warnings


def test_a_copied_manifest_under_the_right_name_of_another_file_is_not_counted(tmp_path: Path) -> None:
    # A copy of an archive and its manifest under a newer name: the copy names the original, so neither counts by
    # the copy's word; the original is claimed twice and kept, the copied file has no manifest of its own.
    directory = tmp_path / "v"
    older = write_archive(directory, NOW - timedelta(days=3))
    original = write_archive(directory, NOW - timedelta(days=1))
    copied = directory / "v-20260601T110000Z.tar.zst"
    copied.write_bytes(original.read_bytes())
    manifest_of(copied).write_bytes(manifest_of(original).read_bytes())
    result = prune_volume(directory, RetentionSettings(keep_last=1), NOW)
    assert result.deleted == [] and result.errors == []
    assert names(result.kept) == [original.name, older.name]
    assert "newest verified archive" in result.kept[1][1]
    assert f"{copied}: no manifest; left alone" in result.ignored


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "is 3 bytes, its manifest says"),
        ("same-size", "has sha256 "),
        ("volume", "its manifest is for volume 'other', not 'v'"),
        ("no-sha", "its manifest records no usable 'size' and 'sha256'"),
    ],
)
def test_an_archive_that_does_not_match_its_manifest_is_left_alone_and_not_counted(
    tmp_path: Path, damage: str, expected: str
) -> None:
    directory = tmp_path / "v"
    old = write_archive(directory, NOW - timedelta(days=5))
    good = write_archive(directory, NOW - timedelta(days=2))
    bad = write_archive(directory, NOW - timedelta(days=1))
    if damage == "truncate":
        bad.write_bytes(b"abc")
    elif damage == "same-size":
        bad.write_bytes(bytes(len(bad.read_bytes())))
    elif damage == "volume":
        rewrite_manifest(bad, volume="other")
    else:
        rewrite_manifest(bad, sha256=None)
    result = prune_volume(directory, RetentionSettings(keep_last=1), NOW)
    assert bad.exists() and manifest_of(bad).exists()
    assert names(result.kept) == [good.name]  # the bad one neither takes the place nor is the newest verified
    assert names(result.deleted) == [old.name]
    [warning] = result.warnings
    assert warning.startswith(f"{bad}: ") and expected in warning and "left alone" in warning


def test_a_linked_archive_is_not_followed_or_counted(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    good = write_archive(directory, NOW - timedelta(days=2))
    linked = write_archive(directory, NOW - timedelta(days=1))
    outside = tmp_path / "outside.tar.zst"
    linked.rename(outside)
    linked.symlink_to(outside)
    result = prune_volume(directory, RetentionSettings(keep_last=1), NOW)
    assert names(result.kept) == [good.name] and result.deleted == []
    assert result.warnings == [f"{linked}: not a regular file; not counted, left alone"]


class CountingSha256:
    """hashlib.sha256, counting how many bytes go through it (to prove what was read)."""

    def __init__(self) -> None:
        self.bytes_hashed = 0

    def __call__(self) -> object:
        digest = hashlib.sha256()
        counter = self

        class Counting:
            def update(self, data: bytes) -> None:
                counter.bytes_hashed += len(data)
                digest.update(data)

            def hexdigest(self) -> str:
                return digest.hexdigest()

        return Counting()


def count_hashing(monkeypatch: pytest.MonkeyPatch) -> CountingSha256:
    """Make coord's sha256 (hashing.py, which retention reads archives through) count what it reads (the tests'
    own hashlib stays the real one)."""
    import coord.hashing

    counting = CountingSha256()
    monkeypatch.setattr(coord.hashing, "hashlib", SimpleNamespace(sha256=counting))
    return counting


def test_each_archive_is_hashed_once_while_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = count_hashing(monkeypatch)
    directory, state = tmp_path / "v", tmp_path / "state"
    archives = [write_archive(directory, NOW - timedelta(days=age)) for age in (1, 2)]
    total = sum(archive.stat().st_size for archive in archives)
    rules = RetentionSettings(keep_last=2)

    first = prune_volume(directory, rules, NOW, hashes=ArchiveHashes(state))
    assert counting.bytes_hashed == total and names(first.kept) == [a.name for a in archives]
    assert (state / "archive-hashes.json").is_file()
    second = prune_volume(directory, rules, NOW, hashes=ArchiveHashes(state))
    assert counting.bytes_hashed == total and second.kept == first.kept  # nothing read again

    # Rewritten in place with the same size and the old mtime put back: the ctime moved, so it is read again.
    newest = archives[0]
    times = newest.stat()
    newest.write_bytes(bytes(times.st_size))
    os.utime(newest, ns=(times.st_atime_ns, times.st_mtime_ns))
    third = prune_volume(directory, rules, NOW, hashes=ArchiveHashes(state))
    assert counting.bytes_hashed == total + times.st_size
    assert names(third.kept) == [archives[1].name] and "has sha256" in third.warnings[0]


def test_the_archive_a_run_wrote_is_trusted_from_its_own_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = count_hashing(monkeypatch)
    directory, state = tmp_path / "v", tmp_path / "state"
    new = write_archive(directory, NOW)
    result = prune_volume(
        directory, RetentionSettings(keep_last=1), NOW, written=written_from(new), hashes=ArchiveHashes(state)
    )
    assert counting.bytes_hashed == 0 and names(result.kept) == [new.name]
    prune_volume(directory, RetentionSettings(keep_last=1), NOW, hashes=ArchiveHashes(state))
    assert counting.bytes_hashed == 0  # remembered for the next prune too


def test_latest_is_the_newest_matching_verified_archive_and_says_what_it_passed_over(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    good = write_archive(directory, NOW - timedelta(days=3))
    failed = write_archive(directory, NOW - timedelta(days=2), status="failed")
    damaged = write_archive(directory, NOW - timedelta(days=1))
    damaged.write_bytes(b"x")
    future = write_archive(directory, NOW + timedelta(days=1))
    chosen = choose_latest(directory, NOW)
    assert chosen.archive == good
    skipped = "\n".join(chosen.skipped)
    assert f"{future}: dated in the future" in skipped
    assert f"{damaged}: is 1 bytes" in skipped
    assert f"{failed}: status failed, not verified" in skipped

    good.write_bytes(b"y")
    nothing = choose_latest(directory, NOW)
    assert nothing.archive is None and len(nothing.skipped) == 4
