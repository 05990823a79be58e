"""`coord drill` reads every target the way `coord verify` and `coord restore` read them (targets/archives.py):
a local target's archive from disk, an rclone target's streamed from a real `rclone serve s3|sftp|webdav` on
loopback. A drill of each target restores and compares; a remote archive corrupted on the server (same size, so
the listing still counts it) fails its drill, which names the ref; a target that is down fails its drill and the
other target's still passes.

Docker is not the point here: the in-memory engine of tests/fakes.py stands in for it, and the drills run in
sidecar mode (--volumes-root: the scratch space is a directory in the state directory). One server per kind for
the module (conftest's rclone_servers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import FakeEngine
from tests.rclone_servers import KINDS, ServedRemote
from typer.testing import CliRunner

from coord.cli import app
from coord.docker_ops import DockerControl
from coord.drill import SCRATCH_PREFIX
from coord.history import History

FILES = {"a.txt": "alpha\n", "sub/b.txt": "beta\n" * 500, "sub/deeper/c.bin": "gamma" * 4000}
Servers = Callable[[str], ServedRemote]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: fake))
    fake.add_volume("v", FILES)
    return fake


def use_remote(remote: ServedRemote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Define the remote for this test by RCLONE_CONFIG_* variables (as an operator's environment would)."""
    for name, value in remote.environment().items():
        monkeypatch.setenv(name, value)


def configure(tmp_path: Path, targets: dict[str, dict[str, str]], policy: str = "") -> None:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "data.yaml").write_text("volumes: [v]\nstrategy: live\n" + policy)
    (policies / "_defaults.yaml").write_text(json.dumps({"targets": targets}))


def coord(tmp_path: Path, command: str, *extra: str) -> tuple[int, dict[str, Any]]:
    arguments = [command, "--json", "--policies-dir", str(tmp_path / "policies")]
    arguments += ["--state-dir", str(tmp_path / "state"), "--volumes-root", str(tmp_path / "volumes"), *extra]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def backed_up(tmp_path: Path) -> dict[str, Any]:
    code, document = coord(tmp_path, "backup")
    (volume,) = document["volumes"]
    assert (code, volume["status"]) == (0, "ok"), volume["errors"]
    return volume


def no_scratch_left(tmp_path: Path) -> bool:
    return not any(path.name.startswith(SCRATCH_PREFIX) for path in (tmp_path / "state").iterdir())


