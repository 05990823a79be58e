"""pause and stop on the real engine: quiet writers, containers always back, crash recovery, retries, hooks."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import (
    REPO,
    container_state,
    run_coord,
    start_churning_writer,
    volume_path,
    wait_for,
    write_policy,
)
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.docker

PART = re.compile(r"^\./store/[^/]+/[^/]+/202601_(\d+)_(\d+)_\d+/$")
CLICKHOUSE_EXCLUDES = (REPO / "policies/clickhouse.yaml").read_text().split("exclude:", 1)[1]


def policy_text(volume: str, strategy: str, extra: str = "") -> str:
    return f"volumes: [{volume}]\nstrategy: {strategy}\n{extra}exclude:{CLICKHOUSE_EXCLUDES}"


def archive_members(archive: Path) -> list[str]:
    out = subprocess.run(f"zstd -dc '{archive}' | tar -tf -", shell=True, capture_output=True, check=True)
    return out.stdout.decode().splitlines()


def archived_file(archive: Path, member: str) -> str:
    out = subprocess.run(f"zstd -dc '{archive}' | tar -xOf - '{member}'", shell=True, capture_output=True, check=True)
    return out.stdout.decode()


def assert_writer_was_quiet(archive: Path) -> int:
    """From the writer's own sequence numbers in the archive: every insert up to the last logged one is there
    (no gaps), and nothing beyond the insert in flight at the freeze. Returns the last logged insert."""
    ranges = [(int(m[1]), int(m[2])) for name in archive_members(archive) if (m := PART.match(name))]
    assert ranges, "no data parts in the archive"
    covered: set[int] = set()
    for first, last in ranges:
        covered.update(range(first, last + 1))
    highest = max(covered)
    assert covered == set(range(1, highest + 1)), "gap in the archived block numbers"
    logged = archived_file(archive, "./writer.log").split()
    count = int(archived_file(archive, "./writer.count"))
    assert logged == [str(n) for n in range(1, len(logged) + 1)], "the writer's log has a gap"
    # The writer renames a part, then writes writer.count, then appends to its log: at the freeze each of these
    # may be one insert behind the previous, never further, and nothing is ahead of the newest part.
    assert len(logged) <= count <= len(logged) + 1
    assert count <= highest <= count + 1
    return count


def backup(policies: Path, dest: Path, *extra: str, **options) -> object:
    return run_coord("backup", "--policies-dir", str(policies), "--dest", str(dest), "--json", *extra, **options)


@pytest.fixture
def writer(docker_client, make_volume, make_container):
    return start_churning_writer(docker_client, make_volume, make_container, "pg-data", 10)


@pytest.mark.parametrize("strategy", ["pause", "stop"])
def test_quiesced_backup_is_consistent_and_the_writer_was_quiet(writer, docker_client, tmp_path, strategy) -> None:
    volume, container, mount = writer
    write_policy(tmp_path / "p", "db", policy_text(volume, strategy, "stop_timeout: 10\n"))
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    assert (entry["status"], entry["verdict"]) == ("ok", "consistent"), entry
    assert {k: entry["warnings"][k] for k in ("vanished", "changed", "shrank")} == {
        "vanished": 0,
        "changed": 0,
        "shrank": 0,
    }
    [action] = entry["containers"]
    assert action["action"] == ("paused" if strategy == "pause" else "stopped")
    assert action["restored"] is True and action["prior_state"] == "running"
    assert 0 < entry["downtime_s"] == action["seconds"] < entry["duration_s"] + 15
    last = assert_writer_was_quiet(Path(entry["archive"]))
    manifest = json.loads(Path(entry["manifest"]).read_text())
    assert manifest["containers"] == entry["containers"] and manifest["downtime_s"] == entry["downtime_s"]
    assert container_state(docker_client, container) == "running"
    wait_for(lambda: int((mount / "writer.count").read_text()) > last + 5, what="the writer to carry on")


def test_containers_not_running_are_left_alone(docker_client, make_volume, make_container, tmp_path) -> None:
    volume = make_volume("data")
    stopped = make_container("stopped", ["sleep", "600"], {volume: "/data"})
    paused = make_container("paused", ["sleep", "600"], {volume: "/data"})
    stopped.stop(timeout=0)
    paused.pause()
    for strategy in ("pause", "stop"):
        write_policy(tmp_path / strategy, "db", f"volumes: [{volume}]\nstrategy: {strategy}\n")
        run = backup(tmp_path / strategy, tmp_path / "b")
        assert run.returncode == 0, run.stderr
        [entry] = run.json["volumes"]
        actions = {a["container"]: (a["action"], a["prior_state"]) for a in entry["containers"]}
        assert actions == {stopped.name: ("left-alone", "exited"), paused.name: ("left-alone", "paused")}
        assert container_state(docker_client, stopped) == "exited"
        assert container_state(docker_client, paused) == "paused"


def test_archive_failure_still_puts_containers_back(writer, docker_client, tmp_path) -> None:
    volume, container, mount = writer
    blocker = tmp_path / "dest"
    blocker.write_text("a file where the destination directory should be")
    (mount / "secret.key").write_text("x")
    (mount / "secret.key").chmod(0)  # coord without CAP_DAC_OVERRIDE cannot read it: tar fails inside the window
    for strategy in ("pause", "stop"):
        write_policy(tmp_path / strategy, "db", policy_text(volume, strategy, "stop_timeout: 10\n"))
        # An unwritable destination is found before the containers are touched.
        run = backup(tmp_path / strategy, blocker)
        assert run.returncode == 1
        [entry] = run.json["volumes"]
        assert entry["status"] == "failed" and entry["containers"] == []
        assert any(f"destination {blocker}/{volume} is not writable" in e for e in entry["errors"])
        # Archiving that fails inside the window: the containers are put back all the same.
        run = backup(
            tmp_path / strategy,
            tmp_path / "b",
            prefix=("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"),
        )
        assert run.returncode == 1
        [entry] = run.json["volumes"]
        assert entry["status"] == "failed"
        assert "secret.key: Cannot open: Permission denied" in entry["errors"]
        assert entry["containers"][0]["action"] == ("paused" if strategy == "pause" else "stopped")
        assert entry["containers"][0]["restored"] is True
        assert container_state(docker_client, container) == "running"
    (mount / "secret.key").unlink()


@pytest.fixture
def slow_volume(docker_client, make_volume, make_container):
    """A volume whose archive takes a while (incompressible data), with a running container using it."""
    volume = make_volume("big")
    mount = volume_path(docker_client, volume)
    with open(mount / "big.bin", "wb") as handle:
        for _ in range(48):
            handle.write(os.urandom(8 << 20))  # 384 MiB
    container = make_container("db", ["sleep", "600"], {volume: "/data"})
    return volume, container, mount


def start_backup(policies: Path, dest: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coord", "backup", "--policies-dir", str(policies), "--dest", str(dest), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_until_quiesced(docker_client, container, process: subprocess.Popen, state: str) -> None:
    wait_for(
        lambda: container_state(docker_client, container) == state or process.poll() is not None,
        timeout=60,
        what=f"the container to be {state}",
    )
    assert process.poll() is None, f"coord ended before the window: {process.communicate()}"


def journal_files(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "journal").glob("*.json"))


@pytest.mark.parametrize("strategy,quiet_state", [("pause", "paused"), ("stop", "exited")])
def test_sigterm_mid_archive_restores_then_exits_non_zero(
    slow_volume, docker_client, tmp_path, isolated_state_dir, strategy, quiet_state
) -> None:
    volume, container, _ = slow_volume
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: {strategy}\nstop_timeout: 1\n")
    process = start_backup(tmp_path / "p", tmp_path / "b")
    wait_until_quiesced(docker_client, container, process, quiet_state)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted by SIGTERM" in stderr
    assert json.loads(stdout)["ok"] is False
    assert container_state(docker_client, container) == "running"
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()], "partial archive left behind"
    assert journal_files(isolated_state_dir) == []


@pytest.mark.parametrize("then", ["recover", "backup"])
def test_sigkill_in_the_pause_window_is_recovered(slow_volume, docker_client, tmp_path, isolated_state_dir, then):
    volume, container, _ = slow_volume
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: pause\n")
    process = start_backup(tmp_path / "p", tmp_path / "b")
    wait_until_quiesced(docker_client, container, process, "paused")
    wait_for(lambda: any((tmp_path / "b").rglob("*.partial")), what="the archive to be under way")
    process.kill()
    process.wait()
    assert container_state(docker_client, container) == "paused"  # coord died: only the journal knows
    assert sorted(json.loads(p.read_text())["action"] for p in journal_files(isolated_state_dir)) == [
        "paused",
        "writing",
    ]
    if then == "recover":
        run = run_coord("recover", "--json")
        assert run.returncode == 0, run.stderr
        assert run.json["restored"] == [f"unpaused {container.name} (left paused by coord pid {process.pid})"]
        assert len(run.json["removed_partials"]) == 1
    else:
        run = backup(tmp_path / "p", tmp_path / "b")
        assert run.returncode == 0, run.stderr
        assert f"unpaused {container.name} (left paused by coord pid {process.pid})" in run.json["recovered"]
        assert run.json["volumes"][0]["status"] == "ok"
    assert container_state(docker_client, container) == "running"
    assert journal_files(isolated_state_dir) == []
    assert not list((tmp_path / "b").rglob("*.partial"))


def test_recover_leaves_a_container_someone_already_unpaused(docker_client, make_volume, make_container, tmp_path):
    volume = make_volume("data")
    container = make_container("db", ["sleep", "600"], {volume: "/data"})
    from coord.journal import Journal

    Journal(Path(os.environ["COORD_STATE_DIR"])).record("container", container.id, "paused", container.name)
    run = run_coord("recover", "--json")  # the container runs: coord's pause was already undone by hand
    assert run.returncode == 0
    assert run.json["restored"] == [f"{container.name} was already running: left alone"]
    assert container_state(docker_client, container) == "running"


def test_a_second_run_waits_for_the_lock_then_gives_up(make_volume, tmp_path, isolated_state_dir) -> None:
    volume = make_volume("data")
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: live\n")
    isolated_state_dir.mkdir(parents=True)
    with open(isolated_state_dir / "lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("pid 1 since earlier")
        holder.flush()
        started = time.monotonic()
        run = run_coord(
            "backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"), "--lock-timeout", "1"
        )
        waited = time.monotonic() - started
    assert run.returncode == 1
    assert "another coord run holds" in run.stderr and "pid 1 since earlier" in run.stderr
    assert waited >= 1
    run = run_coord("backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"))
    assert run.returncode == 0, run.stderr


def backup_through_proxy(policies: Path, dest: Path, fail_pattern: str, fail_count: int):
    """Run `coord backup` with the engine behind a FaultProxy failing the matching requests; (run, proxy)."""
    socket_path = Path(f"/tmp/coord-proxy-{os.getpid()}.sock")
    socket_path.unlink(missing_ok=True)
    try:
        with FaultProxy(socket_path, fail_pattern, fail_count=fail_count) as proxy:
            run = backup(policies, dest, env={"DOCKER_HOST": f"unix://{socket_path}"})
    finally:
        socket_path.unlink(missing_ok=True)
    return run, proxy


@pytest.mark.parametrize(
    ("endpoint", "failures"),
    [("pause", 3), ("unpause", 6)],  # quiescing gets 4 attempts, putting back 8: both succeed in the end
)
def test_transient_engine_failures_are_retried(writer, docker_client, tmp_path, endpoint, failures) -> None:
    volume, container, _ = writer
    write_policy(tmp_path / "p", "db", policy_text(volume, "pause"))
    run, proxy = backup_through_proxy(
        tmp_path / "p", tmp_path / "b", rf"^POST /v[\d.]+/containers/[^/]+/{endpoint} ", failures
    )
    assert run.returncode == 0, run.stderr
    assert len(proxy.failed) == failures
    assert run.stderr.count("retrying") == failures, run.stderr
    [entry] = run.json["volumes"]
    assert entry["status"] == "ok" and entry["containers"][0]["restored"] is True
    assert container_state(docker_client, container) == "running"


def test_quiescing_that_keeps_failing_fails_the_volume_cleanly(writer, docker_client, tmp_path) -> None:
    volume, container, _ = writer
    write_policy(tmp_path / "p", "db", policy_text(volume, "pause"))
    run, _ = backup_through_proxy(tmp_path / "p", tmp_path / "b", r"/containers/[^/]+/pause ", 100)
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed"
    assert any("could not pause containers" in e and "503" in e for e in entry["errors"])
    assert container_state(docker_client, container) == "running"


def test_a_container_that_cannot_be_put_back_is_loud_and_recoverable(writer, docker_client, tmp_path) -> None:
    volume, container, _ = writer
    write_policy(tmp_path / "p", "db", policy_text(volume, "pause"))
    run, _ = backup_through_proxy(tmp_path / "p", tmp_path / "b", r"/containers/[^/]+/unpause ", 100)
    assert run.returncode == 1
    assert run.json["ok"] is False
    [error] = run.json["errors"]
    assert error.startswith(f"container {container.name}: could not put {container.name} back")
    assert f"run: docker unpause {container.name}   (or: coord recover)" in error
    [entry] = run.json["volumes"]
    assert entry["containers"][0]["restored"] is False
    assert entry["status"] == "ok"  # the archive itself is good; the run fails because of the container
    assert container_state(docker_client, container) == "paused"
    run = run_coord("recover", "--json")
    assert run.returncode == 0 and len(run.json["restored"]) == 1
    assert container_state(docker_client, container) == "running"


def test_hooks_run_outside_the_pause_and_after_hooks_always_run(writer, docker_client, tmp_path) -> None:
    volume, container, mount = writer
    log_hook = "{container: %s, exec: [sh, -c, 'echo %s >> /data/hooks.log']}"
    hooks = (
        f"hooks:\n  before: [{log_hook % (container.name, 'before')}]\n"
        f"  after: [{log_hook % (container.name, 'after')}]\n"
    )
    write_policy(tmp_path / "p", "db", policy_text(volume, "pause", hooks))
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    [entry] = run.json["volumes"]
    assert [(h["phase"], h["exit_code"]) for h in entry["hooks"]] == [("before", 0), ("after", 0)]
    # The before hook ran before the pause (its line is in the archive), the after hook after it (not archived).
    assert archived_file(Path(entry["archive"]), "./hooks.log") == "before\n"
    assert (mount / "hooks.log").read_text() == "before\nafter\n"

    # A destination that cannot be written is found before any hook runs or any container is touched.
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    run = backup(tmp_path / "p", blocker)
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["containers"] == [] and entry["hooks"] == []
    assert entry["errors"] == [
        f"destination {blocker}/{volume} is not writable (Not a directory); nothing was run, paused or stopped"
    ]
    assert (mount / "hooks.log").read_text() == "before\nafter\n"

    # Archiving fails (a file coord may not read): the after hook still runs.
    (mount / "secret.key").write_text("x")
    (mount / "secret.key").chmod(0)
    run = run_coord(
        "backup",
        "--policies-dir",
        str(tmp_path / "p"),
        "--dest",
        str(tmp_path / "b"),
        "--json",
        prefix=("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"),
    )
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed" and "secret.key: Cannot open: Permission denied" in entry["errors"]
    assert (mount / "hooks.log").read_text() == "before\nafter\nbefore\nafter\n"
    (mount / "secret.key").unlink()

    # A failing before hook: nothing archived, nothing paused, the after hook still runs.
    failing = f"hooks:\n  before: [{{container: {container.name}, exec: [sh, -c, 'exit 3']}}]\n" + (
        f"  after: [{log_hook % (container.name, 'after')}]\n"
    )
    write_policy(tmp_path / "p", "db", policy_text(volume, "pause", failing))
    run = backup(tmp_path / "p", tmp_path / "b2")
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed" and entry["archive"] is None and entry["containers"] == []
    assert entry["errors"] == [
        f"before hook in {container.name} exited 3: sh -c exit 3 (nothing archived: hooks.on_error is fail)"
    ]
    assert (mount / "hooks.log").read_text().endswith("after\nafter\n")
    assert container_state(docker_client, container) == "running"


def test_shared_container_is_quiesced_once_and_stop_order_is_kept(
    docker_client, make_volume, make_container, tmp_path, unique
) -> None:
    service = unique("worker-service")  # unique: other sessions on the same engine must never match it
    data, wal = make_volume("pg-data"), make_volume("pg-wal")
    database = make_container("db", ["sleep", "600"], {data: "/data", wal: "/wal"})
    worker = make_container("worker", ["sleep", "600"], labels={"com.docker.compose.service": service})
    write_policy(
        tmp_path / "p",
        "data",
        f"volumes: [{data}]\nstrategy: stop\nstop_timeout: 1\ncontainers: [{service}]\nstop_order: [{service}]\n",
    )
    write_policy(tmp_path / "p", "wal", f"volumes: [{wal}]\nstrategy: stop\nstop_timeout: 1\n")
    plan = run_coord("plan", "--policies-dir", str(tmp_path / "p"))
    assert plan.returncode == 0, plan.stderr
    assert f"volumes {data}, {wal} share containers: they are quiesced once, for all of them" in plan.stdout
    assert f"stop {worker.name}, {database.name}, in this order (timeout 1s)" in plan.stdout
    assert f"start {database.name}, {worker.name}, in this order" in plan.stdout

    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    first, second = run.json["volumes"]
    assert first["containers"] == second["containers"]
    assert [a["container"] for a in first["containers"]] == [worker.name, database.name]
    assert all(a["action"] == "stopped" and a["restored"] for a in first["containers"])
    for container in (database, worker):
        assert container_state(docker_client, container) == "running"
    # started in reverse stop order: the database first, then the worker
    database.reload()
    worker.reload()
    assert database.attrs["State"]["StartedAt"] < worker.attrs["State"]["StartedAt"]
