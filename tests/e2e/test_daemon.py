"""The daemon, history, report, status, health and webhooks on the real engine, through the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import REPO, container_state, run_coord, volume_path, wait_for, write_policy
from tests.receiver import receiving

from coord.docker_ops import RESTORE_DEADLINE_S, START_TIMEOUT_S, UNPAUSE_TIMEOUT_S
from coord.node import this_node

pytestmark = pytest.mark.docker


# How long a SIGTERM'd daemon may take to exit: its interrupted run puts the containers back, retrying an unpause
# or a start for up to coord's own restore deadline (plus one call's timeout); beyond that the test gives up.
STOP_PATIENCE_S = RESTORE_DEADLINE_S + max(UNPAUSE_TIMEOUT_S, START_TIMEOUT_S) + 30


class Daemon:
    """`coord daemon` in a subprocess, its JSON event lines (stdout) and its log (stderr) read by threads.

    Python's faulthandler is on: a daemon that does not stop in time is sent SIGABRT, which prints every thread's
    stack to its stderr, and the failure shows it."""

    def __init__(self, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "coord", "daemon", "--log-format", "json", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.events: list[dict] = []
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        self._log_reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        self.log.extend(self.process.stderr)  # read as it comes: a full pipe would block the daemon's logging

    def stderr(self) -> str:
        """The daemon's log so far (all of it once the process ended)."""
        if self.process.poll() is not None:
            self._log_reader.join(timeout=10)
        return "".join(self.log)

    def wait_for(self, event: str, count: int = 1, timeout: float = 60, **fields) -> list[dict]:
        """Collect events until `count` of `event` (with these field values) were seen; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"no {count} {event} event(s); events: {self.events}; log: {self.stderr()}")
            self.events.append(json.loads(line))

    def stop(self, timeout: float = STOP_PATIENCE_S) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to stderr
            self.process.wait(timeout=30)
            raise AssertionError(
                f"the daemon did not stop within {timeout:.0f} s of SIGTERM; events: {self.events[-8:]}; "
                f"log and stacks: {self.stderr()[-12000:]}"
            ) from None
        self.wait_for("daemon-stopped")
        return code


def database(docker_client, make_volume, make_container, policies: Path, data_bytes: int) -> tuple[str, object]:
    """A volume with `data_bytes` of incompressible data, a running container using it, and a pause policy."""
    volume = make_volume("db-data")
    with open(volume_path(docker_client, volume) / "table.dat", "wb") as handle:
        for _ in range(0, data_bytes, 8 << 20):
            handle.write(os.urandom(min(8 << 20, data_bytes)))
    container = make_container("db", ["sleep", "600"], {volume: "/data"})
    write_policy(policies, "db", f"volumes: [{volume}]\nstrategy: pause\n")
    return volume, container


def start_daemon(tmp_path: Path, schedule: str) -> Daemon:
    return Daemon("--schedule", schedule, "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"))


def test_daemon_runs_on_schedule_and_stops_cleanly_on_sigterm(
    docker_client, make_volume, make_container, tmp_path
) -> None:
    volume, container = database(docker_client, make_volume, make_container, tmp_path / "p", 4096)
    daemon = start_daemon(tmp_path, "*/2 * * * * *")
    try:
        finished = daemon.wait_for("run-finished", count=2, timeout=30)
        code = daemon.stop()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
    assert code == 0, daemon.stderr()
    assert [e["status"] for e in finished] == ["ok", "ok"]
    kinds = [e["event"] for e in daemon.events]
    assert kinds[:3] == ["daemon-started", "recovered", "next-run"]
    assert kinds[-1] == "daemon-stopped" and daemon.events[-1]["signal"] == "SIGTERM"
    first = kinds.index("run-started")
    assert kinds[first : first + 3] == ["run-started", "volume", "run-finished"]
    volumes = [e for e in daemon.events if e["event"] == "volume"]
    assert all(e["volume"] == volume and e["status"] == "ok" and e["downtime_s"] > 0 for e in volumes)
    assert container_state(docker_client, container) == "running"

    report = run_coord("report", "--json")
    assert report.returncode == 0, report.stderr
    [row] = report.json["volumes"]
    assert (row["policy"], row["volume"], row["failures"]) == ("db", volume, 0)
    assert row["runs"] == row["successes"] >= 2 and row["success_rate"] == 1.0
    assert 0 < row["downtime_mean_s"] <= row["downtime_max_s"]
    assert report.json["runs"]["total"] == row["runs"] and report.json["runs"]["crashed"] == 0

    status = run_coord("status")
    assert status.returncode == 0, status.stderr
    [line] = status.stdout.splitlines()
    assert line.startswith(f"OK   {volume} (policy db, pause)") and "verdict consistent" in line
    assert run_coord("health").returncode == 0


def test_sigterm_during_a_scheduled_run_puts_the_container_back(
    docker_client, make_volume, make_container, tmp_path
) -> None:
    _, container = database(
        docker_client, make_volume, make_container, tmp_path / "p", 256 << 20
    )  # archived in seconds
    daemon = start_daemon(tmp_path, "* * * * * *")
    try:
        [started] = daemon.wait_for("run-started", timeout=30)
        wait_for(lambda: container_state(docker_client, container) == "paused", timeout=30, what="the pause")
        code = daemon.stop()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
    assert code == 0, daemon.stderr()
    assert container_state(docker_client, container) == "running"
    [interrupted] = daemon.wait_for("run-interrupted", run=started["run"])
    assert interrupted["signal"] == "SIGTERM"
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()], "partial archive left behind"
    status = run_coord("status", "--json").json
    assert status["last_run"]["status"] == "interrupted" and status["last_run"]["id"] == started["run"]
    health = run_coord("health")
    assert health.returncode == 1 and "interrupted by SIGTERM" in health.stdout


def backup(policies: Path, dest: Path, *extra: str):
    return run_coord("backup", "--policies-dir", str(policies), "--dest", str(dest), "--json", *extra)


def test_health_follows_the_last_run_and_the_schedule(make_volume, tmp_path) -> None:
    volume = make_volume("data")
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: live\n")
    assert run_coord("health").stdout == "unhealthy: no backup run recorded yet\n"
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert backup(tmp_path / "p", blocker).returncode == 1
    health = run_coord("health")
    assert health.returncode == 1
    assert (
        health.stdout.startswith("unhealthy: last run 1 (")
        and f"failed: {volume}: destination {blocker}/{volume} is not writable" in health.stdout
    )

    assert backup(tmp_path / "p", tmp_path / "b").returncode == 0
    health = run_coord("health", "--json")
    assert health.returncode == 0 and health.json["healthy"] is True
    assert health.json["reason"].startswith("last run 2 (")

    on_time = run_coord("health", "--schedule", "0 3 * * *")
    assert on_time.returncode == 0, on_time.stdout
    time.sleep(2.1)
    overdue = run_coord("health", "--schedule", "* * * * * *", "--grace", "0")
    assert overdue.returncode == 1 and overdue.stdout.startswith("unhealthy: overdue: a scheduled run was due at")

    report = run_coord("report", "--json").json
    [row] = report["volumes"]
    assert (row["runs"], row["successes"], row["failures"], row["success_rate"]) == (2, 1, 1, 0.5)


class Webhooks:
    """A local HTTP server that records every POST (path and JSON body)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, self.headers["Content-Type"], json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *arguments) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhooks():
    server = Webhooks()
    yield server
    server.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_failure_webhook_gets_the_run_and_the_log_tail(webhooks, make_volume, tmp_path) -> None:
    volume = make_volume("data")
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: live\n")
    url = f"http://127.0.0.1:{webhooks.port}/hooks/s3cr3t-token"
    write_policy(tmp_path / "p", "_defaults", f"notify:\n  webhooks:\n    - url: {url}\n      log_lines: 5\n")
    assert run_coord("validate", "--policies-dir", str(tmp_path / "p")).returncode == 2  # log_lines is misplaced
    write_policy(tmp_path / "p", "_defaults", f"notify:\n  webhooks: [{{url: '{url}'}}]\n  log_lines: 5\n")
    assert run_coord("validate", "--policies-dir", str(tmp_path / "p")).returncode == 0

    assert backup(tmp_path / "p", tmp_path / "b").returncode == 0  # success: not subscribed
    assert webhooks.received == []
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    run = backup(tmp_path / "p", blocker)
    assert run.returncode == 1
    [(path, content_type, body)] = webhooks.received
    assert (path, content_type) == ("/hooks/s3cr3t-token", "application/json")
    assert body["event"] == "failure" and body["run"]["status"] == "failed" and body["run"]["id"] == 2
    assert body["text"].endswith(f"backup run 2 failed: 1 volume, 1 failed ({volume}: target local failed)")
    assert body["result"]["volumes"][0]["status"] == "failed"
    assert body["result"] == run.json
    assert 0 < len(body["log_tail"]) <= 5
    assert any(f"{volume}: destination {blocker}/{volume} is not writable" in line for line in body["log_tail"])
    assert "s3cr3t" not in run.stderr


