"""The snapshot and auto strategies on the real engine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import CHURN, container_state, run_coord, volume_path, wait_for, write_policy
from tests.e2e.test_strategies import (
    assert_writer_was_quiet,
    backup,
    journal_files,
    policy_text,
    start_backup,
)

pytestmark = pytest.mark.docker


def add_big_file(mount: Path, mebibytes: int) -> None:
    with open(mount / "big.bin", "wb") as handle:
        for _ in range(mebibytes // 8):
            handle.write(os.urandom(8 << 20))


@pytest.fixture
def immutable_writer(docker_client, make_volume, make_container):
    """A ClickHouse-like writer whose files are all immutable once written (its log is rewritten and renamed)."""
    volume = make_volume("clickhouse-data")
    mount = volume_path(docker_client, volume)
    add_big_file(mount, 160)  # the archive takes a while; the snapshot does not
    container = make_container("writer", CHURN, {volume: "/data"}, environment={"ATOMIC_LOG": "1"})
    wait_for(lambda: len(list(mount.glob("store/*/*/202601_*_1"))) >= 10, what="the writer's first merges")
    return volume, container, mount


def test_snapshot_of_a_churning_volume_is_consistent_with_short_downtime(immutable_writer, docker_client, tmp_path):
    volume, container, mount = immutable_writer
    write_policy(tmp_path / "p", "ch", policy_text(volume, "snapshot"))
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    assert (entry["status"], entry["verdict"]) == ("ok", "consistent"), entry["verdict_reasons"]
    assert_writer_was_quiet(Path(entry["archive"]))
    [action] = entry["containers"]
    assert action["action"] == "paused" and action["restored"]
    manifest = json.loads(Path(entry["manifest"]).read_text())
    snapshot = manifest["snapshot"]
    assert (snapshot["method"], snapshot["modified_after"], type(snapshot["relinked"])) == ("hardlink", [], list)
    # The container was paused only while the links were made, not while 160 MiB were compressed.
    read_time = entry["duration_s"]
    print(f"snapshot downtime {entry['downtime_s']:.3f}s, backup {read_time:.3f}s")
    assert entry["downtime_s"] < read_time / 2
    assert not list(mount.glob(".coord-snapshot-*"))
    assert container_state(docker_client, container) == "running"


def test_in_place_modification_after_the_snapshot_is_caught(docker_client, make_volume, make_container, tmp_path):
    volume = make_volume("data")
    mount = volume_path(docker_client, volume)
    add_big_file(mount, 160)
    # appends to its log in place, like a database rewriting its files
    make_container("writer", CHURN, {volume: "/data"})
    wait_for(lambda: (mount / "writer.log").exists(), what="the writer")
    write_policy(tmp_path / "p", "db", policy_text(volume, "snapshot"))
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    assert (entry["status"], entry["verdict"]) == ("warning", "at-risk")
    assert any("modified in place after the snapshot (e.g. writer.log)" in r for r in entry["verdict_reasons"])
    assert "writer.log" in json.loads(Path(entry["manifest"]).read_text())["snapshot"]["modified_after"]


def test_a_crash_while_reading_the_snapshot_is_cleaned_up_by_recover(
    docker_client, make_volume, make_container, tmp_path, isolated_state_dir
):
    volume = make_volume("big")
    mount = volume_path(docker_client, volume)
    add_big_file(mount, 384)
    container = make_container("db", ["sleep", "600"], {volume: "/data"})
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: snapshot\n")
    process = start_backup(tmp_path / "p", tmp_path / "b")
    wait_for(
        lambda: any((tmp_path / "b").rglob("*.partial")) or process.poll() is not None,
        timeout=60,
        what="the archive of the snapshot to be under way",
    )
    assert process.poll() is None, process.communicate()
    process.kill()
    process.wait()
    # on the host, the snapshot is made in Docker's root-only directory beside _data, out of the containers' sight
    assert len(list(mount.parent.glob(".coord-snapshot-*"))) == 1 and not list(mount.glob(".coord-snapshot-*"))
    assert container_state(docker_client, container) == "running"  # unpaused before the archive began
    run = run_coord("recover", "--json")
    assert run.returncode == 0, run.stderr
    assert len(run.json["removed_partials"]) == 2  # the snapshot directory and the partial archive
    assert not list(mount.parent.glob(".coord-snapshot-*"))
    assert not list((tmp_path / "b").rglob("*.partial"))
    assert journal_files(isolated_state_dir) == []
    assert (mount / "big.bin").stat().st_nlink == 1


def test_snapshot_refuses_a_volume_spanning_file_systems(docker_client, make_volume, make_container, tmp_path):
    volume = make_volume("data")
    mount = volume_path(docker_client, volume)
    (mount / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount / "sub")], check=True)
    try:
        (mount / "sub" / "file").write_text("on another file system")
        container = make_container("db", ["sleep", "600"], {volume: "/data"})
        write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: snapshot\n")
        run = backup(tmp_path / "p", tmp_path / "b")
    finally:
        subprocess.run(["umount", str(mount / "sub")], check=True)
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed"
    assert entry["errors"] == [
        f"snapshot of {mount} impossible: part of the volume is on another file system (hard links cannot "
        "cross it); use strategy pause or stop for this volume"
    ]
    assert container_state(docker_client, container) == "running"
    assert not list(mount.glob(".coord-snapshot-*"))


def test_auto_escalates_under_heavy_churn(docker_client, make_volume, make_container, tmp_path) -> None:
    volume = make_volume("clickhouse-data")
    mount = volume_path(docker_client, volume)
    container = make_container("writer", CHURN, {volume: "/data"})
    wait_for(lambda: len(list(mount.glob("store/*/*/202601_*_1"))) >= 20, what="the writer's first merges")
    write_policy(tmp_path / "p", "ch", policy_text(volume, "auto", "escalate_to: pause\nmax_vanished: 0\n"))
    escalated = None
    for _ in range(6):  # a live read of this writer nearly always meets a vanished part; retry the rare quiet one
        run = backup(tmp_path / "p", tmp_path / "b")
        assert run.returncode == 0, run.stderr
        [entry] = run.json["volumes"]
        if len(entry["attempts"]) == 1:  # not escalated: then auto's rule must hold for the live read
            [only] = entry["attempts"]
            assert only["strategy"] == "live" and only["escalated"] is None
            assert only["verdict"] != "at-risk" and only["warnings"]["vanished"] == 0
            continue
        escalated = entry
        break
    assert escalated is not None, "auto never escalated under heavy churn in 6 runs"
    entry = escalated
    first, second = entry["attempts"]
    assert first["strategy"] == "live" and first["escalated"].endswith("retried with pause")
    assert second == {**second, "strategy": "pause", "verdict": "consistent", "escalated": None}
    assert (entry["status"], entry["verdict"]) == ("ok", "consistent")
    assert entry["containers"][0]["action"] == "paused"
    assert json.loads(Path(entry["manifest"]).read_text())["attempts"] == entry["attempts"]
    assert Path(entry["archive"]).exists()
    assert not list((tmp_path / "b" / volume).glob("*.partial"))  # the discarded live attempt left nothing
    assert container_state(docker_client, container) == "running"


def test_auto_keeps_the_live_read_when_nothing_churns(docker_client, make_volume, make_container, tmp_path) -> None:
    volume = make_volume("data")
    mount = volume_path(docker_client, volume)
    (mount / "table").mkdir()
    (mount / "table" / "all_1_1_0").write_text("rows")
    container = make_container("db", ["sleep", "600"], {volume: "/data"})
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: auto\nescalate_to: stop\nmax_vanished: 0\n")
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    assert [a["strategy"] for a in entry["attempts"]] == ["live"]
    assert entry["attempts"][0]["escalated"] is None
    assert (entry["status"], entry["verdict"], entry["containers"]) == ("ok", "consistent", [])
    assert container_state(docker_client, container) == "running"
