"""A container that plants links at every name coord may use in its volume's root, for every pid, cannot make
coord (root on the host) change a host file, nor stop a later run (issue 11, findings 1 and 2).

The volume is read two ways: at its Docker Mountpoint (host mode: the snapshot goes into Docker's root-only
volume directory beside `_data`), and through `--volumes-root` pointing at a bind mount of it (the sidecar's
layout: the snapshot goes inside the volume root, among the planted links).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import container_state, run_coord, volume_path, wait_for, write_policy
from tests.e2e.test_strategies import archive_members, journal_files

from coord.journal import SNAPSHOT, Journal

pytestmark = pytest.mark.docker

PID_MAX = int(Path("/proc/sys/kernel/pid_max").read_text())
# Every name the current and earlier coord used at a volume root, per pid, and the fixed names of the probe.
# The per-pid links are made here, in the volume's directory on the host (`plant_per_pid_links`): a shell loop
# in the container forks once per link and busybox tar takes 100 s for the 98,000 links, while the links, the
# same names and targets as the loop in issue 11, are the same objects whoever creates them. The container
# plants the fixed names itself.
PLANT = r"""
for name in .coord-snapshot- .coord-snapshot-probe .reflink-probe .reflink-probe-clone; do
  ln -s "$HOST_FILE" "/data/$name"
done
ln -s "$HOST_DIR" /data/.coord-restore-planted
echo real data > /data/real.txt
mkdir -p /data/sub && echo nested > /data/sub/file.txt
touch /data/planted-done
exec sleep 600
"""
PLANTED_PER_PID = 3
PLANTED_FIXED = 4


def digest_tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256, and every directory: what must not change."""
    found = {}
    for directory, _, files in os.walk(root):
        found[directory] = "dir"
        for name in files:
            path = Path(directory) / name
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def plant_per_pid_links(volume_root: Path, host_file: Path, host_dir: Path) -> None:
    """Symbolic links at every per-pid name coord used, for every pid up to pid_max, in `volume_root`."""
    for pid in range(1, PID_MAX + 1):
        for name, target in (
            (f".coord-snapshot-probe-{pid}", host_file),
            (f".coord-snapshot-probe-{pid}.clone", host_file),
            (f".coord-snapshot-{pid}", host_dir),
        ):
            os.symlink(target, volume_root / name)


def planted_links(mount: Path) -> dict[str, str]:
    return {entry.name: os.readlink(entry.path) for entry in os.scandir(mount) if entry.is_symlink()}


@pytest.fixture
def hostile(docker_client, make_volume, make_container, tmp_path):
    """(volume, container, host mount, host file and dir the links point at, what they hold, the links)."""
    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    (host / "secret").write_text("root:$6$not-to-be-overwritten\n")
    (host / "dir" / "kept.txt").write_text("a host directory's file\n")
    volume = make_volume("hostile")
    mount = volume_path(docker_client, volume)
    plant_per_pid_links(mount, host / "secret", host / "dir")
    container = make_container(
        "planter",
        ["sh", "-c", PLANT],
        {volume: "/data"},
        environment={"HOST_FILE": str(host / "secret"), "HOST_DIR": str(host / "dir")},
    )
    wait_for(lambda: (mount / "planted-done").exists(), timeout=300, what="the links to be planted")
    links = planted_links(mount)
    assert len(links) == PLANTED_PER_PID * PID_MAX + PLANTED_FIXED + 1
    return volume, container, mount, host, digest_tree(host), links


@pytest.fixture
def sidecar_layout(tmp_path):
    """Bind mounts of volumes at <root>/<volume>, as a sidecar sees them; unmounted afterwards."""
    root = tmp_path / "volumes"
    mounted: list[Path] = []

    def mount(volume: str, source: Path) -> Path:
        target = root / volume
        target.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        mounted.append(target)
        return root

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=True)


def coord_backup(policies: Path, dest: Path, volumes_root: Path | None) -> dict:
    extra = ["--volumes-root", str(volumes_root)] if volumes_root else []
    run = run_coord("backup", "--policies-dir", str(policies), "--dest", str(dest), "--json", *extra)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stdout + run.stderr
    return run.json


