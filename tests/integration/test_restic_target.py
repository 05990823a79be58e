"""A restic repository as a target (issue 15), against real repositories: a local one, and one behind a loopback
rest server (`rclone serve restic`, rclone's implementation of restic's REST protocol).

backup -> list -> verify (+ restic check) -> restore <ref> byte-identical (content, owners, modes, hard links,
symlinks, mtimes); a second backup after a small change adds a small fraction of the first; a backup killed
mid-stream leaves the repository consistent and the next run succeeds; a wrong password fails the volume with no
secret in the output; retention forgets and prunes, never the newest.

Docker is not the point here: tests/fakes.py's in-memory engine stands in for it (real tar, real restic).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import FakeEngine
from tests.rclone_servers import READY_WAIT_S, free_port
from tests.trees import differences, populate_links, snapshot_tree
from typer.testing import CliRunner

from coord.cli import app
from coord.docker_ops import DockerControl
from coord.run_records import RUNS_DIRECTORY
from coord.targets.rclone import rclone_binary
from coord.targets.restic import LOCK_WAIT_ENV, TAG_ARCHIVE, TAG_COORD, Restic, ResticError

PASSWORD = "restic-test-s3cr3t-Passw0rd"
KINDS = ("local", "rest")


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("restic-secret") / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def serve_restic(directory: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`rclone serve restic` (restic's REST protocol) over `directory` on 127.0.0.1:`port`, once it answers."""
    log = (directory.parent / f"rest-server-{port}.log").open("ab")
    process = subprocess.Popen(
        [rclone_binary(), "serve", "restic", str(directory), "--addr", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + READY_WAIT_S
    try:
        while subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, "rclone serve restic did not start"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait()
        log.close()


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One rest server for the module; yields its base URL (`rest:http://127.0.0.1:PORT/`)."""
    port = free_port()
    with serve_restic(tmp_path_factory.mktemp("rest-server"), port):
        yield f"rest:http://127.0.0.1:{port}/"


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    fake = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: fake))
    return fake


def repository_for(kind: str, tmp_path: Path, rest_server: str) -> str:
    return str(tmp_path / "repo") if kind == "local" else f"{rest_server}{tmp_path.name}"


def setting(tmp_path: Path, repository: str, password_file: Path, policy: str = "") -> Path:
    """policies/ with one live policy for volume `v` and a _defaults.yaml whose only target is restic `repo`."""
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "data.yaml").write_text("volumes: [v]\nstrategy: live\n" + policy)
    target = {"restic": repository, "password_file": str(password_file)}
    (policies / "_defaults.yaml").write_text(json.dumps({"targets": {"repo": target}}))
    return policies


def coord(tmp_path: Path, *arguments: str) -> tuple[int, str, str]:
    common = ["--policies-dir", str(tmp_path / "policies")]
    if arguments[0] in ("backup", "list", "verify", "restore", "prune"):
        common += ["--state-dir", str(tmp_path / "state")]
    if arguments[0] == "backup":
        common += ["--volumes-root", str(tmp_path / "volumes")]
    result = CliRunner().invoke(app, [*arguments, *common], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def backup(tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    code, out, err = coord(tmp_path, "backup", "--json")
    return code, json.loads(out), err


def restic_json(repository: str, password_file: Path, *arguments: str) -> Any:
    environment = {**os.environ, "RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD_FILE": str(password_file)}
    done = subprocess.run(["restic", *arguments, "--json"], env=environment, capture_output=True, check=True)
    return json.loads(done.stdout)


def make_volume(engine: FakeEngine) -> Path:
    root = engine.add_volume("v", {"a.txt": "alpha\n", "sub/b.txt": "beta\n" * 1000})
    populate_links(root)  # hard links, symlinks (relative, absolute, dangling)
    (root / "mode").write_text("x")
    (root / "mode").chmod(0o640)
    os.chown(root / "a.txt", 1234, 5678)
    os.utime(root / "sub" / "b.txt", (1_600_000_000, 1_600_000_000))
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_backup_list_verify_restore_round_trip(
    kind: str, tmp_path: Path, engine: FakeEngine, rest_server: str, password_file: Path
) -> None:
    repository = repository_for(kind, tmp_path, rest_server)
    setting(tmp_path, repository, password_file)
    root = make_volume(engine)
    code, before_init, _ = backup(tmp_path)  # never creates a repository by itself
    assert code == 1 and "coord init-target repo" in before_init["volumes"][0]["errors"][0]
    assert coord(tmp_path, "init-target", "repo")[0] == 0

    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert (code, volume["status"], volume["errors"]) == (0, "ok", [])
    ref = volume["targets"][0]["ref"]
    assert ref.startswith("repo:v/v-") and ref.endswith(".tar") and volume["archive"] == ref
    assert not list((tmp_path / "state").rglob("*.tar*")), "nothing of the archive on local disk"

    code, listed, _ = coord(tmp_path, "list", "--json")
    [archive] = json.loads(listed)["targets"][0]["archives"]
    assert (code, archive["ref"], archive["status"], archive["verdict"]) == (0, ref, "ok", "consistent")
    assert archive["size"] == volume["size"]

    code, verified, _ = coord(tmp_path, "verify", ref, "--read-data-subset", "100%")
    assert code == 0 and verified.startswith(f"OK {ref}"), verified

    restored = tmp_path / "restored"
    code, out, err = coord(tmp_path, "restore", ref, "--target-dir", str(restored))
    assert code == 0, out + err
    assert differences(snapshot_tree(root), snapshot_tree(restored)) == []
    everything = json.dumps(document) + out + err + verified
    assert PASSWORD not in everything


def test_the_second_backup_after_a_small_change_adds_a_small_fraction(
    tmp_path: Path, engine: FakeEngine, rest_server: str, password_file: Path
) -> None:
    repository = str(tmp_path / "repo")
    setting(tmp_path, repository, password_file)
    root = engine.add_volume("v")
    # 60 "parts" of 1 MiB of incompressible data: restic's chunks average 1 MiB (512 KiB to 8 MiB), so a much
    # smaller volume has too few chunks for the fraction to mean anything
    for part in range(60):
        (root / f"part-{part:02d}.bin").write_bytes(os.urandom(1 << 20))
    assert coord(tmp_path, "init-target", "repo")[0] == 0
    first = restic_json(repository, password_file, "stats", "--mode", "raw-data")["total_size"]
    assert backup(tmp_path)[0] == 0
    after_first = restic_json(repository, password_file, "stats", "--mode", "raw-data")["total_size"]
    (root / "part-30.bin").unlink()  # one part merged away, one new: 2 of 60 parts changed
    (root / "part-60.bin").write_bytes(os.urandom(1 << 20))
    time.sleep(1.1)  # a distinct archive name (one per second)
    assert backup(tmp_path)[0] == 0
    after_second = restic_json(repository, password_file, "stats", "--mode", "raw-data")["total_size"]
    day1, day2 = after_first - first, after_second - after_first
    print(f"restic day 1 added {day1} bytes, day 2 {day2} bytes: {day2 / day1:.1%}")
    assert day2 < day1 * 0.25  # loose: the new part, the chunks around the removed one, metadata


def test_wrong_password_fails_the_volume_without_the_secret(
    tmp_path: Path, engine: FakeEngine, rest_server: str, password_file: Path
) -> None:
    repository = str(tmp_path / "repo")
    setting(tmp_path, repository, password_file)
    make_volume(engine)
    assert coord(tmp_path, "init-target", "repo")[0] == 0
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-Passw0rd-at-all\n")
    setting(tmp_path, repository, wrong)
    code, document, err = backup(tmp_path)
    volume = document["volumes"][0]
    assert code == 1 and volume["status"] == "failed"
    assert "target repo" in volume["errors"][0] and "wrong password" in volume["errors"][0]
    assert "not-the-Passw0rd" not in json.dumps(document) + err


class KillsResticMidway:
    """A stream of `size` random bytes that SIGKILLs this process's restic children once half of it was read:
    restic dies in the middle of `restic backup --stdin`, as on a crash or an OOM kill."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.half = size // 2
        self.killed: list[int] = []

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self.left <= self.half and not self.killed:
            self.killed = kill_restic_children()
        count = min(len(buffer), self.left, 1 << 20)
        buffer[:count] = os.urandom(count)
        self.left -= count
        return count

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("restic's sink reads with readinto")


def kill_restic_children() -> list[int]:
    killed = []
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "restic":
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
    return killed


def test_a_backup_killed_mid_stream_leaves_the_repository_consistent_and_the_next_run_succeeds(
    tmp_path: Path, engine: FakeEngine, rest_server: str, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = f"{rest_server}killed-{tmp_path.name}"
    setting(tmp_path, repository, password_file)
    make_volume(engine)
    assert coord(tmp_path, "init-target", "repo")[0] == 0
    restic = Restic("repo", repository, password_file)
    tags = [TAG_COORD, TAG_ARCHIVE, "coord-volume=v"]
    # restic killed half-way: the backup fails, and no snapshot is made
    stream = KillsResticMidway(64 * 1024 * 1024)
    with pytest.raises(ResticError, match=r"target repo: backup of v-killed\.tar"):
        restic.backup_stream(stream, "v-killed.tar", tags)
    assert stream.killed and restic.snapshots() == []
    # The dead restic's lock stays. A backup takes a shared lock and is not blocked by it; what needs the
    # repository alone (check, prune) waits, then reports it, and coord never runs `restic unlock` by itself.
    monkeypatch.setenv(LOCK_WAIT_ENV, "1")
    with pytest.raises(ResticError, match=r"locked by another restic process.*coord did not break the lock"):
        restic.check()
    # coord killed half-way: restic sees its stdin end and stores what it got, but no manifest ever follows
    restic.backup_bytes(b"half a tar stream", "v-20000101T000000Z.tar", tags)
    code, document, _ = backup(tmp_path)
    assert (code, document["volumes"][0]["status"]) == (0, "ok"), document
    code, listed, _ = coord(tmp_path, "list", "--json")
    archives = json.loads(listed)["targets"][0]["archives"]
    assert [item["ref"] for item in archives] == [document["volumes"][0]["archive"]]  # the incomplete one is not
    # The operator's `restic unlock` removes only stale locks (of dead processes); then the repository checks clean
    environment = {**os.environ, "RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD_FILE": str(password_file)}
    subprocess.run(["restic", "unlock"], env=environment, check=True, capture_output=True)
    assert "no errors were found" in restic.check()


def test_retention_forgets_and_prunes_and_keeps_the_newest(
    tmp_path: Path, engine: FakeEngine, password_file: Path
) -> None:
    repository = str(tmp_path / "repo")
    setting(tmp_path, repository, password_file, "retention: {keep_last: 1}\n")
    make_volume(engine)
    assert coord(tmp_path, "init-target", "repo")[0] == 0
    refs = []
    for _ in range(2):
        code, document, _ = backup(tmp_path)
        assert code == 0, document
        refs.append(document["volumes"][0]["archive"])
        time.sleep(1.1)
    code, listed, _ = coord(tmp_path, "list", "--json")
    assert [item["ref"] for item in json.loads(listed)["targets"][0]["archives"]] == [refs[-1]]
    snapshots = restic_json(repository, password_file, "snapshots")
    assert len(snapshots) == 2  # the newest archive and its manifest; the others forgotten, their data pruned


@pytest.mark.parametrize(
    ("targets", "policy", "expected"),
    [
        pytest.param(
            {"local": {"path": "DEST"}},
            "",
            "a restic target must be a volume's only target (it gets the uncompressed stream); give policy data "
            "`targets: [repo]` or the others",
            id="with-another-target",
        ),
        pytest.param(
            {},
            "encrypt: {passphrase_file: SECRET}\n",
            "which encrypts by itself and could not deduplicate gpg's output: drop `encrypt:` for this policy",
            id="with-gpg-encryption",
        ),
    ],
)
def test_a_restic_target_alone_and_unencrypted_or_refused_before_anything_runs(
    tmp_path: Path, engine: FakeEngine, password_file: Path, targets: dict[str, Any], policy: str, expected: str
) -> None:
    (tmp_path / "passphrase").write_text("a passphrase of some length\n")
    (tmp_path / "passphrase").chmod(0o600)
    policies = setting(
        tmp_path, str(tmp_path / "repo"), password_file, policy.replace("SECRET", str(tmp_path / "passphrase"))
    )
    defaults = json.loads((policies / "_defaults.yaml").read_text())
    defaults["targets"].update({name: {"path": str(tmp_path / "dest")} for name in targets})
    (policies / "_defaults.yaml").write_text(json.dumps(defaults))
    engine.add_volume("v", {"a.txt": "alpha\n"})
    code, document, _ = backup(tmp_path)
    volume = document["volumes"][0]
    assert code == 1 and volume["status"] == "failed" and expected in volume["errors"][0]
    # nothing was written anywhere but the refused run's own record (`_runs/`, run_records.py)
    dest = tmp_path / "dest"
    assert not (tmp_path / "repo").exists()
    assert not [p for p in dest.rglob("*") if p.is_file() and p.relative_to(dest).parts[0] != RUNS_DIRECTORY]


def test_each_node_backs_up_with_its_own_host_and_reads_only_its_snapshots(
    tmp_path: Path, engine: FakeEngine, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Swarm node's namespace on a restic target is its host (`restic backup --host <node>`, never the
    container's changing hostname): two nodes with a volume of the same name in one repository; each node's
    listing and retention (keep_last 1) see only its own snapshots; --node and a node's ref read the other's.
    COORD_NODE_LAYOUT=nodes stands for the Swarm node (FakeEngine is not one)."""
    repository = str(tmp_path / "repo")
    setting(tmp_path, repository, password_file, "retention: {keep_last: 1}\n")
    make_volume(engine)
    assert coord(tmp_path, "init-target", "repo")[0] == 0
    monkeypatch.setenv("COORD_NODE_LAYOUT", "nodes")
    refs: dict[str, str] = {}
    for node in ("node1", "node2", "node2"):
        monkeypatch.setenv("COORD_NODE", node)
        code, document, err = backup(tmp_path)
        assert code == 0, (document, err)
        refs[node] = document["volumes"][0]["targets"][0]["ref"]
        assert refs[node].startswith(f"repo:{node}/v/v-"), refs[node]
    hosts = sorted(item["hostname"] for item in restic_json(repository, password_file, "snapshots"))
    assert hosts == ["node1", "node1", "node2", "node2"]  # archive + manifest each; node2's first one forgotten

    monkeypatch.setenv("COORD_NODE", "node1")
    code, out, _ = coord(tmp_path, "list", "--json")
    assert code == 0 and [a["ref"] for a in json.loads(out)["targets"][0]["archives"]] == [refs["node1"]]
    code, out, _ = coord(tmp_path, "list", "--json", "--node", "node2")
    assert code == 0 and [a["ref"] for a in json.loads(out)["targets"][0]["archives"]] == [refs["node2"]]
    assert coord(tmp_path, "verify", refs["node2"])[0] == 0
    code, out, err = coord(tmp_path, "verify", "--latest", "v", "--node", "node2", "--json")
    assert code == 0 and json.loads(out)["archive"] == refs["node2"], out + err
