"""Retention after a real `coord backup` (issue 11, finding 3): an archive dated in the future (a clock that was
ahead, or a copy) with keep_last 1 no longer makes the backup prune its own new archive; `verify --latest` passes
over the future-dated one and says so."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_coord, volume_path, write_policy

pytest_plugins = ["sharedfixtures"]  # state_dir
pytestmark = pytest.mark.docker


def backup(policies: Path, dest: Path, state_dir: Path) -> dict:
    result = run_coord(
        "backup", "--policies-dir", str(policies), "--dest", str(dest), "--state-dir", str(state_dir), "--json"
    )
    document = json.loads(result.stdout)
    document["returncode"], document["stderr"] = result.returncode, result.stderr
    return document


def copy_dated(archive: Path, started: datetime) -> Path:
    """A byte-identical copy of `archive` whose manifest (name, archive, started_at) says it started at `started`:
    a matching, verified archive in every respect but its date."""
    copy = archive.with_name(
        archive.name.replace(archive.name.split("-")[-1].split(".")[0], f"{started:%Y%m%dT%H%M%S}Z")
    )
    shutil.copy2(archive, copy)
    document = json.loads(archive.with_name(archive.name + ".manifest.json").read_text())
    document.update(archive=copy.name, started_at=started.isoformat())
    copy.with_name(copy.name + ".manifest.json").write_text(json.dumps(document))
    return copy


def test_a_future_dated_archive_never_makes_a_backup_prune_its_own_archive(
    tmp_path: Path, docker_client, make_volume, state_dir: Path
) -> None:
    volume = make_volume("future")
    (volume_path(docker_client, volume) / "data").write_text("first\n")
    policies, dest = tmp_path / "policies", tmp_path / "dest"
    write_policy(policies, "app", f"volumes: [{volume}]\nstrategy: live\nretention: {{keep_last: 1}}\n")
    first = backup(policies, dest, state_dir)
    assert first["returncode"] == 0, first
    previous = Path(first["volumes"][0]["archive"])
    future = copy_dated(previous, datetime.now(UTC) + timedelta(days=30))

    (volume_path(docker_client, volume) / "data").write_text("second\n")
    second = backup(policies, dest, state_dir)
    assert second["returncode"] == 0, second
    [result] = second["volumes"]
    new = Path(result["archive"])
    assert result["status"] == "ok" and result["retention_errors"] == []
    # keep_last 1 counts the new archive, not the future-dated one: the previous real one goes, as the rule says.
    assert result["pruned"] == [str(previous)]
    assert [w.split(": dated in the future")[0] for w in result["retention_warnings"]] == [str(future)]
    assert sorted(p.name for p in (dest / volume).iterdir()) == sorted(
        n for a in (new, future) for n in (a.name, a.name + ".manifest.json")
    )

    verified = run_coord("verify", "--latest", volume, "--dest", str(dest), "--state-dir", str(state_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK {new}:")
    assert f"passed over: {future}: dated in the future" in verified.stderr


def test_verify_latest_fails_when_the_newest_archive_no_longer_matches_its_manifest(
    tmp_path: Path, docker_client, make_volume, state_dir: Path
) -> None:
    volume = make_volume("corrupt")
    (volume_path(docker_client, volume) / "data").write_text("first\n")
    policies, dest = tmp_path / "policies", tmp_path / "dest"
    write_policy(policies, "app", f"volumes: [{volume}]\nstrategy: live\n")
    older = Path(backup(policies, dest, state_dir)["volumes"][0]["archive"])
    (volume_path(docker_client, volume) / "data").write_text("second\n")
    newest = Path(backup(policies, dest, state_dir)["volumes"][0]["archive"])
    assert newest != older
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, other content
    newest.write_bytes(bytes(data))

    verified = run_coord("verify", "--latest", volume, "--dest", str(dest), "--state-dir", str(state_dir))
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"FAIL {older}:"), verified.stdout
    assert f"{newest}: has sha256" in verified.stdout and "does not match its manifest" in verified.stdout
