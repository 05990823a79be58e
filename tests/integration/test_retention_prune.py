"""`coord prune` as an operator runs it, on a destination with a copied manifest (issue 11, finding 4) and a
future-dated archive: nothing is both kept and deleted, the only archive survives, what is wrong is reported."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import CoordRun, run_coord, write_policy


def publish(directory: Path, started: datetime, volume: str) -> Path:
    """An archive and its manifest as coord publishes them: exact name, volume, size and sha256 of the file."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    content = f"{volume} at {started.isoformat()}".encode() * 100
    archive.write_bytes(content)
    document = {
        "volume": volume,
        "archive": archive.name,
        "status": "ok",
        "started_at": started.isoformat(),
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    archive.with_name(archive.name + ".manifest.json").write_text(json.dumps(document))
    return archive


def prune(policies: Path, dest: Path, state: Path, *extra: str) -> CoordRun:
    return run_coord("prune", "--policies-dir", str(policies), "--dest", str(dest), "--state-dir", str(state), *extra)


def test_prune_with_a_copied_manifest_keeps_the_only_archive(tmp_path: Path) -> None:
    dest, policies, state = tmp_path / "dest", tmp_path / "policies", tmp_path / "state"
    write_policy(policies, "app", "volumes: [app]\nstrategy: live\nretention: {keep_last: 1}\n")
    only = publish(dest / "app", datetime.now(UTC) - timedelta(days=1), "app")
    manifest = only.with_name(only.name + ".manifest.json")
    copy = only.with_name("app-20200101T000000Z.tar.zst.manifest.json")
    copy.write_bytes(manifest.read_bytes())  # the operator's `cp`, or a sync tool's duplicate

    as_json = prune(policies, dest, state, "--json")
    assert as_json.returncode == 0, as_json.stderr
    [volume] = as_json.json["volumes"]
    assert volume["deleted"] == []
    assert [kept["archive"] for kept in volume["kept"]] == [str(only)]
    assert "claimed twice, never deleted" in volume["kept"][0]["reason"]
    assert any(line.startswith(f"{copy}: names archive {only.name}") for line in volume["warnings"])
    assert volume["errors"] == []

    as_text = prune(policies, dest, state)
    assert as_text.returncode == 0, as_text.stderr
    lines = as_text.stdout.splitlines()
    decisions = [line for line in lines if line.startswith(("app: keep ", "app: deleted ", "app: would delete "))]
    assert decisions == [f"app: keep {only} ({volume['kept'][0]['reason']})"]
    assert f"app: warning: {copy}: names archive {only.name}" in as_text.stdout
    assert sorted(p.name for p in (dest / "app").iterdir()) == sorted([only.name, manifest.name, copy.name])

    # Once the copy is gone, the archive counts again and retention works as usual.
    copy.unlink()
    newer = publish(dest / "app", datetime.now(UTC), "app")
    done = prune(policies, dest, state, "--json")
    [volume] = done.json["volumes"]
    assert [d["archive"] for d in volume["deleted"]] == [str(only)] and volume["warnings"] == []
    assert [k["archive"] for k in volume["kept"]] == [str(newer)]


def test_prune_reports_a_future_dated_archive_and_keeps_the_newest_real_one(tmp_path: Path) -> None:
    dest, policies, state = tmp_path / "dest", tmp_path / "policies", tmp_path / "state"
    write_policy(policies, "app", "volumes: [app]\nstrategy: live\nretention: {keep_last: 1}\n")
    now = datetime.now(UTC)
    old = publish(dest / "app", now - timedelta(days=2), "app")
    real = publish(dest / "app", now - timedelta(days=1), "app")
    future = publish(dest / "app", now + timedelta(days=365), "app")

    dry = prune(policies, dest, state, "--json", "--dry-run")
    [volume] = dry.json["volumes"]
    assert [d["archive"] for d in volume["deleted"]] == [str(old)]
    assert {k["archive"] for k in volume["kept"]} == {str(future), str(real)}
    assert [w.split(": dated in the future")[0] for w in volume["warnings"]] == [str(future)]

    done = prune(policies, dest, state)
    assert done.returncode == 0, done.stderr
    assert f"app: deleted {old} (not among the newest 1)" in done.stdout
    assert f"app: keep {real} (newest verified archive (always kept)" in done.stdout
    assert f"app: warning: {future}: dated in the future" in done.stdout
    assert real.exists() and future.exists() and not old.exists()
