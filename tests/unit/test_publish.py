"""Publishing an archive with its manifest as one journaled step, its recovery, and the downtime limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coord.journal import PARTIAL, PUBLISH, WRITING, Journal
from coord.manifest import manifest_path_for
from coord.publish import manifest_temporary_for, partial_path_for, publish_archive, recover_publish
from coord.results import ContainerAction, VolumeResult, VolumeStatus
from coord.runner import check_downtime


def partial_archive(directory: Path, journal: Journal, content: bytes = b"archive bytes") -> tuple[Path, object]:
    archive = directory / "vol" / "vol-20260101T000000Z.tar.zst"
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial_path_for(archive).write_bytes(content)
    return archive, journal.record(PARTIAL, str(partial_path_for(archive)), WRITING, "vol")


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_publish_renames_the_archive_and_writes_its_manifest_and_leaves_no_journal_entry(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    archive, entry = partial_archive(tmp_path, journal)
    manifest = publish_archive(archive, {"archive": archive.name, "size": 13}, journal, entry, "vol")
    assert manifest == manifest_path_for(archive)
    assert names(archive.parent) == [archive.name, manifest.name]
    assert json.loads(manifest.read_text()) == {"archive": archive.name, "size": 13}
    assert journal.entries() == []


def test_recovery_completes_a_publish_whose_whole_manifest_was_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    archive, _ = partial_archive(tmp_path, journal)
    entry = journal.record(PUBLISH, str(archive), "publishing", "vol")
    manifest_temporary_for(archive).write_text(json.dumps({"archive": archive.name, "size": 13}))
    done = recover_publish(entry)
    assert done.completed == [str(archive)] and done.removed == []
    assert names(archive.parent) == [archive.name, manifest_path_for(archive).name]


@pytest.mark.parametrize(
    "temporary_manifest",
    [None, "", '{"archive": "vol-20260101T000000Z.tar.zst", "si', '{"archive": "other.tar.zst", "size": 13}'],
    ids=["none", "empty", "torn", "another-archive"],
)
@pytest.mark.parametrize("renamed", [False, True], ids=["partial", "renamed"])
def test_recovery_removes_an_archive_without_a_whole_manifest(
    tmp_path: Path, temporary_manifest: str | None, renamed: bool
) -> None:
    journal = Journal(tmp_path / "state")
    archive, _ = partial_archive(tmp_path, journal)
    if renamed:
        partial_path_for(archive).rename(archive)
    entry = journal.record(PUBLISH, str(archive), "publishing", "vol")
    expected = [str(archive if renamed else partial_path_for(archive))]
    if temporary_manifest is not None:
        manifest_temporary_for(archive).write_text(temporary_manifest)
        expected.insert(0, str(manifest_temporary_for(archive)))
    done = recover_publish(entry)
    assert done.completed == [] and done.removed == expected
    assert names(archive.parent) == []


def test_recovery_reports_nothing_when_nothing_is_left(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    archive = tmp_path / "vol" / "vol-20260101T000000Z.tar.zst"
    archive.parent.mkdir()
    done = recover_publish(journal.record(PUBLISH, str(archive), "publishing", "vol"))
    assert done.completed == [] and done.removed == []


def test_recovery_of_a_finished_publish_keeps_the_archive(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    archive, entry = partial_archive(tmp_path, journal)
    publish_archive(archive, {"archive": archive.name, "size": 13}, journal, entry, "vol")
    done = recover_publish(journal.record(PUBLISH, str(archive), "publishing", "vol"))
    assert done.completed == [] and done.removed == []
    assert names(archive.parent) == [archive.name, manifest_path_for(archive).name]


def test_recovery_never_removes_a_link_in_place_of_the_archive(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    archive = tmp_path / "vol" / "vol-20260101T000000Z.tar.zst"
    archive.parent.mkdir()
    outside = tmp_path / "outside"
    outside.write_text("precious")
    partial_path_for(archive).symlink_to(outside)
    with pytest.raises(Exception, match="not a regular file"):
        recover_publish(journal.record(PUBLISH, str(archive), "publishing", "vol"))
    assert outside.read_text() == "precious" and partial_path_for(archive).is_symlink()


def result_with(seconds: float, status: VolumeStatus = VolumeStatus.OK) -> VolumeResult:
    result = VolumeResult(volume="v", policy="p", strategy="pause", status=status)
    result.containers = [
        ContainerAction("db", "0" * 64, "paused", "running", seconds=seconds),
        ContainerAction("idle", "1" * 64, "left-alone", "exited", seconds=500.0),  # never down: does not count
    ]
    return result


def test_downtime_over_max_downtime_s_makes_an_ok_volume_a_warning_with_the_figure() -> None:
    result = result_with(72.4)
    check_downtime(result, 60)
    assert result.status is VolumeStatus.WARNING
    assert result.errors == ["downtime 72.4s is longer than max_downtime_s 60: container db was paused for 72.4s"]


def test_downtime_within_max_downtime_s_changes_nothing() -> None:
    result = result_with(59.9)
    check_downtime(result, 60)
    assert result.status is VolumeStatus.OK and result.errors == []


def test_downtime_over_the_limit_never_lifts_a_failed_volume() -> None:
    result = result_with(3.0, VolumeStatus.FAILED)
    check_downtime(result, 0.5)
    assert result.status is VolumeStatus.FAILED
    assert result.errors == ["downtime 3.0s is longer than max_downtime_s 0.5: container db was paused for 3.0s"]
