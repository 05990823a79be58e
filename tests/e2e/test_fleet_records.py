"""Issue 18, the fleet report's success rate: two "nodes" (COORD_NODE=node-a / node-b, each with its own state
directory and policies) back up real volumes through the `coord` command line to one real rclone server
(`rclone serve webdav` on loopback, tests/rclone_servers.py). Every run publishes its run record to the shared
target (`_runs/<node>/`), failed runs too; `coord report --fleet` counts them: node-a 1 of 2 (its second run
failed: an `expect:` pattern that matches nothing), node-b 1 of 1. Then the server is down for one of node-b's
runs: that failed run's record is kept in node-b's state directory, published by its next run once the server
is back, and counted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CoordRun, run_coord, volume_path, write_policy
from coord.run_records import RUNS_DIRECTORY, UNPUBLISHED_DIRECTORY
from rclone_servers import ServedRemote

pytestmark = pytest.mark.docker

TARGET = "shared"


def fleet(policies: Path, remote: ServedRemote, *extra: str) -> CoordRun:
    """`coord report --fleet --json` over the shared target, as any node (or an operator's laptop) runs it."""
    return run_coord(
        "report", "--fleet", "--since", "2026-01-01", "--policies-dir", str(policies), "--json", *extra,
        env={**remote.environment(), "COORD_DEST": ""},
    )  # fmt: skip


def test_every_run_of_every_node_is_counted_and_a_record_kept_while_the_target_was_down_is_published_later(
    rclone_servers: Callable[[str], ServedRemote], tmp_path: Path, docker_client, make_volume
) -> None:
    remote = rclone_servers("webdav")
    nodes: dict[str, Callable[..., CoordRun]] = {}
    volumes: dict[str, str] = {}
    for node in ("node-a", "node-b"):
        volume = make_volume(f"data-{node}")
        (volume_path(docker_client, volume) / "PG_VERSION").write_text("16\n")
        policies, state = tmp_path / node / "policies", tmp_path / node / "state"
        write_policy(policies, "db", f"volumes: [{volume}]\nstrategy: live\n")
        (policies / "_defaults.yaml").write_text(f'targets:\n  {TARGET}: {{rclone: "{remote.path}"}}\n')
        environment = {**remote.environment(), "COORD_DEST": "", "COORD_NODE": node}

        def coord(*arguments: str, policies: Path = policies, state: Path = state, env: dict[str, str] = environment):
            return run_coord(*arguments, "--policies-dir", str(policies), "--state-dir", str(state), env=env)

        nodes[node], volumes[node] = coord, volume

    for node in ("node-a", "node-b"):
        done = nodes[node]("backup", "--json")
        assert done.returncode == 0 and done.json["warnings"] == [], done.stdout + done.stderr
    # node-a's policy now expects an entry the volume does not hold: its next run fails that volume
    write_policy(tmp_path / "node-a" / "policies", "db", f"volumes: [{volumes['node-a']}]\nstrategy: live\n"
                 "expect: [no-such-file]\n")  # fmt: skip
    failed = nodes["node-a"]("backup", "--json")
    assert failed.returncode == 1 and failed.json["volumes"][0]["status"] == "failed", failed.stdout + failed.stderr
    assert failed.json["warnings"] == []  # its record was published: the target was up
    on_target = sorted(path.name for path in (remote.local_root / RUNS_DIRECTORY / "node-a").iterdir())
    assert len(on_target) == 2 and all(name.endswith(".json") for name in on_target), on_target
    record = json.loads((remote.local_root / RUNS_DIRECTORY / "node-a" / on_target[-1]).read_text())
    assert record["node"] == "node-a" and record["run"]["status"] == "failed"
    assert record["volumes"][0]["volume"] == volumes["node-a"] and record["volumes"][0]["archives"] == []

    report = fleet(tmp_path / "node-a" / "policies", remote)
    assert report.returncode == 0, report.stdout + report.stderr
    assert report.json["nodes"] == ["node-a", "node-b"] and report.json["errors"] == []
    rows = {row["node"]: row for row in report.json["rows"]}
    a, b = rows["node-a"], rows["node-b"]
    assert (a["volume"], a["runs"], a["ok"], a["failures"], a["success_rate"]) == (volumes["node-a"], 2, 1, 1, 0.5)
    assert a["last_failure"]["error"].startswith("expect: no archived entry matches 'no-such-file'")
    assert (a["archives"], a["statuses"]) == (1, {"ok": 1})  # the failed run published no archive
    assert (b["volume"], b["runs"], b["ok"], b["failures"], b["success_rate"]) == (volumes["node-b"], 1, 1, 0, 1.0)
    text = run_coord(
        "report", "--fleet", "--since", "2026-01-01", "--policies-dir", str(tmp_path / "node-a" / "policies"),
        env={**remote.environment(), "COORD_DEST": ""},
    )  # fmt: skip
    assert text.returncode == 0, text.stdout + text.stderr
    assert "2 node(s), 3 run(s) recorded (1 failed, 2 ok)" in text.stdout, text.stdout
    assert f"last failure: node-a {volumes['node-a']} (1 of 2 runs failed)" in text.stdout, text.stdout
    print(text.stdout)

    remote.stop()  # node-b's next run cannot reach the target: it fails, and its record must not be lost
    down = nodes["node-b"]("backup", "--json")
    assert down.returncode == 1, down.stdout + down.stderr
    [warning] = down.json["warnings"]
    assert warning.startswith(f"run records not published to target {TARGET}: ") and "1 kept in" in warning
    kept = tmp_path / "node-b" / "state" / UNPUBLISHED_DIRECTORY / TARGET / "node-b"
    assert len(list(kept.iterdir())) == 1
    status = run_coord("status", "--json", "--state-dir", str(tmp_path / "node-b" / "state"))
    assert any("run records not published" in error for error in status.json["last_run"]["errors"]), status.stdout

    remote.start()
    back = nodes["node-b"]("backup", "--json")
    assert back.returncode == 0 and back.json["warnings"] == [], back.stdout + back.stderr
    assert list(kept.iterdir()) == []
    report = fleet(tmp_path / "node-a" / "policies", remote)
    assert report.returncode == 0 and report.json["errors"] == [], report.stdout + report.stderr
    b = {row["node"]: row for row in report.json["rows"]}["node-b"]
    assert (b["runs"], b["ok"], b["failures"]) == (3, 2, 1), b
    assert TARGET in b["last_failure"]["error"], b["last_failure"]
    node_runs = {node["node"]: node for node in report.json["node_runs"]}
    assert node_runs["node-b"]["run_statuses"] == {"ok": 2, "failed": 1} and report.json["silent"] == []
