"""Restore drills on the real Docker engine, through the `coord` command line: a varied tree (owners, modes,
setuid, sparse and hard-linked files, symlinks, odd names) restores into a real scratch volume and matches; a
corrupted archive fails the drill, whether the manifest's hash gives it away or only the restore's read does; the
scratch volume is gone either way, and `coord report` shows the last drill."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_coord, volume_path, write_policy
from coord.drill import DRILL_LABEL
from trees import populate_tree

pytestmark = pytest.mark.docker


@pytest.fixture
def drilled_volume(docker_client, make_volume, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A volume with a varied tree, backed up once: (volume, policies dir, destination). Any scratch volume a
    failing drill left for it is removed at the end (a passing test asserts there is none)."""
    volume = make_volume("drill")
    populate_tree(volume_path(docker_client, volume), big_bytes=300_000, fifo=True)
    policies, dest = tmp_path / "policies", tmp_path / "dest"
    write_policy(policies, "data", f"volumes: [{volume}]\nstrategy: live\nrestore: {{allow_fifos: true}}\n")
    done = run_coord("backup", "--policies-dir", str(policies), "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    yield volume, policies, dest
    for scratch in docker_client.volumes.list(filters={"label": f"{DRILL_LABEL}={volume}"}):
        scratch.remove(force=True)


def scratch_volumes_of(docker_client, volume: str) -> list[str]:
    return [v.name for v in docker_client.volumes.list(filters={"label": f"{DRILL_LABEL}={volume}"})]


def drill(volume: str, policies: Path, dest: Path, *extra: str):
    return run_coord("drill", "--volume", volume, "--dest", str(dest), "--policies-dir", str(policies), *extra)


def test_a_drill_restores_into_a_scratch_volume_and_matches(docker_client, drilled_volume) -> None:
    volume, policies, dest = drilled_volume
    done = drill(volume, policies, dest, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)["drills"]
    (manifest,) = (dest / volume).glob("*.manifest.json")
    assert result["problems"] == [] and result["entries"] == json.loads(manifest.read_text())["entries"]
    assert result["files_hashed"] >= 6 and result["bytes_hashed"] > 300_000
    assert result["scratch"].startswith("scratch volume coord-drill-")
    assert scratch_volumes_of(docker_client, volume) == []
    report = json.loads(run_coord("report", "--json").stdout)
    (row,) = [v for v in report["volumes"] if v["volume"] == volume]
    assert row["last_drill"]["status"] == "ok" and row["last_drill"]["archive"] == result["archive"]


def corrupt_middle(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 64):
        data[offset] ^= 0x5A
    archive.write_bytes(bytes(data))


def test_a_drill_catches_a_corrupted_archive(docker_client, drilled_volume) -> None:
    volume, policies, dest = drilled_volume
    (archive,) = (dest / volume).glob("*.tar.zst")
    corrupt_middle(archive)
    done = drill(volume, policies, dest)
    print(done.stdout)  # the report quotes it
    assert done.returncode == 1
    assert done.stdout.startswith(f"FAIL drill {volume} from target local: {archive.name} has sha256 ")
    assert "it no longer matches its manifest (corrupt or replaced" in done.stdout
    assert f"no verified archive of volume {volume} in {dest}" in done.stdout
    assert scratch_volumes_of(docker_client, volume) == []


def test_a_corruption_the_manifest_does_not_show_is_caught_by_the_restore(docker_client, drilled_volume) -> None:
    """The archive damaged and its manifest's sha256 rewritten to match (a copy tool that "repaired" it): the
    hash check passes, and the drill's read of the archive (zstd's frame checksums) still fails it."""
    volume, policies, dest = drilled_volume
    (archive,) = (dest / volume).glob("*.tar.zst")
    corrupt_middle(archive)
    manifest_path = Path(f"{archive}.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    import hashlib

    manifest["sha256"] = manifest["stream_sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    done = drill(volume, policies, dest)
    print(done.stdout)
    assert done.returncode == 1
    assert done.stdout.startswith(
        f"FAIL drill {volume} from target local (drilled {archive.name}): cannot read {archive}: "
    )
    assert "decompression failed" in done.stdout or "not a readable tar stream" in done.stdout
    assert scratch_volumes_of(docker_client, volume) == []


def test_the_daemon_drills_on_its_own_schedule(docker_client, drilled_volume, tmp_path: Path) -> None:
    from tests.e2e.test_daemon import Daemon

    volume, policies, dest = drilled_volume
    daemon = Daemon(
        "--schedule", "0 3 1 1 *", "--drill-schedule", "*/2 * * * * *",
        "--policies-dir", str(policies), "--dest", str(dest),
    )  # fmt: skip
    try:
        (drilled,) = daemon.wait_for("drill", count=1, timeout=60)
        code = daemon.stop()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
    assert code == 0, daemon.stderr()
    assert drilled["ok"] is True and drilled["volume"] == volume and drilled["message"].startswith("OK   drill")
    kinds = [event["event"] for event in daemon.events]
    assert kinds[:4] == ["daemon-started", "recovered", "next-run", "next-drill"]
    assert "run-started" not in kinds  # the backup's fire time is next January
    assert scratch_volumes_of(docker_client, volume) == []
    (row,) = json.loads(run_coord("report", "--json").stdout)["volumes"]
    assert row["last_drill"]["trigger"] == "schedule" and row["last_drill"]["status"] == "ok"