@pytest.mark.parametrize("kind", KINDS)
def test_a_drill_restores_the_latest_archive_of_each_target_local_and_remote(
    kind: str, tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers(kind)
    use_remote(remote, monkeypatch)
    configure(tmp_path, {"local": {"path": str(tmp_path / "dest")}, "offsite": {"rclone": remote.under(f"d1-{kind}")}})
    volume = backed_up(tmp_path)
    name = Path(volume["archive"]).name

    code, document = coord(tmp_path, "drill")
    assert code == 0 and document["ok"], document
    local, offsite = document["drills"]
    assert (local["target"], local["archive"], local["ref"]) == ("local", volume["archive"], f"local:v/{name}")
    assert (offsite["target"], offsite["archive"], offsite["ref"]) == (
        "offsite",
        f"offsite:v/{name}",
        f"offsite:v/{name}",
    )
    for drilled in (local, offsite):
        assert drilled["problems"] == [] and drilled["entries"] == 6 and drilled["files_hashed"] == 3
        assert drilled["bytes_hashed"] == sum(len(text) for text in FILES.values())
    assert offsite["line"].startswith(f"OK   drill v from target offsite: {name} restored into scratch directory ")
    assert no_scratch_left(tmp_path)

    code, document = coord(tmp_path, "drill", "--target", "offsite", "--volume", "v")
    assert code == 0 and [drilled["target"] for drilled in document["drills"]] == ["offsite"]
    (last,) = History(tmp_path / "state").last_drills().values()
    assert (last.target, last.archive, last.status, last.trigger) == ("offsite", f"offsite:v/{name}", "ok", "manual")


def test_a_drill_catches_a_remote_archive_corrupted_on_the_server(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote only: nothing of the archive is on local disk, the drill streams it from the S3 server. A byte
    changed there (the size unchanged: the listing still counts it) fails the drill, naming the ref; `coord
    report` shows the failed drill and the target it read."""
    remote = rclone_servers("s3")
    use_remote(remote, monkeypatch)
    configure(tmp_path, {"offsite": {"rclone": remote.under("d2")}})
    volume = backed_up(tmp_path)
    ref = volume["archive"]
    assert ref.startswith("offsite:v/")
    stored = remote.local_root / "d2" / "v" / ref.removeprefix("offsite:v/")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    code, document = coord(tmp_path, "drill", "--volume", "v")
    (drilled,) = document["drills"]
    print(drilled["line"])  # the report quotes it
    assert code == 1 and not document["ok"]
    assert (drilled["target"], drilled["archive"]) == ("offsite", ref)
    assert drilled["line"].startswith(f"FAIL drill v from target offsite (drilled {stored.name}): ")
    problem = drilled["problems"][0]
    assert problem.startswith("sha256 is ") or problem.startswith(f"cannot read {ref}: "), problem
    assert no_scratch_left(tmp_path)
    shown = CliRunner().invoke(app, ["report", "--json", "--state-dir", str(tmp_path / "state")])
    (row,) = json.loads(shown.stdout)["volumes"]
    assert (row["last_drill"]["status"], row["last_drill"]["target"]) == ("failed", "offsite")


def test_a_target_that_is_down_fails_its_drill_and_the_other_target_is_still_drilled(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("webdav")
    use_remote(remote, monkeypatch)
    configure(tmp_path, {"local": {"path": str(tmp_path / "dest")}, "cloud": {"rclone": remote.under("d3")}})
    backed_up(tmp_path)
    remote.stop()
    code, document = coord(tmp_path, "drill")
    assert code == 1
    by_target = {drilled["target"]: drilled for drilled in document["drills"]}
    assert by_target["local"]["ok"] is True
    down = by_target["cloud"]
    assert down["ok"] is False and down["volume"] == "" and down["problems"][0].startswith("target cloud: ")
    assert remote.password not in json.dumps(document)
    (last,) = History(tmp_path / "state").last_drills().values()
    assert last.target == "local"  # the down target drilled no volume: nothing recorded for it

    # Named, v is drilled on each target and recorded: cloud first (targets in name order), failing, then local,
    # passing; the volume's last drill is still the failure (a later pass elsewhere must not hide it).
    code, document = coord(tmp_path, "drill", "--volume", "v")
    assert code == 1 and [(d["target"], d["ok"]) for d in document["drills"]] == [("cloud", False), ("local", True)]
    (last,) = History(tmp_path / "state").last_drills().values()
    assert (last.target, last.status) == ("cloud", "failed")
    assert last.problems[0].startswith("target cloud: ")


def test_an_encrypted_remote_archive_is_drilled_with_the_passphrase_and_refused_without(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("sftp")
    use_remote(remote, monkeypatch)
    passphrase = tmp_path / "pass"
    passphrase.write_text("correct horse\n")
    passphrase.chmod(0o600)
    configure(tmp_path, {"offsite": {"rclone": remote.under("d4")}}, f"encrypt: {{passphrase_file: {passphrase}}}\n")
    ref = backed_up(tmp_path)["archive"]
    assert ref.startswith("offsite:v/") and ref.endswith(".tar.zst.gpg")

    code, document = coord(tmp_path, "drill", "--passphrase-file", str(passphrase))
    (drilled,) = document["drills"]
    assert code == 0 and drilled["problems"] == [] and drilled["archive"] == ref and drilled["files_hashed"] == 3
    code, document = coord(tmp_path, "drill")
    (drilled,) = document["drills"]
    assert code == 1 and drilled["problems"][0].startswith(f"cannot read {ref}: ")
    assert "is encrypted with a passphrase: pass --passphrase-file FILE" in drilled["problems"][0]
    assert no_scratch_left(tmp_path)
