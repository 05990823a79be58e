"""Restore drills (coord.drill) against the in-memory engine: real tar, zstd and the restore's own extraction into
the fake engine's scratch volume (a real directory). The real engine's scratch volumes: tests/e2e/test_drill.py."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from tests.fakes import FakeEngine

import coord.drill
from coord.drill import DRILL_LABEL, SCRATCH_PREFIX, DrillRequest, EntryFacts, compare_entries, drill_volumes
from coord.history import History
from coord.recording import run_and_record
from coord.report import render_report, report_for, week_of
from coord.runner import BackupRequest
from coord.signals import Interrupted
from coord.sources import VolumeSources

FILES = {"a.txt": "alpha\n", "sub/b.txt": "beta\n", "sub/deeper/c.bin": "gamma" * 1000}


def backed_up(tmp_path: Path) -> tuple[FakeEngine, DrillRequest]:
    """A volume `v` with FILES, backed up once (recorded); and the drill request for its destination."""
    engine = FakeEngine(tmp_path / "volumes")
    source = engine.add_volume("v", FILES)
    os.symlink("a.txt", source / "link")
    os.link(source / "a.txt", source / "hard")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "data.yaml").write_text("volumes: [v]\nstrategy: live\n")
    request = BackupRequest(policies_dir=policies, dest=tmp_path / "dest", state_dir=tmp_path / "state")
    result, _ = run_and_record(request, lambda: engine, History(tmp_path / "state"))
    assert result.ok, result.to_json()
    return engine, DrillRequest(dest=tmp_path / "dest", state_dir=tmp_path / "state", policies_dir=policies)


def scratch_volumes(engine: FakeEngine) -> list[str]:
    return [name for name in engine.volumes if name.startswith(SCRATCH_PREFIX)]


def test_a_drill_restores_compares_and_removes_its_scratch_volume(tmp_path: Path) -> None:
    engine, request = backed_up(tmp_path)
    (result,) = drill_volumes(request, engine)
    assert result.problems == []
    assert (result.entries, result.files_hashed, result.bytes_hashed) == (8, 4, 6 + 5 + 5000 + 6)
    assert (
        result.line().startswith("OK   drill v from target local: v-")
        and "8 entries match the manifest" in result.line()
    )
    created = [call.target for call in engine.calls if call.method == "create_volume"]
    assert len(created) == 1 and created[0].startswith(SCRATCH_PREFIX)
    assert scratch_volumes(engine) == []  # removed
    (row,) = History(request.state_dir).last_drills().values()
    assert (row.volume, row.status, row.entries, row.archive) == ("v", "ok", 8, result.archive)


def test_a_restore_that_does_not_reproduce_the_archive_fails_the_drill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison is with the archive's own bytes: a restore path that damages a file is caught."""
    engine, request = backed_up(tmp_path)
    real_restore = coord.drill.restore_into_directory

    def damaging_restore(*arguments: object) -> list[str]:
        warnings = real_restore(*arguments)  # type: ignore[arg-type]
        root = arguments[2]
        assert isinstance(root, Path)
        (root / "sub" / "b.txt").write_text("BETA\n")
        os.utime(root / "sub" / "b.txt", ns=(0, 0))
        return warnings

    monkeypatch.setattr(coord.drill, "restore_into_directory", damaging_restore)
    (result,) = drill_volumes(request, engine)
    assert result.problems == [
        "1 restored entry differs from the archive: sub/b.txt (content sha256 "
        f"{result_sha('beta')} in the archive, {result_sha('BETA')} restored; mtime_ns "
        f"{mtime_of(tmp_path, 'sub/b.txt')} in the archive, 0 restored)"
    ]
    assert result.line().startswith("FAIL drill v from target local (drilled v-")
    assert scratch_volumes(engine) == []  # removed on failure too
    assert History(request.state_dir).last_drills()["v"].status == "failed"


def result_sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(f"{text}\n".encode()).hexdigest()[:12]


def mtime_of(tmp_path: Path, relative: str) -> int:
    return (tmp_path / "volumes" / "v" / relative).stat().st_mtime_ns


def test_a_corrupted_archive_fails_the_drill_and_names_it(tmp_path: Path) -> None:
    engine, request = backed_up(tmp_path)
    (archive,) = (request.dest / "v").glob("*.tar.zst")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    (result,) = drill_volumes(request, engine)
    assert not result.ok and result.archive is None
    assert (
        result.problems[0].startswith(f"{archive.name} has sha256 ")
        and "it no longer matches its manifest" in result.problems[0]
    )
    assert result.problems[-1] == f"no verified archive of volume v in {request.dest}"
    assert scratch_volumes(engine) == []


