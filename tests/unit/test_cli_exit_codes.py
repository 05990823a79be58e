"""`coord backup`'s exit codes and the shape of `coord backup --json`, through Typer's CliRunner against the
in-memory engine of tests/fakes.py (the CLI's one connection, DockerControl.connect, returns it in these tests)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import FakeEngine
from typer.testing import CliRunner

from coord.cli import app
from coord.docker_ops import DockerControl
from coord.errors import DockerError

FILES = {"a.txt": "a\n", "dir/b.txt": "b\n"}

RUN_KEYS = {"ok", "volumes", "errors", "recovered", "warnings"}
VOLUME_KEYS = {
    "volume",
    "policy",
    "strategy",
    "status",
    "archive",
    "manifest",
    "entries",
    "size",
    "verdict",
    "verdict_reasons",
    "warnings",
    "excluded_paths",
    "errors",
    "downtime_s",
    "containers",
    "hooks",
    "attempts",
    "duration_s",
    "pruned",
    "retention_errors",
    "retention_warnings",
    "targets",
}
WARNING_KEYS = {"vanished", "changed", "shrank", "skipped"}
CONTAINER_KEYS = {"container", "id", "action", "prior_state", "seconds", "restored", "error", "service"}
HOOK_KEYS = {"phase", "policy", "container", "command", "exit_code", "error"}


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: fake))
    return fake


def backup(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """Run `coord backup --json` on <tmp>/policies; returns the exit code, the JSON on stdout and stderr."""
    arguments = ["backup", "--json", "--policies-dir", str(tmp_path / "policies"), "--dest", str(tmp_path / "dest")]
    arguments += ["--state-dir", str(tmp_path / "state"), "--volumes-root", str(tmp_path / "volumes"), *extra]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout), result.stderr


def write_policy(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / f"{name}.yaml").write_text(text)


HOOKED_PAUSE = """volumes: [pg]
strategy: pause
hooks:
  before: [{container: app, exec: [flush]}]
  after: [{container: app, exec: [resume]}]
"""


def assert_run_shape(document: dict[str, Any]) -> None:
    assert set(document) == RUN_KEYS
    assert isinstance(document["ok"], bool)
    assert all(isinstance(line, str) for line in document["errors"] + document["recovered"] + document["warnings"])
    for volume in document["volumes"]:
        assert set(volume) == VOLUME_KEYS
        assert set(volume["warnings"]) == WARNING_KEYS
        assert all(set(container) == CONTAINER_KEYS for container in volume["containers"])
        assert all(set(hook) == HOOK_KEYS for hook in volume["hooks"])
        assert volume["status"] in ("ok", "warning", "failed", "excluded")
        assert volume["verdict"] in (None, "consistent", "fuzzy", "at-risk")


def test_a_good_run_exits_0_with_the_documented_json(tmp_path: Path, engine: FakeEngine) -> None:
    write_policy(tmp_path, "db", HOOKED_PAUSE)
    engine.add_volume("pg", FILES)
    engine.add_container("postgres", volumes=("pg",))
    engine.add_container("app")
    code, document, stderr = backup(tmp_path)
    assert code == 0, stderr
    assert_run_shape(document)
    assert document["ok"] is True and document["errors"] == []
    [volume] = document["volumes"]
    assert (volume["volume"], volume["policy"], volume["strategy"], volume["status"]) == ("pg", "db", "pause", "ok")
    assert Path(volume["archive"]).is_file() and Path(volume["manifest"]).is_file()
    assert volume["entries"] > 0 and volume["verdict"] == "consistent"
    [container] = volume["containers"]
    assert (container["container"], container["action"], container["restored"]) == ("postgres", "paused", True)
    assert container["id"] == engine.named("postgres").id[:12]
    assert [(hook["phase"], hook["command"], hook["exit_code"]) for hook in volume["hooks"]] == [
        ("before", ["flush"], 0),
        ("after", ["resume"], 0),
    ]
    assert engine.state_of("postgres") == "running"


def test_a_failed_volume_exits_1(tmp_path: Path, engine: FakeEngine) -> None:
    write_policy(tmp_path, "db", HOOKED_PAUSE)
    engine.add_volume("pg", FILES)
    engine.add_container("postgres", volumes=("pg",))
    engine.add_container("app")
    engine.fail_at("pause", "postgres")
    code, document, _ = backup(tmp_path)
    assert code == 1
    assert_run_shape(document)
    assert document["ok"] is False
    [volume] = document["volumes"]
    assert volume["status"] == "failed" and volume["archive"] is None and volume["verdict"] is None
    assert volume["errors"][0].startswith("could not pause containers: pause ")
    assert [(c["container"], c["action"]) for c in volume["containers"]] == [("postgres", "failed")]
    assert engine.state_of("postgres") == "running"


def test_an_unreachable_engine_exits_1_with_one_json_object(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_policy(tmp_path, "db", HOOKED_PAUSE)

    def unreachable(cls: type) -> DockerControl:
        raise DockerError("cannot reach the Docker engine at unix:///nowhere: refused")

    monkeypatch.setattr(DockerControl, "connect", classmethod(unreachable))
    code, document, stderr = backup(tmp_path)
    assert code == 1
    assert document == {
        "ok": False,
        "volumes": [],
        "errors": ["cannot reach the Docker engine at unix:///nowhere: refused"],
    }
    assert "coord: error: cannot reach the Docker engine" in stderr


def test_a_policy_error_exits_2_before_docker_is_asked_anything(tmp_path: Path, engine: FakeEngine) -> None:
    write_policy(tmp_path, "db", "volumes: [pg]\nstrategy: pause\nstop_timout: 5\n")
    engine.add_volume("pg", FILES)
    code, document, _ = backup(tmp_path)
    assert code == 2
    assert set(document) == {"ok", "volumes", "errors"} and document["ok"] is False and document["volumes"] == []
    assert len(document["errors"]) == 1 and "db.yaml:3" in document["errors"][0]
    assert "stop_timout" in document["errors"][0]
    assert engine.calls == []


def test_no_destination_exits_2(tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    write_policy(tmp_path, "db", "volumes: [pg]\nstrategy: live\n")
    monkeypatch.delenv("COORD_DEST", raising=False)
    arguments = ["backup", "--json", "--policies-dir", str(tmp_path / "policies"), "--state-dir", str(tmp_path / "s")]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    assert result.exit_code == 2
    assert json.loads(result.stdout)["errors"] == [
        "no destination: pass --dest DIR, set COORD_DEST, or define targets in _defaults.yaml"
    ]
    assert engine.calls == []


@pytest.mark.usefixtures("sigterm_guard")
def test_sigterm_exits_128_plus_the_signal_with_every_container_back(tmp_path: Path, engine: FakeEngine) -> None:
    write_policy(tmp_path, "db", HOOKED_PAUSE)
    engine.add_volume("pg", FILES)
    engine.add_container("postgres", volumes=("pg",))
    engine.add_container("app")
    engine.after("pause", "postgres", lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, document, stderr = backup(tmp_path)
    assert code == 128 + signal.SIGTERM
    assert document == {"ok": False, "volumes": [], "errors": ["interrupted by SIGTERM"]}
    assert "every container coord changed was put back" in stderr
    assert engine.state_of("postgres") == "running"
