"""Containers never wait for an upload: a volume whose targets are all remote, read while its containers are paused
or stopped, is spooled to a local file in the state directory and uploaded once they are back (then the spool
goes); read live or from a snapshot it streams to the remote with no local file. `coord plan` says which.

The step record of each run (RunContext.steps) is compared with the plan's steps, as in
tests/unit/test_plan_matches_run.py. Docker is not the point: the in-memory engine of tests/fakes.py stands in
for it (real tar, zstd and rclone; a real rclone server on loopback, one per kind for the module).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.fakes import FakeEngine
from tests.rclone_servers import ServedRemote
from typer.testing import CliRunner

import coord.backup.job
from coord.backup.context import BackupRequest
from coord.backup.plan import describe_group
from coord.backup.run import run_backup
from coord.backup.steps import Step, StepKind, group_steps, remote_only_volumes
from coord.backup.upload import probe_target
from coord.cli import app
from coord.docker_ops import DockerControl
from coord.journal import PARTIAL, Journal
from coord.manifest import MANIFEST_SUFFIX
from coord.plan import group_volumes, plan_volumes
from coord.policy import load_policies
from coord.results import TargetStatus, VolumeStatus
from coord.sources import VolumeSources
from coord.targets import Target
from coord.timestamps import file_stamp

Servers = Callable[[str], ServedRemote]
FILES = {"a.txt": "alpha\n", "dir/a": "in a directory\n"}
RESUMED_BY = {"pause": "unpause", "stop": "start"}


def scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: ServedRemote, strategy: str, where: str, extra: str = ""
) -> tuple[BackupRequest, FakeEngine]:
    """Volume `v` used by the running container `app`, one policy with `strategy`, and the run's only target
    `offsite`: the server's `where` directory (defined by RCLONE_CONFIG_* variables)."""
    for name, value in remote.environment().items():
        monkeypatch.setenv(name, value)
    engine = FakeEngine(tmp_path / "volumes")
    engine.add_volume("v", FILES)
    engine.add_container("app", ("v",))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(f"volumes: [v]\nstrategy: {strategy}\n{extra}")
    target = Target("offsite", rclone_path=remote.under(where))
    request = BackupRequest(
        policies, None, state_dir=tmp_path / "state", sources=VolumeSources(tmp_path / "volumes"), targets=(target,)
    )
    return request, engine


def planned(request: BackupRequest, engine: FakeEngine) -> tuple[list[Step], list[str]]:
    """The steps and the words of `coord plan` for the request's targets."""
    plans = plan_volumes(load_policies(request.policies_dir), engine.volume_names())
    steps: list[Step] = []
    lines: list[str] = []
    for group in group_volumes(plans, engine):
        remote_only = remote_only_volumes(group.volumes, request.targets)
        steps += group_steps(group, group.volumes, remote_only)
        lines += describe_group(group, remote_only)
    return steps, lines


def keys(steps: list[Step]) -> list[tuple[str, str | None, str | None]]:
    return [step.key for step in steps]


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) if root.is_dir() else []


def landed(remote: ServedRemote, where: str) -> list[str]:
    directory = remote.local_root / where / "v"
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


