"""Notifications, dead-man pings and metrics around real runs: the backup runs on the in-memory engine
(tests/fakes.py) with real tar and zstd, and what it sends is received by a local HTTP server (tests/receiver.py)
through Apprise's json://, form:// and ntfy:// URLs, coord's JSON webhook, Healthchecks and Uptime Kuma URLs."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.fakes import FakeEngine
from tests.receiver import Receiver, receiving

from coord.defaults import load_defaults
from coord.errors import PolicyError, UsageError
from coord.history import DrillRow, History
from coord.metrics import MetricsServer, parse_listen_address, write_metrics_file
from coord.monitoring import Ending, Monitoring
from coord.node import this_node
from coord.notify import Notifier, Notify
from coord.pings import Pinger, Pings
from coord.policy import load_policies
from coord.recording import RecordedRun, run_and_record
from coord.render import run_summary
from coord.results import RunResult, VolumeStatus
from coord.runner import BackupRequest


@dataclass
class Stack:
    """Volumes in the fake engine, a policies directory, a state directory, and the local receiver."""

    engine: FakeEngine
    root: Path
    receiver: Receiver
    waits: list[float]

    def policy(self, name: str, text: str) -> None:
        (self.root / "p").mkdir(exist_ok=True)
        (self.root / "p" / f"{name}.yaml").write_text(text)

    def monitoring(self) -> Monitoring:
        """The defaults file's settings, as `coord backup` reads them, but waiting nothing between retries."""
        defaults = load_defaults(self.root / "p")
        return Monitoring(
            notifier=Notifier(defaults.notify, sleep=self.waits.append),
            ping=defaults.ping,
            metrics_file=defaults.metrics.file,
            pinger=Pinger(sleep=self.waits.append),
        )

    def run(self, *policies: str) -> tuple[RunResult, RecordedRun]:
        request = BackupRequest(
            policies_dir=self.root / "p", dest=self.root / "dest", policy_names=policies, state_dir=self.root / "s"
        )
        return run_and_record(request, lambda: self.engine, History(self.root / "s"), self.monitoring())

    def url(self, path: str) -> str:
        return f"{self.receiver.base}{path}"


@pytest.fixture
def stack(tmp_path: Path):
    with receiving() as receiver:
        engine = FakeEngine(tmp_path / "engine")
        engine.add_volume("pg-data", {"base/1": "rows\n", "global/pg_control": "ctl\n"})
        engine.add_volume("ch-data", {"store/abc/all_1_1_0/data.bin": "part\n"})
        scene = Stack(engine, tmp_path, receiver, [])
        scene.policy("pg", "volumes: [pg-data]\nstrategy: live\n")
        scene.policy("ch", "volumes: [ch-data]\nstrategy: live\n")
        yield scene


def received_json(stack: Stack, path: str) -> list[dict]:
    return [json.loads(r.body) for r in stack.receiver.received if r.path == path]


# Notifications ----------------------------------------------------------------------------------------------------


