"""What the outside world hears about named targets: a backup to two targets, one of them a real rclone server
that is down (`rclone serve sftp`, killed), goes to the history with each target's outcome, fills the metric
`coord_volume_target_last_run_status{target,status}` (parsed with the Prometheus client's own parser), shows in
`coord status` and `coord report`, and the notification and the dead-man pings (received by a local HTTP server
through Apprise's json:// kind, Healthchecks and Uptime Kuma URLs) name the target that failed, with no secret of
rclone's configuration in them.

Docker is not the point here: the in-memory engine of tests/fakes.py stands in for it (real tar, zstd, rclone).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.fakes import FakeEngine
from tests.rclone_servers import ServedRemote
from tests.receiver import Receiver, receiving
from typer.testing import CliRunner

from coord.cli import app
from coord.docker_ops import DockerControl

TARGET_METRIC = "coord_volume_target_last_run_status"


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: fake))
    fake.add_volume("v", {"a.txt": "alpha\n", "sub/b.txt": "beta\n"})
    return fake


@pytest.fixture
def receiver() -> Any:
    with receiving() as started:
        yield started


def configure(tmp_path: Path, remote: ServedRemote, receiver: Receiver) -> None:
    """local + offsite (the rclone server), a json:// notification on every outcome, Healthchecks and Uptime Kuma
    pings, all to the receiver."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "data.yaml").write_text("volumes: [v]\nstrategy: live\n")
    defaults = {
        "targets": {"local": {"path": str(tmp_path / "dest")}, "offsite": {"rclone": remote.under("m1")}},
        "notify": {"urls": [f"json://{receiver.base}/json"], "on": ["failure", "warning", "success"]},
        "ping": {
            "healthchecks": [f"http://{receiver.base}/hc/0f1e"],
            "uptime_kuma": [f"http://{receiver.base}/api/push/t0ken"],
            "attempts": 1,
        },
    }
    (policies / "_defaults.yaml").write_text(json.dumps(defaults))


def invoke(tmp_path: Path, *arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(arguments), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def backup(tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    code, stdout, stderr = invoke(
        tmp_path,
        "backup", "--json", "--policies-dir", str(tmp_path / "policies"), "--state-dir", str(tmp_path / "state"),
        "--volumes-root", str(tmp_path / "volumes"), "--metrics-file", str(tmp_path / "coord.prom"),
    )  # fmt: skip
    return code, json.loads(stdout), stderr


def target_samples(path: Path) -> dict[tuple[str, str], float]:
    """(target, status) -> value of the target metric for volume v, from the textfile, as Prometheus parses it."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        if family.name == TARGET_METRIC:
            for sample in family.samples:
                assert (sample.labels["volume"], sample.labels["policy"]) == ("v", "data")
                found[(sample.labels["target"], sample.labels["status"])] = sample.value
    return found


def test_a_target_down_is_recorded_measured_shown_and_named_in_notifications_without_secrets(
    tmp_path: Path,
    engine: FakeEngine,
    rclone_servers: Callable[[str], ServedRemote],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = rclone_servers("sftp")
    for name, value in remote.environment().items():
        monkeypatch.setenv(name, value)
    secrets = [remote.password, remote.settings["pass"]]  # the password, and rclone's obscured form of it
    configure(tmp_path, remote, receiver)
    remote.stop()

    code, document, stderr = backup(tmp_path)
    (volume,) = document["volumes"]
    assert (code, volume["status"]) == (1, "failed")
    assert [(t["target"], t["status"]) for t in volume["targets"]] == [("local", "ok"), ("offsite", "failed")]

    # the metric, from the history's new `targets` column
    assert target_samples(tmp_path / "coord.prom") == {
        ("local", "ok"): 1.0, ("local", "failed"): 0.0, ("local", "skipped"): 0.0,
        ("offsite", "ok"): 0.0, ("offsite", "failed"): 1.0, ("offsite", "skipped"): 0.0,
    }  # fmt: skip

    # coord status and coord report
    _, status, _ = invoke(tmp_path, "status", "--state-dir", str(tmp_path / "state"))
    print(status)  # the report quotes it
    assert status.splitlines()[0].startswith("FAIL v (policy data, live) ")
    assert status.splitlines()[0].endswith("; targets local ok, offsite failed")
    _, report, _ = invoke(tmp_path, "report", "--json", "--state-dir", str(tmp_path / "state"))
    (row,) = json.loads(report)["volumes"]
    assert row["targets"]["offsite"] == {"ok": 0, "failed": 1, "skipped": 0}

    # the notification and the pings name the target that failed
    assert receiver.paths() == ["POST /hc/0f1e/start", "POST /hc/0f1e/fail", "GET /api/push/t0ken", "POST /json"]
    _, fail, kuma, notification = receiver.received
    message = json.loads(notification.body)
    print(message["title"], message["message"], sep="\n")  # the report quotes it
    assert message["type"] == "failure"
    assert message["title"].endswith("backup FAILED (all policies): 1 volume, 1 failed (v: target offsite failed)")
    body = message["message"].splitlines()
    assert "     targets: local ok, offsite failed" in body
    assert any(line.startswith("     error: target offsite: ") for line in body), body
    assert "error: target offsite: " in fail.body.decode()
    assert kuma.query["status"] == ["down"] and kuma.query["msg"][0].endswith("(v: target offsite failed)")

    # no secret anywhere a person or a monitoring service reads
    heard = b"".join(request.body + json.dumps(request.query).encode() for request in receiver.received)
    shown = json.dumps(document) + stderr + status + report + (tmp_path / "coord.prom").read_text()
    for secret in secrets:
        assert secret.encode() not in heard and secret not in shown
    assert b"RCLONE_CONFIG" not in heard

    # the server back: the next run's metric says the target took the archive
    rclone_servers("sftp")
    code, document, _ = backup(tmp_path)
    assert code == 0, document["volumes"][0]["errors"]
    samples = target_samples(tmp_path / "coord.prom")
    assert (samples[("offsite", "ok")], samples[("offsite", "failed")]) == (1.0, 0.0)