def test_scratch_left_by_a_killed_drill_is_removed_by_the_next(tmp_path: Path) -> None:
    engine, request = backed_up(tmp_path)
    engine.create_volume(f"{SCRATCH_PREFIX}dead-v", {DRILL_LABEL: "v"})
    engine.create_volume(f"{SCRATCH_PREFIX}not-ours")  # no label: not provably coord's
    engine.create_volume("someone-elses", {DRILL_LABEL: "v"})  # label but not coord's name
    (result,) = drill_volumes(request, engine)
    assert result.ok
    assert sorted(engine.volumes) == sorted([f"{SCRATCH_PREFIX}not-ours", "someone-elses", "v"])


def test_the_report_shows_the_last_drill_per_volume(tmp_path: Path) -> None:
    engine, request = backed_up(tmp_path)
    drill_volumes(request, engine)
    history = History(request.state_dir)
    from datetime import UTC, datetime

    report = report_for(history, week_of(datetime.now(UTC)))
    (volume,) = report.volumes
    assert volume.last_drill is not None and volume.last_drill.status == "ok"
    assert report.to_json()["volumes"][0]["last_drill"]["status"] == "ok"
    lines = render_report(report)
    assert lines[1].split()[-2:] == ["last", "drill"] or "last drill" in lines[1]
    assert "ok " in lines[2] and lines[2].rstrip().endswith("Z")


def test_compare_entries_names_what_differs() -> None:
    file = EntryFacts("file", 0o644, 0, 0, size=3, sha256="a" * 64, mtime_ns=5)
    archived = {".": EntryFacts("directory", 0o755, 0, 0), "f": file, "gone": file}
    restored = {
        ".": EntryFacts("directory", 0o700, 0, 0),
        "f": EntryFacts("file", 0o644, 999, 0, size=3, sha256="a" * 64, mtime_ns=5),
        "extra": file,
    }
    assert compare_entries(archived, restored, owners=True) == [
        "1 archived entry not restored: gone",
        "1 restored entry not in the archive: extra",
        "2 restored entries differ from the archive: . (mode 0755 in the archive, 0700 restored), "
        "f (owner 0:0 in the archive, 999:0 restored)",
    ]
    assert compare_entries(archived, restored, owners=False)[2] == (
        "1 restored entry differs from the archive: . (mode 0755 in the archive, 0700 restored)"
    )


@pytest.mark.usefixtures("sigterm_guard")
def test_sigterm_during_a_drill_still_removes_the_scratch_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, request = backed_up(tmp_path)
    real_restore = coord.drill.restore_into_directory

    def restore_then_sigterm(*arguments: object) -> list[str]:
        warnings = real_restore(*arguments)  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGTERM)  # coord's handler raises Interrupted here
        return warnings

    monkeypatch.setattr(coord.drill, "restore_into_directory", restore_then_sigterm)
    with pytest.raises(Interrupted):
        drill_volumes(request, engine)
    assert [call.method for call in engine.calls][-1] == "remove_volume"
    assert scratch_volumes(engine) == []
    assert History(request.state_dir).last_drills() == {}  # an interrupted drill proves nothing: not recorded


def test_in_a_sidecar_the_scratch_space_is_a_directory_in_the_state_directory(tmp_path: Path) -> None:
    """A sidecar could not see a new volume: it restores into <state dir>/coord-drill-..., needs no engine, and
    removes the directory (and one a killed drill left) afterwards."""
    engine, request = backed_up(tmp_path)
    leftover = request.state_dir / f"{SCRATCH_PREFIX}dead-v"
    (leftover / "data").mkdir(parents=True)
    sidecar = replace(request, sources=VolumeSources(tmp_path / "volumes"))
    calls_before = len(engine.calls)
    (result,) = drill_volumes(sidecar, None)
    assert result.problems == [] and result.entries == 8
    assert result.scratch is not None and result.scratch.startswith(f"scratch directory {request.state_dir}/")
    assert not any(path.name.startswith(SCRATCH_PREFIX) for path in request.state_dir.iterdir())
    assert len(engine.calls) == calls_before  # the engine was not used


def test_an_archive_that_no_longer_matches_its_manifest_is_named_alike_on_local_and_remote_targets() -> None:
    """The read side says it in each store's words (retention.find_archives locally, RcloneStore remotely); the
    drill names the file and keeps what differs."""
    local = "/b/v/v-1.tar.zst: size 10, its manifest says 12; does not match its manifest, not counted, left alone"
    remote = "offsite:v/v-1.tar.zst: is 10 bytes on the target, its manifest says 12; not counted, left alone"
    assert coord.drill._corrupt(local) == (
        "v-1.tar.zst size 10, its manifest says 12: it no longer matches its manifest (corrupt or replaced; that "
        "backup is lost, older ones are drilled)"
    )
    assert coord.drill._corrupt(remote).startswith(
        "v-1.tar.zst is 10 bytes on the target, its manifest says 12: it no longer matches its manifest"
    )