def test_notifications_arrive_through_apprise_json_form_ntfy_and_the_json_webhook(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.policy(
        "_defaults",
        "notify:\n"
        f"  urls: ['json://{stack.url('/json')}', 'form://{stack.url('/form')}',"
        f" 'ntfy://user:s3cr3t@{stack.url('/backups')}', 'http://{stack.url('/hook/s3cr3t')}']\n"
        "  on: [failure, warning, success]\n",
    )
    with caplog.at_level(logging.INFO):
        result, record = stack.run()
    assert result.ok
    [json_body] = received_json(stack, "/json")
    host = socket.gethostname()
    assert json_body["type"] == "success"
    assert json_body["title"] == f"coord on {host}: backup succeeded (all policies): 2 volumes, 0 failed"
    # the body is `coord backup`'s own summary, then where to look further
    assert json_body["message"] == "\n".join(
        [*run_summary(result), f"(run 1 on {host}; `coord status` there shows each volume's last backup)"]
    )
    assert json_body["message"].startswith("OK   ch-data (policy ch, live): 5 entries")
    [form] = [r for r in stack.receiver.received if r.path == "/form"]
    assert form.content_type == "application/x-www-form-urlencoded"
    fields = parse_qs(form.body.decode())
    assert fields["message"] == [json_body["message"]] and fields["type"] == ["success"]
    [ntfy] = received_json(stack, "/")  # Apprise posts ntfy messages to the server's root, naming the topic
    assert ntfy["topic"] == "backups" and ntfy["message"] == json_body["message"]
    [hook] = received_json(stack, "/hook/s3cr3t")
    assert hook["event"] == "success" and hook["result"] == result.to_json()
    assert [(d.kind, d.target, d.error) for d in record.deliveries if d.kind == "notify"] == [
        ("notify", "json:// (notify.urls[0])", None),
        ("notify", "form:// (notify.urls[1])", None),
        ("notify", "ntfy:// (notify.urls[2])", None),
        ("notify", f"http://{stack.receiver.base}", None),
    ]
    assert "s3cr3t" not in caplog.text


def test_a_policy_is_told_about_its_own_volumes_on_the_outcomes_it_lists(stack: Stack) -> None:
    # `on:` unquoted: YAML 1.1 reads it as the boolean true, which the model gives back its name
    stack.policy(
        "pg", f"volumes: [pg-data]\nstrategy: live\nnotify:\n  urls: ['json://{stack.url('/pg')}']\n  on: [failure]\n"
    )
    stack.policy("ch", f"volumes: [ch-data]\nstrategy: live\nnotify: {{urls: ['json://{stack.url('/ch')}']}}\n")
    assert stack.run()[0].ok
    assert stack.receiver.received == []  # success: neither lists it (the default is [failure, warning])
    stack.engine.volumes.pop("pg-data")  # the next run cannot find it: the volume fails
    result, _ = stack.run()
    assert [v.status for v in result.volumes] == [VolumeStatus.OK, VolumeStatus.FAILED]
    [message] = received_json(stack, "/pg")
    assert message["type"] == "failure"
    assert "backup FAILED (policy pg): 1 volume, 1 failed (pg-data)" in message["title"]
    assert message["message"].splitlines()[:3] == [
        "FAIL pg-data (policy pg, live)",
        "     error: volume 'pg-data' does not exist (docker volume ls)",
        "1 volume, 1 failed",
    ]
    assert received_json(stack, "/ch") == []  # its own volume was ok


def test_a_failing_notification_is_retried_with_backoff_and_never_fails_the_backup(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.policy(
        "_defaults",
        f"notify:\n  urls: ['json://{stack.url('/flaky')}', 'form://{stack.url('/down/s3cr3t')}']\n  on: [success]\n",
    )
    stack.receiver.answers = {"/flaky": [502, 503], "/down/s3cr3t": [500, 500, 500]}
    with caplog.at_level(logging.WARNING):
        result, record = stack.run()
    assert result.ok and record.status == "ok"
    assert stack.receiver.paths() == ["POST /flaky"] * 3 + ["POST /down/s3cr3t"] * 3
    assert stack.waits == [2, 4, 2, 4]
    flaky, down = [d for d in record.deliveries if d.kind == "notify"]
    assert flaky.error is None
    assert down.target == "form:// (notify.urls[1])" and down.error is not None
    assert down.error.endswith("(after 3 attempts)") and "500" in down.error
    assert "notification of success to form:// (notify.urls[1]) failed" in caplog.text
    assert "s3cr3t" not in caplog.text and "s3cr3t" not in down.error


def test_notification_urls_are_checked_when_the_file_is_read_and_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text(
        "notify:\n  urls: ['nosuch://s3cr3t@example.com', 'ftp://s3cr3t@example.com', 's3cr3t']\n"
        "  on: [failure, sucess]\n"
    )
    with pytest.raises(PolicyError) as raised:
        load_defaults(tmp_path)
    path = tmp_path / "_defaults.yaml"
    assert raised.value.problems == [
        f"{path}:2: notify.urls[0]: 'nosuch://...' is not a notification URL Apprise can use (unknown service, or "
        "a part of the URL is missing or wrong): see https://github.com/caronc/apprise/wiki",
        f"{path}:2: notify.urls[1]: 'ftp://...' is not a notification URL Apprise can use (unknown service, or a "
        "part of the URL is missing or wrong): see https://github.com/caronc/apprise/wiki",
        f"{path}:2: notify.urls[2]: expected a URL: an Apprise URL (ntfy://, gotify://, slack://, tgram://, "
        "mailto://, json://, ...) or an http(s):// webhook",
        f"{path}:3: notify.on[1]: 'sucess' is not one of failure, warning, success",
    ]
    (tmp_path / "_defaults.yaml").write_text("notify: {urls: ['ntfy://example.com/t']}\nmetrics: {file: m/c.prom}\n")
    defaults = load_defaults(tmp_path)
    assert [str(o) for o in defaults.notify.on] == ["failure", "warning"]
    assert defaults.metrics.file == tmp_path / "m" / "c.prom"  # relative to the defaults file


def test_a_policy_notify_needs_urls(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("volumes: [a]\nstrategy: live\nnotify: {on: [success]}\n")
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    assert raised.value.problems == [f"{tmp_path / 'a.yaml'}:3: notify.urls: is required"]


# Dead-man pings ---------------------------------------------------------------------------------------------------


def test_pings_go_start_then_success_and_start_then_fail(stack: Stack) -> None:
    kuma = f"http://{stack.url('/api/push/t0ken')}?status=up&msg=OK&ping="  # as Uptime Kuma shows it
    stack.policy("_defaults", f"ping:\n  healthchecks: ['http://{stack.url('/hc/0f1e')}']\n  uptime_kuma: ['{kuma}']\n")
    assert stack.run()[0].ok
    stack.engine.volumes.pop("pg-data")
    assert not stack.run()[0].ok
    assert stack.receiver.paths() == [
        "POST /hc/0f1e/start",
        "POST /hc/0f1e",
        "GET /api/push/t0ken",
        "POST /hc/0f1e/start",
        "POST /hc/0f1e/fail",
        "GET /api/push/t0ken",
    ]
    start, success, up, _, fail, down = stack.receiver.received
    assert start.body == b""
    assert success.body.decode().splitlines()[-2] == "2 volumes, 0 failed"
    assert "FAIL pg-data (policy pg, live)" in fail.body.decode()
    assert up.query["status"] == ["up"] and down.query["status"] == ["down"]
    assert up.query["msg"][0].endswith("backup succeeded (all policies): 2 volumes, 0 failed")
    assert down.query["msg"][0].endswith("backup FAILED (all policies): 2 volumes, 1 failed (pg-data)")
    assert up.query["ping"] == [""]


def test_a_policy_pings_for_its_own_volumes(stack: Stack) -> None:
    stack.policy("pg", f"volumes: [pg-data]\nstrategy: live\nping: {{healthchecks: ['http://{stack.url('/pg')}']}}\n")
    stack.policy("ch", f"volumes: [ch-data]\nstrategy: live\nping: {{healthchecks: ['http://{stack.url('/ch')}']}}\n")
    stack.engine.volumes.pop("pg-data")
    stack.run()
    assert stack.receiver.paths() == ["POST /ch/start", "POST /pg/start", "POST /ch", "POST /pg/fail"]
    stack.receiver.received.clear()
    stack.run("ch")  # a run of one policy pings only that policy
    assert stack.receiver.paths() == ["POST /ch/start", "POST /ch"]


def test_an_interrupted_run_pings_fail_and_notifies_nobody(stack: Stack) -> None:
    notify = Notify(urls=[f"json://{stack.url('/json')}"], on=["failure", "warning", "success"])
    pings = Pings(healthchecks=[f"http://{stack.url('/hc')}"])
    monitoring = Monitoring(notify, pings)
    request = BackupRequest(policies_dir=stack.root / "p", dest=stack.root / "d", state_dir=stack.root / "s")
    ending = Ending(7, "interrupted", None, "interrupted by SIGTERM", datetime.now(UTC))
    deliveries = monitoring.finished(monitoring.scopes(request), ending, request, History(stack.root / "s"))
    assert stack.receiver.paths() == ["POST /hc/fail"]
    assert "backup run 7 could not be done: interrupted by SIGTERM" in stack.receiver.received[0].body.decode()
    assert [(d.kind, d.event) for d in deliveries] == [("ping", "fail")]


# Metrics ----------------------------------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text exposition, parsed by the Prometheus client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset:
    """The label set of a sample; a volume's samples also carry the node coord runs on (this_node())."""
    if "volume" in values:
        values = {"node": this_node(), **values}
    return frozenset(values.items())


def test_the_metrics_file_after_two_runs_parses_and_shows_each_volume(stack: Stack) -> None:
    stack.policy("_defaults", "metrics: {file: coord.prom}\n")
    first, _ = stack.run()
    stack.engine.volumes.pop("pg-data")
    second, _ = stack.run()
    text = (stack.root / "p" / "coord.prom").read_text()
    assert not list((stack.root / "p").glob(".coord.prom.tmp*"))
    found = samples(text)
    runs = History(stack.root / "s").runs()
    pg, ch = labels(volume="pg-data", policy="pg"), labels(volume="ch-data", policy="ch")
    assert found[("coord_last_run_status", labels(status="failed"))] == 1
    assert found[("coord_last_run_status", labels(status="ok"))] == 0
    assert found[("coord_last_run_timestamp_seconds", frozenset())] == runs[1].started_at.timestamp()
    assert found[("coord_volume_last_run_status", pg | {("status", "failed")})] == 1
    assert found[("coord_volume_last_run_status", ch | {("status", "ok")})] == 1
    assert found[("coord_volume_last_run_verdict", ch | {("verdict", "consistent")})] == 1
    assert found[("coord_volume_last_run_verdict", pg | {("verdict", "consistent")})] == 0  # no read: no verdict
    # pg-data's last success is the first run, and its archive figures are that run's
    assert found[("coord_volume_last_success_timestamp_seconds", pg)] == runs[0].started_at.timestamp()
    assert found[("coord_volume_last_success_timestamp_seconds", ch)] == runs[1].started_at.timestamp()
    pg_first = next(v for v in first.volumes if v.volume == "pg-data")
    assert found[("coord_volume_archive_size_bytes", pg)] == pg_first.size > 0
    assert (
        found[("coord_volume_archive_entries", pg)] == pg_first.entries == 5
    )  # ., base, base/1, global, .../pg_control
    ch_second = next(v for v in second.volumes if v.volume == "ch-data")
    assert found[("coord_volume_archive_entries", ch)] == ch_second.entries
    assert found[("coord_volume_last_run_duration_seconds", ch)] == ch_second.duration_s > 0
    assert found[("coord_volume_last_run_warning_entries", ch | {("kind", "vanished")})] == 0
    assert found[("coord_volume_last_run_downtime_seconds", ch)] == 0


def test_a_volume_whose_policy_is_gone_drops_out_of_the_metrics(stack: Stack) -> None:
    stack.run()
    (stack.root / "p" / "pg.yaml").unlink()
    path = stack.root / "coord.prom"
    write_metrics_file(path, History(stack.root / "s"), stack.root / "p")
    volumes = {dict(labels)["volume"] for (name, labels) in samples(path.read_text()) if "volume" in dict(labels)}
    assert volumes == {"ch-data"}


def test_every_volume_metric_carries_the_node_coord_runs_on(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.run()
    monkeypatch.setenv("COORD_NODE", "node-7")  # as compose/stack.yml sets it on each Swarm node
    path = stack.root / "coord.prom"
    write_metrics_file(path, History(stack.root / "s"), stack.root / "p")
    found = samples(path.read_text())
    per_volume = [(name, dict(labels)) for (name, labels) in found if name.startswith("coord_volume_")]
    names = {name for name, _ in per_volume}
    assert {"coord_volume_last_run_status", "coord_volume_last_success_timestamp_seconds"} <= names
    assert all(labels["node"] == "node-7" for _, labels in per_volume)
    assert {labels["volume"] for _, labels in per_volume} == {"pg-data", "ch-data"}
    assert all("node" not in dict(labels) for (name, labels) in found if name.startswith("coord_last_"))


def test_a_failed_restore_drill_shows_in_the_metrics_until_its_target_passes(stack: Stack) -> None:
    history = History(stack.root / "s")
    path = stack.root / "coord.prom"

    def drill(target: str, status: str) -> None:
        now = datetime.now(UTC)
        problems = ["entry count mismatch"] if status == "failed" else []
        row = DrillRow(0, now, now, "pg-data", "a.tar.zst", status, "manual", 3, 1, 10, 0.1, problems, target)
        history.record_drill(row)
        write_metrics_file(path, history, stack.root / "p")

    def drill_status(target: str) -> dict[str, float]:
        found = samples(path.read_text())
        return {
            status: found[("coord_volume_last_drill_status", labels(volume="pg-data", target=target, status=status))]
            for status in ("ok", "failed")
        }

    drill("offsite", "failed")
    assert drill_status("offsite") == {"ok": 0, "failed": 1}
    drill("local", "ok")  # a later pass on another target does not hide the failure
    assert drill_status("offsite") == {"ok": 0, "failed": 1}
    drill("offsite", "ok")
    assert drill_status("offsite") == {"ok": 1, "failed": 0}
    found = samples(path.read_text())
    assert any(name == "coord_volume_last_drill_timestamp_seconds" for name, _ in found)


def test_the_metrics_endpoint_serves_the_history_at_each_scrape(stack: Stack) -> None:
    server = MetricsServer.start("127.0.0.1:0", History(stack.root / "s"), stack.root / "p")
    try:
        url = f"http://{server.address}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            before = samples(response.read().decode())
        assert not any(name.startswith("coord_volume") for name, _ in before)  # no run yet
        stack.run()
        with urllib.request.urlopen(url, timeout=10) as response:
            after = samples(response.read().decode())
        assert after[("coord_volume_last_run_status", labels(volume="pg-data", policy="pg", status="ok"))] == 1
    finally:
        server.close()


def test_metrics_addresses() -> None:
    assert parse_listen_address("127.0.0.1:9847") == ("127.0.0.1", 9847)
    assert parse_listen_address("[::1]:9847") == ("::1", 9847)
    assert parse_listen_address(":9847") == ("0.0.0.0", 9847)
    for wrong in ("9847", "host:", "host:http", "host:70000"):
        with pytest.raises(UsageError, match="expected HOST:PORT"):
            parse_listen_address(wrong)


def test_an_address_in_use_is_an_error_that_names_it(stack: Stack) -> None:
    first = MetricsServer.start("127.0.0.1:0", History(stack.root / "s"))
    try:
        with pytest.raises(UsageError, match=rf"--metrics-addr {first.address}: cannot listen there: .*in use"):
            MetricsServer.start(first.address, History(stack.root / "s"))
    finally:
        first.close()


def test_a_metrics_file_that_cannot_be_written_never_fails_the_backup(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.policy("_defaults", "metrics: {file: no-such-directory/coord.prom}\n")
    with caplog.at_level(logging.WARNING):
        result, record = stack.run()
    assert result.ok and record.status == "ok"
    [written] = [d for d in record.deliveries if d.kind == "metrics"]
    assert written.error is not None and "No such file or directory" in written.error
    assert "metrics file not written" in caplog.text
    assert not list((stack.root / "p").glob("**/.coord.prom.tmp*"))
