"""Run records (run_records.py) and the fleet report over them (fleet.py): the record's shape, names, keeping and
publishing (a record that cannot be published is kept and published by the next run, oldest first), pruning,
and the aggregation: runs, success rate, last failure with its message, silent nodes, one count per record
found on several targets. Real files in a temporary directory; no Docker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coord.defaults import load_defaults
from coord.errors import PolicyError
from coord.fleet import fleet_report, render_fleet
from coord.history import RunRow
from coord.policy import Strategy
from coord.report import parse_since, parse_week
from coord.results import ContainerAction, RunResult, TargetResult, TargetStatus, VolumeResult, VolumeStatus
from coord.run_records import (
    RUNS_DIRECTORY,
    UNPUBLISHED_DIRECTORY,
    build_record,
    pending,
    prune_records,
    publish_run_record,
    read_record,
    record_name,
    stamp_of,
)
from coord.targets import Target
from coord.targets.archives import LocalStore

WEEK = parse_week("2026-W48")  # Monday 2026-11-23 .. 2026-11-30
MONDAY = WEEK.start


def volume(name: str, status: str, *, error: str | None = None, downtime: float = 0.0) -> VolumeResult:
    result = VolumeResult(volume=name, policy="db", strategy=Strategy.PAUSE, status=VolumeStatus(status))
    result.containers = [
        ContainerAction("app.1.abcdefghijklmnopqrstuvwxy", "0" * 12, "paused", "running", downtime, service="app"),
        ContainerAction("sidecar", "1" * 12, "left-alone", "exited"),  # not quiesced: not named
    ]
    if status == "failed":
        result.errors.append(error or "failed")
        result.targets = [TargetResult("shared", TargetStatus.SKIPPED)]
    else:
        result.archive, result.verdict = f"/b/{name}/{name}-x.tar.zst", None
        result.targets = [TargetResult("shared", TargetStatus.OK, ref=f"shared:{name}/{name}-x.tar.zst")]
    return result


def run_row(run_id: int, started: datetime, status: str, errors: list[str] | None = None) -> RunRow:
    finished = started + timedelta(minutes=1)
    return RunRow(run_id, started, finished, status, "schedule", 4242, None, "host-1", [], errors or [], 0, 0)


def record(node: str, run_id: int, started: datetime, *volumes: VolumeResult) -> dict[str, Any]:
    result = RunResult(volumes=list(volumes))
    return build_record(node, run_row(run_id, started, "ok" if result.ok else "failed"), result)


def put(root: Path, document: dict[str, Any]) -> None:
    """A record on a local target, as publishing leaves it."""
    started = datetime.fromisoformat(str(document["run"]["started_at"]).replace("Z", "+00:00"))
    path = root / RUNS_DIRECTORY / str(document["node"]) / record_name(started, int(document["run"]["id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_a_record_holds_the_run_and_each_volume_as_the_history_row_with_services_and_refs() -> None:
    started = datetime(2026, 11, 24, 3, 0, 7, 250000, tzinfo=UTC)
    long_error = "could not pause containers: " + "x" * 2000
    document = record("node-a", 7, started, volume("pg", "ok", downtime=0.5), volume("ch", "failed", error=long_error))
    assert record_name(started, 7) == "20261124T030007Z-7.json"
    assert stamp_of("20261124T030007Z-7.json") == started.replace(microsecond=0)
    assert stamp_of("20261124T030007Z-7.json.partial") is None and stamp_of(".x.tmp-1") is None
    assert document["format"] == 1 and document["kind"] == "coord-run" and document["node"] == "node-a"
    run = document["run"]
    assert (run["id"], run["status"], run["trigger"], run["host"]) == (7, "failed", "schedule", "host-1")
    assert run["started_at"] == "2026-11-24T03:00:07.250000Z" and document["coord_version"]
    pg, ch = document["volumes"]
    assert (pg["volume"], pg["status"], pg["strategy"], pg["downtime_s"]) == ("pg", "ok", "pause", 0.5)
    assert pg["services"] == ["app"] and pg["archives"] == ["shared:pg/pg-x.tar.zst"]
    assert ch["status"] == "failed" and ch["archives"] == [] and len(ch["error"]) == 500
    assert ch["error"].startswith("could not pause containers: xxx") and ch["error"].endswith("...")
    read = read_record(json.loads(json.dumps(document)))
    assert (read.node, read.run_id, read.started_at, read.status) == ("node-a", 7, started, "failed")
    assert [(v.row.volume, v.row.status, v.row.run_id, v.row.started_at) for v in read.volumes] == [
        ("pg", "ok", 7, started), ("ch", "failed", 7, started),
    ]  # fmt: skip


def test_the_fleet_report_counts_runs_rates_last_failure_and_shows_a_silent_node(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    now = MONDAY + timedelta(days=6)
    put(root, record("node-a", 1, MONDAY + timedelta(hours=3), volume("data-a", "ok", downtime=0.2)))
    put(root, record("node-a", 2, MONDAY + timedelta(days=1, hours=3),
                     volume("data-a", "failed", error="policy db: expect: no file matches 'PG_VERSION'")))  # fmt: skip
    put(root, record("node-b", 1, MONDAY + timedelta(hours=4), volume("data-b", "ok", downtime=1.0)))
    put(root, record("node-c", 9, MONDAY - timedelta(days=3), volume("data-c", "ok")))  # the week before only
    put(root, record("node-a", 3, MONDAY + timedelta(days=8), volume("data-a", "ok")))  # after the period
    (root / RUNS_DIRECTORY / "node-a" / "20261125T030000Z-4.json.partial").write_text("{")  # never read
    copy = tmp_path / "copy"  # the same records on a second target count once
    for node in ("node-a", "node-b"):
        (copy / RUNS_DIRECTORY / node).mkdir(parents=True)
        for path in (root / RUNS_DIRECTORY / node).glob("*.json"):
            (copy / RUNS_DIRECTORY / node / path.name).write_bytes(path.read_bytes())

    report = fleet_report([LocalStore("shared", root), LocalStore("copy", copy)], WEEK, now)
    document = report.to_json()
    assert document["errors"] == [] and document["nodes"] == ["node-a", "node-b", "node-c"]
    assert document["silent"] == ["node-c"]
    rows = {row["node"]: row for row in document["rows"]}
    a, b = rows["node-a"], rows["node-b"]
    assert (a["volume"], a["runs"], a["ok"], a["failures"], a["success_rate"]) == ("data-a", 2, 1, 1, 0.5)
    assert a["last_failure"]["error"] == "policy db: expect: no file matches 'PG_VERSION'"
    assert a["last_failure"]["run"] == 2 and a["last_success"] == "2026-11-23T03:00:00Z"
    assert a["services"] == ["app"] and a["downtime_max_s"] == 0.2 and a["downtime_mean_s"] == 0.1
    assert (b["runs"], b["ok"], b["failures"], b["success_rate"], b["last_failure"]) == (1, 1, 0, 1.0, None)
    assert "node-c" not in rows  # its record is older than the period: read for "last seen" only
    nodes = {node["node"]: node for node in document["node_runs"]}
    assert nodes["node-c"]["silent"] and nodes["node-c"]["last_seen"] == "2026-11-20T00:00:00Z"
    assert nodes["node-a"]["runs"] == 2 and nodes["node-a"]["last_seen"] == "2026-11-24T03:00:00Z"

    text = "\n".join(render_fleet(report))
    assert "3 node(s), 3 run(s) recorded (1 failed, 2 ok)" in text
    assert "SILENT: no run record in this period" in text.splitlines()[4]
    print(text)
    assert "last failure: node-a data-a (1 of 2 runs failed) 2026-11-24 03:00:00Z run 2: policy db: expect:" in text
    assert " 50% " in text and " 100% " in text


def test_a_record_that_cannot_be_read_is_reported_and_the_others_counted(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    put(root, record("node-a", 1, MONDAY + timedelta(hours=3), volume("data-a", "ok")))
    torn = root / RUNS_DIRECTORY / "node-a" / "20261124T030000Z-2.json"
    torn.write_text('{"kind": "coord-run", "volumes": [{"volu')
    report = fleet_report([LocalStore("shared", root)], WEEK, MONDAY + timedelta(days=6))
    assert len(report.errors) == 1 and str(torn) in report.errors[0]
    assert [(row.node, row.run_count()) for row in report.rows] == [("node-a", 1)]


def test_a_run_that_failed_before_any_volume_counts_as_a_failed_run_of_its_node(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    started = MONDAY + timedelta(hours=3)
    put(root, build_record("node-a", run_row(5, started, "failed", ["Docker is not reachable"]), None))
    report = fleet_report([LocalStore("shared", root)], WEEK, MONDAY + timedelta(days=6))
    assert report.rows == [] and report.nodes[0].runs == {"failed": 1}
    assert report.nodes[0].run_errors == [(started, "Docker is not reachable")]
    assert "run failed: node-a 2026-11-23 03:00:00Z: Docker is not reachable" in render_fleet(report)


def test_a_record_that_cannot_be_published_is_kept_and_published_by_the_next_run_oldest_first(
    tmp_path: Path,
) -> None:
    state, root = tmp_path / "state", tmp_path / "target"
    root.write_text("not a directory: the target cannot be written")
    target = Target("shared", local_path=root)
    first = record("node-a", 1, MONDAY, volume("data-a", "failed", error="the target is down"))
    warnings = publish_run_record(state, [target], first)
    assert len(warnings) == 1 and warnings[0].startswith("run records not published to target shared: ")
    assert "1 kept in" in warnings[0] and "published by the next run" in warnings[0]
    assert pending(state, "shared") == [("node-a", "20261123T000000Z-1.json")]
    second = record("node-a", 2, MONDAY + timedelta(hours=1), volume("data-a", "failed"))
    assert "2 kept in" in publish_run_record(state, [target], second)[0]

    root.unlink()  # the target is back
    third = record("node-a", 3, MONDAY + timedelta(hours=2), volume("data-a", "ok"))
    assert publish_run_record(state, [target], third) == []
    assert pending(state, "shared") == []
    published = sorted(path.name for path in (root / RUNS_DIRECTORY / "node-a").iterdir())
    assert published == ["20261123T000000Z-1.json", "20261123T010000Z-2.json", "20261123T020000Z-3.json"]
    assert json.loads((root / RUNS_DIRECTORY / "node-a" / published[0]).read_text()) == first
    assert not list((state / UNPUBLISHED_DIRECTORY / "shared" / "node-a").iterdir())
    report = fleet_report([LocalStore("shared", root)], WEEK, MONDAY + timedelta(days=1))
    assert [(row.run_count(), row.run_count("failed")) for row in report.rows] == [(3, 2)]


def test_a_kept_record_that_became_unreadable_is_set_aside_and_does_not_block_the_others(tmp_path: Path) -> None:
    state, root = tmp_path / "state", tmp_path / "target"
    target = Target("shared", local_path=root)
    broken = state / UNPUBLISHED_DIRECTORY / "shared" / "node-a" / "20261122T000000Z-1.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"kind": "coord-ru')  # older than the run's own: tried first
    assert publish_run_record(state, [target], record("node-a", 2, MONDAY, volume("v", "ok"))) == []
    assert [path.name for path in (root / RUNS_DIRECTORY / "node-a").iterdir()] == ["20261123T000000Z-2.json"]
    assert [path.name for path in broken.parent.iterdir()] == ["20261122T000000Z-1.json.unreadable"]


def test_a_restic_target_gets_no_record_and_the_fleet_report_says_so(tmp_path: Path) -> None:
    from coord.targets.archives import ResticStore
    from coord.targets.config import ResticTargetConfig

    target = Target("vault", restic=ResticTargetConfig(str(tmp_path / "repo")))
    assert publish_run_record(tmp_path / "state", [target], record("node-a", 1, MONDAY, volume("v", "ok"))) == []
    assert not (tmp_path / "state" / UNPUBLISHED_DIRECTORY).exists()

    class EmptyRepository(ResticStore):
        def volumes(self) -> list[str]:
            return []

        def nodes(self) -> list[str]:
            return []

    report = fleet_report([EmptyRepository("vault", target.repository())], WEEK, MONDAY)
    assert report.errors == [] and report.notes == [
        "target vault is a restic repository: it carries no run records, so its archives are counted but not its runs"
    ]


def test_prune_removes_records_older_than_keep_days_only(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    now = MONDAY + timedelta(days=100)
    put(root, record("node-a", 1, now - timedelta(days=91), volume("v", "ok")))
    put(root, record("node-a", 2, now - timedelta(days=89), volume("v", "ok")))
    put(root, record("node-b", 1, now - timedelta(days=200), volume("v", "failed")))
    store = LocalStore("shared", root)
    planned = prune_records(store, 90, now, dry_run=True)
    assert planned is not None and len(planned.deleted) == 2 and planned.kept == 1
    assert len(list(root.rglob("*.json"))) == 3  # a dry run deletes nothing
    done = prune_records(store, 90, now)
    assert done is not None and done.errors == [] and done.kept == 1
    assert [path.name for path in root.rglob("*.json")] == [record_name(now - timedelta(days=89), 2)]


def test_run_records_keep_days_is_a_validated_defaults_key_with_a_default(tmp_path: Path) -> None:
    assert load_defaults(tmp_path).run_records.keep_days == 90
    (tmp_path / "_defaults.yaml").write_text("run_records:\n  keep_days: 400\n")
    assert load_defaults(tmp_path).run_records.keep_days == 400
    (tmp_path / "_defaults.yaml").write_text("run_records:\n  keep_days: 0\n  keep: 3\n")
    with pytest.raises(PolicyError) as raised:
        load_defaults(tmp_path)
    problems = "\n".join(raised.value.problems)
    assert "_defaults.yaml:2: run_records.keep_days" in problems and "run_records.keep" in problems


def test_a_crashed_run_gets_its_record_from_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed before it finished publishes nothing; the next run (here through the CLI, against the
    in-memory engine of tests/fakes.py) publishes a `crashed` record for it, then its own."""
    from tests.fakes import FakeEngine
    from tests.unit.test_history import run_in_child
    from typer.testing import CliRunner

    from coord.cli import app
    from coord.docker_ops import DockerControl
    from coord.history import History

    engine = FakeEngine(tmp_path / "volumes")
    engine.add_volume("pg", {"a.txt": "a\n"})
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: engine))
    monkeypatch.setenv("COORD_NODE", "node-a")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "db.yaml").write_text("volumes: [pg]\nstrategy: live\n")
    run_in_child(History(tmp_path / "state"), "h.start_run('schedule')")  # then the process is gone
    arguments = ["backup", "--json", "--policies-dir", str(tmp_path / "policies"), "--dest", str(tmp_path / "dest")]
    arguments += ["--state-dir", str(tmp_path / "state"), "--volumes-root", str(tmp_path / "volumes")]
    done = CliRunner().invoke(app, arguments, catch_exceptions=False)
    assert done.exit_code == 0, done.stdout
    assert json.loads(done.stdout)["warnings"] == []
    records = sorted((tmp_path / "dest" / RUNS_DIRECTORY / "node-a").iterdir())
    crashed, mine = (read_record(json.loads(path.read_text())) for path in records)
    assert (crashed.run_id, crashed.status, crashed.volumes) == (1, "crashed", [])
    assert "ended before it finished" in crashed.errors[0]
    assert (mine.run_id, mine.status, [v.row.volume for v in mine.volumes]) == (2, "ok", ["pg"])
    now = datetime.now(UTC)
    report = fleet_report([LocalStore("local", tmp_path / "dest")], parse_since("2026-01-01", now), now)
    assert [(node.node, node.runs) for node in report.nodes] == [("node-a", {"crashed": 1, "ok": 1})]
    assert "ended before it finished" in report.nodes[0].run_errors[0][1]
    assert fleet_report([LocalStore("local", tmp_path / "dest")], WEEK, MONDAY).nodes == []  # seen only later


