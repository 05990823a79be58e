"""Faults around publishing and quiescing on the real engine and real file systems: a destination that fills up at
the manifest, coord killed between the archive's rename and its manifest, a journal that cannot be written (read-only,
full while containers are paused), and a hung engine at unpause."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import REPO, container_state, run_coord, volume_path, write_policy
from tests.faultproxy import FaultProxy

from coord.docker_ops import API_TIMEOUT_S, UNPAUSE_TIMEOUT_S
from coord.run_records import RUNS_DIRECTORY

pytestmark = pytest.mark.docker

PAGE = 4096


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[..., Path]]:
    """Mount a small tmpfs (root only; coord's tests run as root against the engine) and unmount it afterwards."""
    mounted: list[Path] = []

    def mount(target: Path, size_bytes: int, read_only: bool = False) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        options = f"size={size_bytes}" + (",ro" if read_only else "")
        completed = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if completed.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs at {target}: {completed.stderr.decode()}", pytrace=False)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def data_volume(docker_client, make_volume) -> str:
    """A volume holding incompressible data, so its archive's size does not depend on the compressor."""
    volume = make_volume("data")
    mount = volume_path(docker_client, volume)
    (mount / "random.bin").write_bytes(os.urandom(300_000))
    (mount / "note.txt").write_text("hello\n")
    return volume


def backup(policies: Path, dest: Path, env: dict[str, str] | None = None):
    run = run_coord("backup", "--policies-dir", str(policies), "--dest", str(dest), "--json", env=env)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def files_under(directory: Path) -> list[str]:
    """The files under a target's directory, its run records (`_runs/`: a failed run publishes one too) left out."""
    files = [path.relative_to(directory) for path in directory.rglob("*") if path.is_file()]
    return sorted(str(path) for path in files if path.parts[0] != RUNS_DIRECTORY)


def test_disk_full_at_the_manifest_fails_the_volume_cleanly(docker_client, make_volume, mount_tmpfs, tmp_path) -> None:
    volume = data_volume(docker_client, make_volume)
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: live\n")
    sizing = backup(tmp_path / "p", tmp_path / "sizing")
    assert sizing.returncode == 0, sizing.stderr
    archive_size = Path(sizing.json["volumes"][0]["archive"]).stat().st_size
    # Room for the archive's pages and not one more: the manifest, a file of its own, cannot get a page.
    dest = mount_tmpfs(tmp_path / "full", -(-archive_size // PAGE) * PAGE)

    run = backup(tmp_path / "p", dest)
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed" and entry["archive"] is None and entry["manifest"] is None
    [error] = entry["errors"]
    assert "write the manifest failed: No space left on device" in error, error
    assert "the archive and its temporary manifest were removed" in error
    assert files_under(dest) == []  # no archive without manifest, no .manifest.json.tmp-*, no .partial

    recovered = run_coord("recover", "--json")
    assert recovered.returncode == 0 and recovered.json["removed_partials"] == [], recovered.stdout


KILL_AFTER_RENAME = """
import os, signal, sys
import coord.publish as publish
rename = publish.rename_archive
def rename_then_die(partial, archive):
    rename(partial, archive)
    os.kill(os.getpid(), signal.SIGKILL)
publish.rename_archive = rename_then_die
from coord.cli import main
sys.argv[0] = "coord"
main()
"""


def test_a_kill_between_rename_and_manifest_is_completed_by_recover(docker_client, make_volume, tmp_path) -> None:
    volume = data_volume(docker_client, make_volume)
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: live\n")
    dest = tmp_path / "b"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_RENAME, "backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(dest)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    [archive] = [path for path in (dest / volume).iterdir() if path.name.endswith(".tar.zst")]
    assert not archive.with_name(archive.name + ".manifest.json").exists()  # the orphan the kill leaves

    recovered = run_coord("recover", "--json")
    assert recovered.returncode == 0, recovered.stdout
    [line] = recovered.json["restored"]
    assert line.startswith(f"published {archive} (coord pid ") and line.endswith("died after writing its manifest)")
    assert recovered.json["removed_partials"] == []
    assert files_under(dest) == [f"{volume}/{archive.name}", f"{volume}/{archive.name}.manifest.json"]
    verified = run_coord("verify", str(archive))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = run_coord("recover", "--json")
    assert again.json == {"ok": True, "restored": [], "removed_partials": [], "left_alone": [], "errors": []}


def sleeper(make_container, volume: str):
    return make_container("app", ["sleep", "3600"], {volume: "/data"})


def test_a_read_only_journal_is_an_error_and_nothing_is_paused(
    docker_client, make_volume, make_container, mount_tmpfs, tmp_path, isolated_state_dir
) -> None:
    volume = data_volume(docker_client, make_volume)
    container = sleeper(make_container, volume)
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: pause\n")
    mount_tmpfs(isolated_state_dir / "journal", PAGE, read_only=True)
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed"
    assert any(
        "could not pause containers: cannot write the journal entry" in e and "Read-only file system" in e
        for e in entry["errors"]
    ), entry["errors"]
    assert container_state(docker_client, container) == "running"
    assert not (tmp_path / "b").exists() or files_under(tmp_path / "b") == []


def test_a_journal_that_fills_up_while_paused_puts_the_containers_back_and_says_so(
    docker_client, make_volume, make_container, mount_tmpfs, tmp_path, isolated_state_dir
) -> None:
    volume = data_volume(docker_client, make_volume)
    container = sleeper(make_container, volume)
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: pause\n")
    journal = mount_tmpfs(isolated_state_dir / "journal", PAGE)  # the container's entry fits, the archive's not
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed"
    assert [action["action"] for action in entry["containers"]] == ["paused"]
    assert entry["containers"][0]["restored"] is True
    [error] = entry["errors"]
    assert error.startswith("nothing archived: cannot write the journal entry") and "No space left" in error
    assert container_state(docker_client, container) == "running"
    assert list(journal.iterdir()) == []  # no temporary entry left, the container's entry cleared
    assert files_under(tmp_path / "b") == []


def test_a_hung_unpause_is_bounded_and_reported(docker_client, make_volume, make_container, tmp_path) -> None:
    volume = data_volume(docker_client, make_volume)
    container = sleeper(make_container, volume)
    write_policy(tmp_path / "p", "data", f"volumes: [{volume}]\nstrategy: pause\nmax_downtime_s: 2\n")
    socket_path = Path(f"/tmp/coord-hang-{os.getpid()}.sock")
    socket_path.unlink(missing_ok=True)
    try:
        # The first unpause is never answered (a hung engine); the engine answers the retry.
        with FaultProxy(socket_path, r"^POST /v[\d.]+/containers/[^/]+/unpause ", 1, hang_s=600) as proxy:
            run = backup(tmp_path / "p", tmp_path / "b", env={"DOCKER_HOST": f"unix://{socket_path}"})
    finally:
        socket_path.unlink(missing_ok=True)
    assert run.returncode == 0, run.stderr
    assert len(proxy.failed) == 1
    assert sum("/unpause " in line for line in proxy.relayed) == 1
    [entry] = run.json["volumes"]
    assert entry["status"] == "warning" and entry["archive"]
    [action] = entry["containers"]
    assert action["restored"] is True
    # The hung call cost its own timeout, not the client's 60 s API timeout.
    assert UNPAUSE_TIMEOUT_S <= entry["downtime_s"] < API_TIMEOUT_S
    [error] = entry["errors"]
    assert error.startswith(f"downtime {entry['downtime_s']:.1f}s is longer than max_downtime_s 2: container ")
    assert container_state(docker_client, container) == "running"