@pytest.mark.parametrize("layout", ["host", "sidecar"])
def test_links_planted_for_every_pid_change_nothing_outside_and_block_nothing(
    hostile, sidecar_layout, docker_client, tmp_path, isolated_state_dir, layout
) -> None:
    volume, container, mount, host, host_before, links = hostile
    volumes_root = sidecar_layout(volume, mount) if layout == "sidecar" else None
    for strategy in ("snapshot", "pause", "live"):
        write_policy(tmp_path / "p", "hostile", f"volumes: [{volume}]\nstrategy: {strategy}\n")
        result = coord_backup(tmp_path / "p", tmp_path / "b", volumes_root)
        [entry] = result["volumes"]
        # live reads a quiet volume: ok or warning by its verdict; the others are ok
        assert entry["status"] in (("ok", "warning") if strategy == "live" else ("ok",)), (strategy, entry)
        members = archive_members(Path(entry["archive"]))
        assert "./real.txt" in members and "./sub/file.txt" in members
        assert not [m for m in members if m.startswith("./.coord-")], strategy  # coord's names never archived
        assert digest_tree(host) == host_before, strategy
        assert planted_links(mount) == links, strategy
        assert container_state(docker_client, container) == "running"
        assert journal_files(isolated_state_dir) == []
        if strategy == "snapshot":
            assert json.loads(Path(entry["manifest"]).read_text())["snapshot"]["method"] == "hardlink"
    # no snapshot directory left, wherever it was made
    assert not [p for p in mount.parent.glob(".coord-snapshot-*")]
    assert [name for name in os.listdir(mount) if name.startswith(".coord-") and name not in links] == []
    recovered = run_coord("recover", "--json")
    assert recovered.returncode == 0 and recovered.json["errors"] == [], recovered.stdout + recovered.stderr


def test_a_journal_entry_naming_a_planted_link_is_left_alone_and_blocks_nothing(
    hostile, tmp_path, isolated_state_dir
) -> None:
    """The journal of a run that died (or of the coord before this fix, whose snapshot names were pid-based)
    names a snapshot directory; a container has put a link there. Recovery removes nothing, follows nothing,
    says so, and clears the entry: the next runs are not blocked."""
    volume, _, mount, host, host_before, links = hostile
    journal = Journal(isolated_state_dir)
    journal.record(SNAPSHOT, str(mount / ".coord-snapshot-4242"), SNAPSHOT, volume)  # no identity: an old entry
    host_dir = os.stat(host / "dir")
    journal.record(  # an identity, but the link's target's: never followed to it
        SNAPSHOT, str(mount / ".coord-snapshot-4243"), SNAPSHOT, volume, f"{host_dir.st_dev}:{host_dir.st_ino}"
    )
    recovered = run_coord("recover", "--json")
    assert "Traceback" not in recovered.stderr, recovered.stderr
    assert recovered.returncode == 0, recovered.stdout
    assert recovered.json["errors"] == [] and recovered.json["removed_partials"] == []
    assert len(recovered.json["left_alone"]) == 2
    assert all("symbolic link" in line and "left alone" in line for line in recovered.json["left_alone"])
    assert journal_files(isolated_state_dir) == []
    assert digest_tree(host) == host_before and planted_links(mount) == links
    again = run_coord("recover", "--json")
    assert again.returncode == 0 and again.json["left_alone"] == []
    write_policy(tmp_path / "p", "hostile", f"volumes: [{volume}]\nstrategy: snapshot\n")
    [entry] = coord_backup(tmp_path / "p", tmp_path / "b", None)["volumes"]
    assert entry["status"] == "ok"


def test_a_volume_with_an_unfinished_restore_is_refused(docker_client, make_volume, make_container, tmp_path):
    volume = make_volume("half-restored")
    mount = volume_path(docker_client, volume)
    (mount / "data.txt").write_text("x")
    staging = mount / ".coord-restore-0123456789ab"
    staging.mkdir()
    (staging / "data.txt").write_text("the restore's copy")
    make_container("db", ["sleep", "600"], {volume: "/data"})
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: live\n")
    run = run_coord("backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"), "--json")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed" and entry["archive"] is None
    [error] = entry["errors"]
    assert "unfinished restore" in error and str(staging) in error and "coord recover" in error
    assert not list((tmp_path / "b").rglob("*.tar.*"))
    staging.rename(mount / "restored-by-hand")  # the operator decided; the next backup goes through
    run = run_coord("backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"), "--json")
    assert run.returncode == 0, run.stdout