def test_coord_prune_deletes_old_run_records_unless_a_policy_narrows_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from coord.cli import app

    dest, policies = tmp_path / "dest", tmp_path / "policies"
    policies.mkdir()
    (policies / "db.yaml").write_text("volumes: [pg]\nstrategy: live\n")
    (policies / "_defaults.yaml").write_text("run_records: {keep_days: 30}\n")
    now = datetime.now(UTC)
    put(dest, record("node-a", 1, now - timedelta(days=31), volume("pg", "ok")))
    put(dest, record("node-a", 2, now - timedelta(days=1), volume("pg", "ok")))
    common = ["--policies-dir", str(policies), "--dest", str(dest), "--state-dir", str(tmp_path / "state")]
    narrowed = CliRunner().invoke(app, ["prune", "--policy", "db", "--json", *common], catch_exceptions=False)
    assert narrowed.exit_code == 0 and json.loads(narrowed.stdout)["run_records"] == []
    text = CliRunner().invoke(app, ["prune", "--dry-run", *common], catch_exceptions=False)
    old = dest / RUNS_DIRECTORY / "node-a" / record_name(now - timedelta(days=31), 1)
    assert f"local:_runs: would delete {old} (run record older than run_records.keep_days)" in text.stdout
    assert old.exists()
    done = CliRunner().invoke(app, ["prune", "--json", *common], catch_exceptions=False)
    assert done.exit_code == 0, done.stdout
    assert json.loads(done.stdout)["run_records"] == [
        {"target": "local", "deleted": [str(old)], "kept": 1, "errors": []}
    ]
    assert not old.exists() and len(list((dest / RUNS_DIRECTORY / "node-a").iterdir())) == 1
