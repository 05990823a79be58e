"""`coord backup` with the live strategy against the real Docker engine, GNU tar and zstd."""

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from tests.conftest import (
    REPO,
    archive_listing,
    run_coord,
    start_churning_writer,
    volume_path,
    write_policy,
)

from coord.run_records import RUNS_DIRECTORY

pytestmark = pytest.mark.docker


def assert_archive_matches_manifest(volume_json: dict) -> dict:
    archive = Path(volume_json["archive"])
    manifest = json.loads(Path(volume_json["manifest"]).read_text())
    assert manifest["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert manifest["entries"] == len(archive_listing(archive)) == volume_json["entries"]
    assert manifest["size"] == archive.stat().st_size
    assert not list(archive.parent.glob("*.partial"))
    return manifest


@pytest.fixture
def churning_clickhouse(docker_client, make_volume, make_container):
    return start_churning_writer(docker_client, make_volume, make_container, "clickhouse-data", 20)


def test_plain_tar_fails_on_the_churning_volume_but_coord_live_succeeds(churning_clickhouse, tmp_path: Path) -> None:
    volume, container, mount = churning_clickhouse
    # The incident: plain tar exits non-zero while ClickHouse-like merges delete parts.
    tar_statuses = []
    removed_reported = False
    for _ in range(20):
        completed = subprocess.run(
            f"tar -C '{mount}' -cf - . | cat > /dev/null; exit ${{PIPESTATUS[0]}}",
            shell=True,
            executable="/bin/bash",
            capture_output=True,
            text=True,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        )
        tar_statuses.append(completed.returncode)
        if "File removed before we read it" in completed.stderr or "No such file" in completed.stderr:
            assert completed.returncode != 0
            removed_reported = True
            break
    assert removed_reported, f"plain tar never met a removed part in 20 runs (exit statuses {tar_statuses})"

    policies = tmp_path / "policies"
    # The shipped policy's excludes, read live (it ships with strategy snapshot).
    shipped = (REPO / "policies" / "clickhouse.yaml").read_text().replace('"*clickhouse*"', f'"{volume}"')
    clickhouse = shipped.replace("strategy: snapshot", "strategy: live")
    assert "strategy: live" in clickhouse
    write_policy(policies, "clickhouse", clickhouse)
    vanished_seen = 0
    for _ in range(20):  # as many tries as plain tar gets above: the writer slows down on a loaded machine
        run = run_coord(
            "backup",
            "--policy",
            "clickhouse",
            "--policies-dir",
            str(policies),
            "--dest",
            str(tmp_path / "backups"),
            "--json",
        )
        assert run.returncode == 0, run.stderr
        result = run.json
        assert result["ok"] is True
        [entry] = result["volumes"]
        assert entry["status"] in ("ok", "warning")
        assert entry["verdict"] in ("consistent", "fuzzy", "at-risk")
        assert entry["errors"] == []
        manifest = assert_archive_matches_manifest(entry)
        assert len(manifest["warnings"]["vanished"]) == entry["warnings"]["vanished"]
        if entry["warnings"]["vanished"]:
            assert entry["status"] == "warning" and entry["verdict"] in ("fuzzy", "at-risk")
            vanished_seen += 1
            break
    assert vanished_seen, "coord never met a vanished entry on the churning volume"
    container.reload()
    assert container.status == "running"


def test_unreadable_entry_fails_the_volume(docker_client, make_volume, tmp_path: Path) -> None:
    # As root nothing is unreadable; drop the capabilities that bypass file permissions to get a real
    # "Permission denied" from tar, as a non-root operator would.
    volume = make_volume("app-data")
    mount = volume_path(docker_client, volume)
    (mount / "ok.txt").write_text("fine")
    (mount / "secret.key").write_text("unreadable")
    (mount / "secret.key").chmod(0)
    policies = tmp_path / "policies"
    write_policy(policies, "app", f"volumes: [{volume}]\nstrategy: live\n")
    dest = tmp_path / "backups"
    run = run_coord(
        "backup",
        "--policies-dir",
        str(policies),
        "--dest",
        str(dest),
        "--json",
        prefix=("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"),
    )
    assert run.returncode == 1, run.stderr
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed"
    assert entry["errors"] == ["secret.key: Cannot open: Permission denied"]
    assert entry["archive"] is None
    # nothing but the run's record (`_runs/`, run_records.py): no archive, manifest or temporary
    assert not [p for p in dest.rglob("*") if p.is_file() and p.relative_to(dest).parts[0] != RUNS_DIRECTORY]


def test_excludes_are_honoured_and_recorded(docker_client, make_volume, tmp_path: Path) -> None:
    volume = make_volume("clickhouse-data")
    mount = volume_path(docker_client, volume)
    table = mount / "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3"
    (table / "all_1_1_0").mkdir(parents=True)
    (table / "all_1_1_0/data.bin").write_text("rows")
    (table / "tmp_merge_all_1_2_1").mkdir()
    (table / "tmp_merge_all_1_2_1/data.bin").write_text("half-written")
    (mount / "shadow").mkdir()
    policies = tmp_path / "policies"
    write_policy(
        policies, "clickhouse", (REPO / "policies/clickhouse.yaml").read_text().replace('"*clickhouse*"', volume)
    )
    run = run_coord("backup", "--policies-dir", str(policies), "--dest", str(tmp_path / "b"), "--json")
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    assert (entry["status"], entry["verdict"]) == ("ok", "consistent")
    names = archive_listing(Path(entry["archive"]))
    assert "./store/263/2632a5fb-f759-4d05-824b-dddcb78faff3/all_1_1_0/data.bin" in names
    assert not any("tmp_merge" in name or "shadow" in name for name in names)
    manifest = assert_archive_matches_manifest(entry)
    assert sorted(manifest["excluded"]) == [
        "shadow",
        "store/263/2632a5fb-f759-4d05-824b-dddcb78faff3/tmp_merge_all_1_2_1",
    ]
    # Leaving out what the policy excludes is a decision, not a warning.
    assert manifest["warnings"]["skipped"] == []
    assert entry["warnings"]["skipped"] == 0 and entry["excluded_paths"] == 2
    text = run_coord("backup", "--policies-dir", str(policies), "--dest", str(tmp_path / "b"))
    assert ", 2 paths excluded by policy" in text.stdout and "warnings:" not in text.stdout, text.stdout


def test_exclude_strategy_and_missing_volume(make_volume, tmp_path: Path) -> None:
    volume = make_volume("cache")
    policies = tmp_path / "policies"
    write_policy(policies, "cache", f"volumes: [{volume}]\nstrategy: exclude\n")
    write_policy(policies, "gone", "volumes: [coordtest-no-such-volume]\nstrategy: live\n")
    run = run_coord("backup", "--policies-dir", str(policies), "--dest", str(tmp_path / "b"), "--json")
    assert run.returncode == 1
    by_volume = {v["volume"]: v for v in run.json["volumes"]}
    assert by_volume[volume]["status"] == "excluded"
    assert by_volume["coordtest-no-such-volume"]["status"] == "failed"
    assert by_volume["coordtest-no-such-volume"]["errors"] == [
        "volume 'coordtest-no-such-volume' does not exist (docker volume ls)"
    ]
    assert not (tmp_path / "b" / volume).exists()


def test_malformed_policy_exits_2_without_touching_docker(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "clickhouse", "volumes: ['*clickhouse*']\nstrategy: puase\n")
    # An engine address that cannot answer: exit 2 proves the policy was checked before Docker was contacted.
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    run = run_coord("backup", "--policies-dir", str(policies), "--dest", str(tmp_path / "b"), env=env)
    assert run.returncode == 2
    expected = (
        f"{policies}/clickhouse.yaml:2: strategy: 'puase' is not one of live, pause, stop, exclude, snapshot, auto"
    )
    assert expected in run.stderr
    run = run_coord("backup", "--policies-dir", str(policies), "--dest", str(tmp_path / "b"), "--json", env=env)
    assert run.returncode == 2
    assert run.json == {
        "ok": False,
        "volumes": [],
        "errors": [expected],
    }
    assert not (tmp_path / "b").exists()
    run = run_coord("validate", "--policies-dir", str(policies))
    assert run.returncode == 2 and "puase" in run.stderr


def test_unreachable_engine_is_a_clear_failure(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "a", "volumes: [a]\nstrategy: live\n")
    run = run_coord(
        "backup",
        "--policies-dir",
        str(policies),
        "--dest",
        str(tmp_path / "b"),
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert run.returncode == 1
    assert "cannot reach the Docker engine" in run.stderr
    assert "Traceback" not in run.stderr
