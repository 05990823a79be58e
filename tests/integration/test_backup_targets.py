"""`coord backup` to named targets against real rclone servers on loopback (rclone serve s3|sftp|webdav):
local + remote, remote only (streamed, nothing on local disk), and the faults: a server killed mid-upload, a server
refusing writes, a wrong password, one of two targets down.

Docker is not the point here: the in-memory engine of tests/fakes.py stands in for it (real tar, zstd, gpg and
rclone; real servers). One server per kind for the module (conftest's rclone_servers).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.fakes import FakeEngine
from tests.rclone_servers import KINDS, ServedRemote
from typer.testing import CliRunner

from coord.cli import app
from coord.docker_ops import DockerControl
from coord.manifest import MANIFEST_SUFFIX
from coord.results import TargetStatus, VolumeStatus
from coord.run_records import RUNS_DIRECTORY
from coord.runner import BackupRequest, run_backup
from coord.targets import Target

if TYPE_CHECKING:
    from sharedfixtures import ThrowawayKey

pytest_plugins = ["sharedfixtures"]  # throwaway_key, state_dir (short: gpg-agent's sockets live there)

FILES = {"a.txt": "alpha\n", "sub/b.txt": "beta\n"}
Servers = Callable[[str], ServedRemote]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: fake))
    return fake


@pytest.fixture
def use_remote(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """`use(remote, **overrides)`: define the remote for this test by RCLONE_CONFIG_* variables."""

    def use(remote: ServedRemote, **overrides: str) -> None:
        for name, value in remote.environment(**overrides).items():
            monkeypatch.setenv(name, value)

    yield use


def setting(tmp_path: Path, targets: dict[str, dict[str, str]], policy: str = "") -> Path:
    """policies/ with one live policy for volume `v` and a _defaults.yaml with `targets`."""
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "data.yaml").write_text("volumes: [v]\nstrategy: live\n" + policy)
    (policies / "_defaults.yaml").write_text(json.dumps({"targets": targets}))
    return policies


def backup(tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    arguments = ["backup", "--json", "--policies-dir", str(tmp_path / "policies")]
    arguments += ["--state-dir", str(tmp_path / "state"), "--volumes-root", str(tmp_path / "volumes"), *extra]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout), result.stderr


def files_under(root: Path) -> list[str]:
    """The archives and manifests under a local target's root: run records (`_runs/`, tests/unit/test_run_records.py)
    left out."""
    files = (path.relative_to(root) for path in root.rglob("*") if path.is_file())
    return sorted(str(path) for path in files if path.parts[0] != RUNS_DIRECTORY)


def volume_files(remote: ServedRemote, volume: str = "v") -> list[str]:
    directory = remote.local_root / volume
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


def listed_members(archive: Path) -> list[str]:
    listing = subprocess.run(
        f"zstd -dc '{archive}' | tar -tf -", shell=True, capture_output=True, text=True, check=True
    ).stdout
    return sorted(line for line in listing.splitlines() if not line.endswith("/"))


@pytest.mark.parametrize("kind", KINDS)
def test_backup_to_a_local_and_a_remote_target(
    kind: str, tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers(kind)
    use_remote(remote)
    engine.add_volume("v", FILES)
    setting(tmp_path, {"local": {"path": str(tmp_path / "dest")}, "offsite": {"rclone": remote.under(f"t1-{kind}")}})
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"], volume["errors"]) == (0, "ok", [])
    archive = Path(volume["archive"])
    assert [t["target"] for t in volume["targets"]] == ["local", "offsite"]
    assert [(t["status"], t["error"]) for t in volume["targets"]] == [("ok", None), ("ok", None)]
    assert volume["targets"][1]["ref"] == f"offsite:v/{archive.name}"
    landed = remote.local_root / f"t1-{kind}" / "v"
    assert sorted(path.name for path in landed.iterdir()) == [archive.name, archive.name + MANIFEST_SUFFIX]
    assert (landed / archive.name).read_bytes() == archive.read_bytes()
    assert (landed / (archive.name + MANIFEST_SUFFIX)).read_bytes() == Path(volume["manifest"]).read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_remote_only_backup_streams_and_leaves_no_archive_on_local_disk(
    kind: str, tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers(kind)
    use_remote(remote)
    engine.add_volume("v", FILES)
    setting(tmp_path, {"offsite": {"rclone": remote.under(f"t2-{kind}")}})
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"], volume["errors"]) == (0, "ok", [])
    name = volume["archive"].removeprefix("offsite:v/")
    assert volume["targets"] == [{"target": "offsite", "status": "ok", "ref": f"offsite:v/{name}", "error": None}]
    assert volume["manifest"] == f"offsite:v/{name}{MANIFEST_SUFFIX}"
    landed = remote.local_root / f"t2-{kind}" / "v"
    assert sorted(path.name for path in landed.iterdir()) == [name, name + MANIFEST_SUFFIX]
    manifest = json.loads((landed / (name + MANIFEST_SUFFIX)).read_text())
    assert manifest["archive"] == name and manifest["status"] == "ok"
    assert manifest["size"] == (landed / name).stat().st_size
    assert listed_members(landed / name) == ["./a.txt", "./sub/b.txt"]
    # nothing of the archive on this host: the state directory holds coord's own files only
    assert not any(".tar" in path for path in files_under(tmp_path / "state"))
    assert not (tmp_path / "dest").exists()


def test_a_passphrase_encrypted_remote_only_archive_is_read_back_from_the_remote(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers("sftp")
    use_remote(remote)
    engine.add_volume("v", FILES)
    (tmp_path / "pass").write_text("correct horse\n")
    setting(tmp_path, {"offsite": {"rclone": remote.under("t3")}}, f"encrypt: {{passphrase_file: {tmp_path}/pass}}\n")
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"], volume["errors"]) == (0, "ok", [])
    name = volume["archive"].removeprefix("offsite:v/")
    assert name.endswith(".tar.zst.gpg")
    landed = remote.local_root / "t3" / "v"
    manifest = json.loads((landed / (name + MANIFEST_SUFFIX)).read_text())
    assert manifest["validated_by"] == "read back: decrypted, decompressed and listed"
    assert manifest["size"] == (landed / name).stat().st_size and manifest["entries"] >= 2
    assert not any(".tar" in path for path in files_under(tmp_path / "state"))


def test_a_public_key_encrypted_remote_only_archive_streams_through_gpg_to_the_remote(
    tmp_path: Path,
    engine: FakeEngine,
    rclone_servers: Servers,
    use_remote: Callable[..., None],
    throwaway_key: ThrowawayKey,
    state_dir: Path,
) -> None:
    remote = rclone_servers("s3")
    use_remote(remote)
    engine.add_volume("v", FILES)
    encrypt = f"encrypt: {{recipient_key_file: {throwaway_key.public_key_file}}}\n"
    setting(tmp_path, {"offsite": {"rclone": remote.under("t3k")}}, encrypt)
    arguments = ["backup", "--json", "--policies-dir", str(tmp_path / "policies"), "--state-dir", str(state_dir)]
    result = CliRunner().invoke(app, [*arguments, "--volumes-root", str(tmp_path / "volumes")], catch_exceptions=False)
    volume = json.loads(result.stdout)["volumes"][0]
    assert (result.exit_code, volume["status"], volume["errors"]) == (0, "ok", [])
    name = volume["archive"].removeprefix("offsite:v/")
    stored = remote.local_root / "t3k" / "v" / name
    manifest = json.loads((stored.parent / (name + MANIFEST_SUFFIX)).read_text())
    assert manifest["size"] == stored.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()  # gpg's output, hashed on its way
    decrypted = subprocess.run(
        ["gpg", "--homedir", str(throwaway_key.home), "--batch", "-d", str(stored)], capture_output=True, check=True
    ).stdout
    listing = subprocess.run(["tar", "-t", "--zstd"], input=decrypted, capture_output=True, check=True).stdout
    members = sorted(line for line in listing.decode().splitlines() if not line.endswith("/"))
    assert members == ["./a.txt", "./sub/b.txt"]


class KillServerMidUpload:
    """A Progress that kills the server once the upload has begun: a file of the volume has appeared on the server
    (the progress callback runs in the thread that feeds the upload, so holding it here pauses the stream)."""

    def __init__(self, remote: ServedRemote, directory: Path) -> None:
        self.remote = remote
        self.directory = directory
        self.seen: list[str] = []
        self.calls = 0

    def begin(self, volume: str) -> None: ...

    def update(self, entries: int, written_bytes: int) -> None:
        if not written_bytes or self.remote.process is None:
            return
        self.calls += 1
        if self.calls == 1:  # called before its first chunk is passed on: let the stream go on, then come back
            time.sleep(0.3)  # (updates come at most every 0.2 s)
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not self.seen:
            time.sleep(0.05)
            self.seen = os.listdir(self.directory) if self.directory.is_dir() else []
        if self.seen:  # else: the first update came before rclone connected; the next one tries again
            self.remote.stop()

    def end(self) -> None: ...


def test_a_server_killed_mid_upload_leaves_nothing_complete_and_the_next_run_succeeds(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers("sftp")
    use_remote(remote)
    source = engine.add_volume("v", FILES)
    (source / "random.bin").write_bytes(os.urandom(16 << 20))  # incompressible: the upload takes many writes
    setting(tmp_path, {"offsite": {"rclone": remote.under("t4")}})
    target = Target("offsite", rclone_path=remote.under("t4"))
    request = BackupRequest(
        tmp_path / "policies", None, state_dir=tmp_path / "state", sources=_sources(tmp_path), targets=(target,)
    )
    killer = KillServerMidUpload(remote, remote.local_root / "t4" / "v")
    volume = run_backup(request, engine, killer).volumes[0]
    assert killer.seen and remote.process is None  # killed while the upload was under way
    assert volume.status is VolumeStatus.FAILED
    assert any(error.startswith("target offsite: ") for error in volume.errors), volume.errors
    assert [(t.target, t.status) for t in volume.targets] == [("offsite", TargetStatus.FAILED)]

    remote.start()  # back, with whatever the dead upload left
    landed = remote.local_root / "t4" / "v"
    left = os.listdir(landed) if landed.is_dir() else []
    assert all(name.endswith(".partial") for name in left)  # nothing that looks complete

    again = run_backup(request, engine)
    if left:  # the failed run could not remove it (server down): its journal entry made this run's recovery do it
        assert any(line.startswith("removed target offsite: ") for line in again.recovered), again.recovered
    assert again.volumes[0].status is VolumeStatus.OK, again.volumes[0].errors
    name = Path(again.volumes[0].archive or "").name.removeprefix("offsite:v/")
    assert sorted(os.listdir(landed)) == [name, name + MANIFEST_SUFFIX]  # the dead run's temporary is gone


def _sources(tmp_path: Path) -> Any:
    from coord.sources import VolumeSources

    return VolumeSources(tmp_path / "volumes")


def test_a_server_refusing_writes_fails_the_volume_naming_the_target_and_the_local_copy_stays(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers("webdav")
    use_remote(remote)
    remote.start(read_only=True)
    engine.add_volume("v", FILES)
    setting(tmp_path, {"local": {"path": str(tmp_path / "dest")}, "offsite": {"rclone": remote.under("t5")}})
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"]) == (1, "failed")
    assert [(t["target"], t["status"]) for t in volume["targets"]] == [("local", "ok"), ("offsite", "failed")]
    assert volume["targets"][1]["error"].startswith("target offsite: writing ")
    assert volume["targets"][1]["error"] in volume["errors"]
    assert Path(volume["archive"]).is_file() and Path(volume["manifest"]).is_file()  # the local target has it
    assert volume_files(remote, "t5/v") == []


def test_a_wrong_password_is_a_clear_error_and_no_secret_reaches_json_logs_or_history(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers("s3")
    wrong = remote.wrong_password()
    use_remote(remote, **wrong)
    engine.add_volume("v", FILES)
    setting(tmp_path, {"offsite": {"rclone": remote.under("t6")}})
    code, document, stderr = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"]) == (1, "failed")
    assert volume["targets"] == [
        {"target": "offsite", "status": "failed", "ref": None, "error": volume["targets"][0]["error"]}
    ]
    assert "target offsite: writing " in volume["targets"][0]["error"]
    assert "SignatureDoesNotMatch" in volume["targets"][0]["error"] or "403" in volume["targets"][0]["error"]
    history = b"".join(path.read_bytes() for path in (tmp_path / "state").rglob("*") if path.is_file())
    for secret in (remote.password, *wrong.values()):
        assert secret not in json.dumps(document) and secret not in stderr
        assert secret.encode() not in history


def test_one_of_two_targets_down_the_other_gets_the_archive_and_the_run_exits_1(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    up, down = rclone_servers("webdav"), rclone_servers("sftp")
    use_remote(up)
    use_remote(down)
    down.stop()
    engine.add_volume("v", FILES)
    setting(tmp_path, {"first": {"rclone": down.under("t7")}, "second": {"rclone": up.under("t7")}})
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"]) == (1, "failed")
    by_target = {t["target"]: t for t in volume["targets"]}
    assert by_target["first"]["status"] == "failed" and "connection refused" in by_target["first"]["error"]
    assert by_target["first"]["error"].startswith("target first: ")
    assert by_target["second"]["status"] == "ok" and by_target["second"]["ref"].startswith("second:v/")
    name = by_target["second"]["ref"].removeprefix("second:v/")
    assert volume_files(up, "t7/v") == [name, name + MANIFEST_SUFFIX]


def test_a_second_remote_target_gets_a_copy_from_the_first(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    first, second = rclone_servers("sftp"), rclone_servers("webdav")
    use_remote(first)
    use_remote(second)
    engine.add_volume("v", FILES)
    setting(tmp_path, {"a": {"rclone": first.under("t8")}, "b": {"rclone": second.under("t8")}})
    code, document, _ = backup(tmp_path, "--target", "a", "--target", "b")
    volume = document["volumes"][0]
    assert (code, volume["status"]) == (0, "ok"), volume["errors"]
    name = volume["archive"].removeprefix("a:v/")
    assert [(t["target"], t["status"], t["ref"]) for t in volume["targets"]] == [
        ("a", "ok", f"a:v/{name}"),
        ("b", "ok", f"b:v/{name}"),
    ]
    assert (first.local_root / "t8" / "v" / name).read_bytes() == (second.local_root / "t8" / "v" / name).read_bytes()


def test_target_selects_a_subset_and_a_policy_may_name_its_targets(
    tmp_path: Path, engine: FakeEngine, rclone_servers: Servers, use_remote: Callable[..., None]
) -> None:
    remote = rclone_servers("webdav")
    use_remote(remote)
    engine.add_volume("v", FILES)
    targets = {"local": {"path": str(tmp_path / "dest")}, "offsite": {"rclone": remote.under("t9")}}
    setting(tmp_path, targets, "targets: [offsite]\n")
    code, document, _ = backup(tmp_path)
    assert code == 0 and [t["target"] for t in document["volumes"][0]["targets"]] == ["offsite"]
    assert not (tmp_path / "dest").exists()

    code, document, _ = backup(tmp_path, "--target", "local")
    assert code == 1 and "no target: policy data sends its archives to offsite" in document["volumes"][0]["errors"][0]

    setting(tmp_path, targets, "targets: [ofsite]\n")
    code, document, _ = backup(tmp_path)
    assert code == 2 and "data.yaml:3: targets[0]: no target named 'ofsite' (did you mean 'offsite'?)" in (
        document["errors"][0]
    )


def test_plan_shows_each_volumes_targets(tmp_path: Path, engine: FakeEngine) -> None:
    engine.add_volume("v", FILES)
    setting(tmp_path, {"offsite": {"rclone": "offsite:coord"}})
    arguments = ["plan", "--json", "--policies-dir", str(tmp_path / "policies"), "--dest", str(tmp_path / "dest")]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    volume = json.loads(result.stdout)["groups"][0]["volumes"][0]
    assert volume["targets"] == ["offsite (rclone offsite:coord)", f"local ({tmp_path / 'dest'})"]
    result = CliRunner().invoke(app, [*arguments, "--target", "offsit"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "no target named 'offsit' (did you mean 'offsite'?)" in json.loads(result.stdout)["errors"][0]


def test_a_second_local_target_gets_a_checked_copy(tmp_path: Path, engine: FakeEngine) -> None:
    engine.add_volume("v", FILES)
    setting(tmp_path, {"main": {"path": str(tmp_path / "main")}, "usb": {"path": str(tmp_path / "usb")}})
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"]) == (0, "ok"), volume["errors"]
    archive = Path(volume["archive"])
    assert [(t["target"], t["status"]) for t in volume["targets"]] == [("main", "ok"), ("usb", "ok")]
    assert files_under(tmp_path / "usb") == [f"v/{archive.name}", f"v/{archive.name}{MANIFEST_SUFFIX}"]
    assert (tmp_path / "usb" / "v" / archive.name).read_bytes() == archive.read_bytes()