@pytest.mark.parametrize(("strategy", "kind"), [("pause", "sftp"), ("stop", "s3")])
def test_a_quiesced_remote_only_volume_is_spooled_and_uploaded_once_the_containers_are_back(
    strategy: str, kind: str, tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers(kind)
    where = f"spool-{strategy}"
    request, engine = scene(tmp_path, monkeypatch, remote, strategy, where)
    spool = tmp_path / "state" / "uploads"
    at_resume: dict[str, list[str]] = {}

    def look() -> None:  # right after the container is given back: spooled, nothing uploaded yet
        at_resume.update(spool=files_under(spool), remote=landed(remote, where), state=[engine.state_of("app")])

    engine.after(RESUMED_BY[strategy], "app", look)
    plan, lines = planned(request, engine)
    steps: list[Step] = []
    volume = run_backup(request, engine, None, steps).volumes[0]

    assert (volume.status, volume.errors) == (VolumeStatus.OK, [])
    assert keys(steps) == keys(plan)  # the run did what `coord plan` says
    kinds = [step.kind for step in steps]
    assert StepKind.ARCHIVE not in kinds  # nothing streamed while the container waited
    assert kinds.index(StepKind.QUIESCE) < kinds.index(StepKind.SPOOL) < kinds.index(StepKind.RESUME)
    assert kinds.index(StepKind.RESUME) < kinds.index(StepKind.UPLOAD)
    name = (volume.archive or "").removeprefix("offsite:v/")
    assert name.startswith("v-") and name.endswith(".tar.zst")
    assert at_resume == {"spool": [f"v/{name}.partial"], "remote": [], "state": ["running"]}
    assert [(t.target, t.status, t.ref) for t in volume.targets] == [("offsite", TargetStatus.OK, f"offsite:v/{name}")]
    assert volume.manifest == f"offsite:v/{name}{MANIFEST_SUFFIX}"
    assert landed(remote, where) == [name, name + MANIFEST_SUFFIX]
    manifest = json.loads((remote.local_root / where / "v" / (name + MANIFEST_SUFFIX)).read_text())
    assert manifest["archive"] == name and manifest["size"] == (remote.local_root / where / "v" / name).stat().st_size
    assert files_under(spool) == [] and Journal(request.state_dir).entries() == []
    assert any("local spool file" in line and "free space" in line for line in lines), lines
    assert any("upload the spooled archive of v" in line for line in lines), lines


def test_an_encrypted_spool_is_checked_and_uploaded_like_a_local_archive(
    tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("sftp")  # checks md5/sha1: of the encrypted spool file, which gpg wrote
    (tmp_path / "pass").write_text("correct horse\n")
    encrypt = f"encrypt: {{passphrase_file: {tmp_path}/pass}}\n"
    request, engine = scene(tmp_path, monkeypatch, remote, "pause", "spool-gpg", encrypt)
    volume = run_backup(request, engine).volumes[0]

    assert (volume.status, volume.errors) == (VolumeStatus.OK, [])
    name = (volume.archive or "").removeprefix("offsite:v/")
    assert name.endswith(".tar.zst.gpg") and landed(remote, "spool-gpg") == [name, name + MANIFEST_SUFFIX]
    stored = remote.local_root / "spool-gpg" / "v" / name
    manifest = json.loads(stored.with_name(name + MANIFEST_SUFFIX).read_text())
    assert manifest["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert manifest["validated_by"] == "read back: decrypted, decompressed and listed"
    assert files_under(tmp_path / "state" / "uploads") == [] and Journal(request.state_dir).entries() == []


def test_a_failed_upload_of_a_spool_fails_the_volume_and_leaves_no_spool(
    tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("webdav")
    request, engine = scene(tmp_path, monkeypatch, remote, "pause", "spool-fail")
    stopped: list[bool] = []

    def stop_once() -> None:  # the server dies while the container waits (in the first run only)
        if not stopped:
            stopped.append(True)
            remote.stop()

    engine.after("pause", "app", stop_once)
    steps: list[Step] = []
    volume = run_backup(request, engine, None, steps).volumes[0]

    assert volume.status is VolumeStatus.FAILED
    assert [(t.target, t.status) for t in volume.targets] == [("offsite", TargetStatus.FAILED)]
    error = volume.targets[0].error or ""
    assert error.startswith("target offsite: ") and error in volume.errors
    assert volume.archive is None and volume.manifest is None
    assert StepKind.UPLOAD in [step.kind for step in steps]
    assert engine.state_of("app") == "running"
    assert files_under(tmp_path / "state" / "uploads") == []  # the spool went all the same
    assert [entry.kind for entry in Journal(request.state_dir).entries() if entry.kind == PARTIAL] == []
    remote.start()
    again = run_backup(request, engine).volumes[0]  # recovers what the dead upload left, then succeeds
    assert again.status is VolumeStatus.OK, again.errors
    name = (again.archive or "").removeprefix("offsite:v/")
    assert landed(remote, "spool-fail") == [name, name + MANIFEST_SUFFIX]


class SeeLocalFiles:
    """A Progress that notes, while the volume is read, every file under the state directory."""

    def __init__(self, state: Path) -> None:
        self.state, self.seen, self.updates = state, set[str](), 0

    def begin(self, volume: str) -> None:
        self.seen.update(files_under(self.state))

    def update(self, entries: int, written_bytes: int) -> None:
        self.updates += 1
        self.seen.update(files_under(self.state))

    def end(self) -> None:
        self.seen.update(files_under(self.state))


@pytest.mark.parametrize("strategy", ["snapshot", "live"])
def test_a_remote_only_volume_read_without_waiting_containers_streams_with_no_local_file(
    strategy: str, tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("sftp")
    where = f"stream-{strategy}"
    request, engine = scene(tmp_path, monkeypatch, remote, strategy, where)
    (engine.volumes["v"] / "random.bin").write_bytes(os.urandom(4 << 20))  # long enough to be seen mid-read
    plan, lines = planned(request, engine)
    steps: list[Step] = []
    watcher = SeeLocalFiles(tmp_path / "state")
    volume = run_backup(request, engine, watcher, steps).volumes[0]

    assert (volume.status, volume.errors) == (VolumeStatus.OK, [])
    assert keys(steps) == keys(plan)
    assert not {StepKind.SPOOL, StepKind.UPLOAD} & {step.kind for step in steps}
    journaled = [path for path in watcher.seen if path.startswith("journal/remote-publish-")]
    assert journaled, watcher.seen  # seen while the archive streamed
    assert not [path for path in set(watcher.seen) - set(journaled) if ".tar" in path], watcher.seen  # no local file
    assert files_under(tmp_path / "state" / "uploads") == []
    name = (volume.archive or "").removeprefix("offsite:v/")
    assert landed(remote, where) == [name, name + MANIFEST_SUFFIX]
    assert any("streamed to its remote target (no local copy)" in line for line in lines), lines
    assert not any("spool" in line for line in lines), lines


class RenameDuringLiveRead:
    """A Progress that renames a file during the first (live) read: the live verdict is at-risk, auto escalates."""

    def __init__(self, volume: Path) -> None:
        self.volume, self.done = volume, False

    def begin(self, volume: str) -> None: ...

    def update(self, entries: int, written_bytes: int) -> None:
        if not self.done:
            self.done = True
            (self.volume / "dir" / "a").rename(self.volume / "dir" / "b")

    def end(self) -> None: ...


def test_auto_streams_its_live_read_and_spools_its_escalated_pause(
    tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("sftp")
    request, engine = scene(tmp_path, monkeypatch, remote, "auto", "auto", "escalate_to: pause\n")
    at_pause: list[str] = []
    engine.after("pause", "app", lambda: at_pause.extend(landed(remote, "auto") or ["nothing"]))
    plan, lines = planned(request, engine)
    steps: list[Step] = []
    volume = run_backup(request, engine, RenameDuringLiveRead(engine.volumes["v"]), steps).volumes[0]

    assert volume.status is VolumeStatus.OK, volume.errors
    assert [attempt.strategy.value for attempt in volume.attempts] == ["live", "pause"]
    assert keys(steps) == keys(plan)
    kinds = [step.kind for step in steps]
    assert kinds.index(StepKind.ARCHIVE) < kinds.index(StepKind.SPOOL) < kinds.index(StepKind.RESUME)
    assert kinds.index(StepKind.RESUME) < kinds.index(StepKind.UPLOAD)
    assert "   otherwise, once, with strategy pause:" in lines
    assert at_pause == ["nothing"]  # the discarded live read's upload was removed before the second read
    name = (volume.archive or "").removeprefix("offsite:v/")
    assert landed(remote, "auto") == [name, name + MANIFEST_SUFFIX]  # the discarded live read left nothing there
    assert files_under(tmp_path / "state" / "uploads") == [] and Journal(request.state_dir).entries() == []


class DieAfterSpooling:
    """A Progress whose `end` (the archive step's last act, containers still paused) kills the process, as an OOM
    kill or a power cut would: the spool file and its journal entry stay behind."""

    def begin(self, volume: str) -> None: ...

    def update(self, entries: int, written_bytes: int) -> None: ...

    def end(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def test_coord_recover_removes_the_spool_of_a_run_killed_while_spooling(
    tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("webdav")
    request, engine = scene(tmp_path, monkeypatch, remote, "pause", "spool-killed")
    child = multiprocessing.get_context("fork").Process(target=run_backup, args=(request, engine, DieAfterSpooling()))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    spool = tmp_path / "state" / "uploads"
    left = files_under(spool)
    assert len(left) == 1 and left[0].startswith("v/") and left[0].endswith(".partial")
    assert PARTIAL in [entry.kind for entry in Journal(request.state_dir).entries()]

    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: engine))
    arguments = ["recover", "--json", "--state-dir", str(request.state_dir)]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    report = json.loads(result.stdout)
    assert (result.exit_code, report["errors"]) == (0, [])
    assert str(spool / left[0]) in report["removed_partials"]
    assert files_under(spool) == [] and Journal(request.state_dir).entries() == []
    assert landed(remote, "spool-killed") == []  # nothing was uploaded while the container waited


def plant_names_for_the_next_minute(directory: Path, suffix: str) -> set[str]:
    """Files in `directory` at every name coord wants first for a backup of `v` started in the next minute, as a
    run a moment earlier (or another coord) leaves them: taken, and not this run's to replace."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    planted = {f"v-{file_stamp(now + timedelta(seconds=second))}{suffix}" for second in range(-1, 60)}
    for name in planted:
        (directory / name).write_bytes(b"not this run's\n")
    return planted


@pytest.mark.parametrize(
    ("strategy", "kind", "planted_suffix"),
    [("live", "s3", ".tar.zst"), ("pause", "sftp", ".tar.zst"), ("snapshot", "webdav", ".tar.zst.partial")],
)
def test_a_name_taken_on_the_remote_in_the_same_second_gets_a_counter_not_a_failure(
    strategy: str,
    kind: str,
    planted_suffix: str,
    tmp_path: Path,
    rclone_servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs in one second want the same name, and the local spool directory (or none: streamed) cannot know the
    remote's names: the name is looked up there (streamed: before archiving; spooled: once the containers are
    back), and an archive, or an upload's temporary (webdav is not atomic), takes the name with the next counter."""
    remote = rclone_servers(kind)
    where = f"taken-{strategy}"
    request, engine = scene(tmp_path, monkeypatch, remote, strategy, where)
    volume_dir = remote.local_root / where / "v"
    planted = plant_names_for_the_next_minute(volume_dir, planted_suffix)
    volume = run_backup(request, engine).volumes[0]

    assert (volume.status, volume.errors) == (VolumeStatus.OK, [])
    name = (volume.archive or "").removeprefix("offsite:v/")
    assert name.startswith("v-") and name.endswith("-1.tar.zst")
    assert name.removesuffix("-1.tar.zst") + planted_suffix in planted  # the second it was taken in
    assert set(landed(remote, where)) == planted | {name, name + MANIFEST_SUFFIX}
    assert {path.read_bytes() for path in volume_dir.iterdir() if path.name in planted} == {b"not this run's\n"}
    manifest = json.loads((volume_dir / (name + MANIFEST_SUFFIX)).read_text())
    assert manifest["archive"] == name and manifest["size"] == (volume_dir / name).stat().st_size
    assert files_under(tmp_path / "state" / "uploads") == [] and Journal(request.state_dir).entries() == []


def test_a_streamed_volume_whose_target_cannot_be_asked_fails_before_anything_is_read(
    tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers("webdav")
    request, engine = scene(tmp_path, monkeypatch, remote, "live", "unreachable")

    def probe_then_lose_the_server(*arguments: object, **keywords: object) -> object:  # admitted, then it dies
        probed = probe_target(*arguments, **keywords)
        remote.stop()
        return probed

    monkeypatch.setattr(coord.backup.job, "probe_target", probe_then_lose_the_server)
    watcher = SeeLocalFiles(tmp_path / "state")  # begins when tar starts reading
    try:
        volume = run_backup(request, engine, watcher).volumes[0]
    finally:
        remote.start()

    assert volume.status is VolumeStatus.FAILED and volume.archive is None
    [error] = volume.errors
    assert error.startswith("nothing archived: target offsite: looking up "), error
    assert (watcher.seen, watcher.updates) == (set(), 0)  # nothing was read
    assert Journal(request.state_dir).entries() == [] and landed(remote, "unreachable") == []