def test_a_failing_webhook_never_fails_the_backup(make_volume, tmp_path) -> None:
    volume = make_volume("data")
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: live\n")
    port = closed_port()
    write_policy(
        tmp_path / "p",
        "_defaults",
        f"notify:\n  webhooks:\n    - {{url: 'http://127.0.0.1:{port}/s3cr3t', events: [start, success, failure]}}\n"
        "  attempts: 1\n",  # no retries: this test is about what a failed call does, not about the backoff
    )
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stderr
    assert run.json["ok"] is True and run.json["volumes"][0]["status"] == "ok"
    for event in ("start", "success"):
        assert f"notification of {event} to http://127.0.0.1:{port} failed: Connection refused" in run.stderr
    assert "s3cr3t" not in run.stderr
    assert run_coord("status", "--json").json["last_run"]["status"] == "ok"


def test_daemon_serves_metrics_pings_and_notifies_around_its_runs(
    docker_client, make_volume, make_container, tmp_path
) -> None:
    volume, container = database(docker_client, make_volume, make_container, tmp_path / "p", 4096)
    with receiving() as receiver:
        write_policy(
            tmp_path / "p",
            "_defaults",
            f"notify: {{urls: ['json://{receiver.base}/notify'], on: [success]}}\n"
            f"ping: {{healthchecks: ['http://{receiver.base}/hc/0f1e']}}\n",
        )
        daemon = Daemon(
            "--schedule", "*/2 * * * * *", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"),
            "--metrics-addr", "127.0.0.1:0", "--metrics-file", str(tmp_path / "coord.prom"),
        )  # fmt: skip
        try:
            [serving] = daemon.wait_for("metrics-serving", timeout=30)
            daemon.wait_for("run-finished", count=2, timeout=60)
            daemon.wait_for("notified", count=2, timeout=30)
            with urllib.request.urlopen(f"http://{serving['address']}/metrics", timeout=10) as response:
                scrape = response.read().decode()
            code = daemon.stop()
        finally:
            if daemon.process.poll() is None:
                daemon.process.kill()
        pings = [path for path in receiver.paths() if "/hc/" in path]
        notified = [r for r in receiver.received if r.path == "/notify"]
    assert code == 0, daemon.stderr()
    print(scrape)  # shown with -s: what Prometheus scrapes
    runs = [e for e in daemon.events if e["event"] == "run-finished"]
    node = this_node()  # the daemon runs here, without COORD_NODE of its own
    labels = f'node="{node}",policy="db",volume="{volume}"'
    assert f'coord_volume_last_run_status{{node="{node}",policy="db",status="ok",volume="{volume}"}} 1.0' in scrape
    assert f"coord_volume_last_run_downtime_seconds{{{labels}}}" in scrape
    assert 'coord_last_run_status{status="ok"} 1.0' in scrape
    assert "coord_daemon_next_run_timestamp_seconds " in scrape
    families = {family.name for family in text_string_to_metric_families(scrape)}
    assert {"coord_volume_archive_size_bytes", "coord_volume_last_success_timestamp_seconds"} <= families
    textfile = {family.name for family in text_string_to_metric_families((tmp_path / "coord.prom").read_text())}
    assert families == textfile
    # each run pinged /start then success, in order; the runs' own notifications arrived
    assert pings[: 2 * len(runs)] == ["POST /hc/0f1e/start", "POST /hc/0f1e"] * len(runs)
    assert json.loads(notified[0].body)["title"].endswith("backup succeeded (all policies): 1 volume, 0 failed")
    kinds = [e["event"] for e in daemon.events]
    assert {"pinged", "notified", "metrics-written"} <= set(kinds)
    assert container_state(docker_client, container) == "running"
