"""Issue 14, items 6 and 8 (round trip): for each of rclone's real servers (`rclone serve s3|sftp|webdav` on
loopback, tests/rclone_servers.py), through the `coord` command line: backup -> list -> verify -> restore gives a
byte-identical volume (content, owners, modes, links, mtimes), the listing ignores temporaries and archives without
manifest, and prune on the remote keeps the newest verified archive. One server per kind for the module."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker.errors
import pytest

from conftest import run_coord, volume_path, write_policy
from coord.targets.rclone import rclone_binary
from rclone_servers import KINDS, ServedRemote
from trees import differences, populate_tree, snapshot_tree

pytest_plugins = ["sharedfixtures"]  # state_dir
pytestmark = pytest.mark.docker

TARGET = "offsite"


@pytest.fixture
def restored_volume(docker_client, unique) -> Iterator[str]:
    """The name of a volume `coord restore` creates; removed at the end."""
    name = unique("restored")
    yield name
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.volumes.get(name).remove(force=True)


def rclone(remote: ServedRemote, *arguments: str) -> None:
    """The rclone command line, against the test server (its remote defined by environment variables)."""
    subprocess.run(
        [rclone_binary(), "--config", "/dev/null", *arguments],
        env={**os.environ, **remote.environment()},
        check=True,
        capture_output=True,
    )


def backup_to_target(policies: Path, tmp_path: Path, state_dir: Path, remote: ServedRemote, volume: str) -> str:
    """One backup of `volume` that lands on the target; the file name of its archive there."""
    dest = tmp_path / "dest"
    done = run_coord(
        "backup", "--policies-dir", str(policies), "--dest", str(dest), "--state-dir", str(state_dir), "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    archive = Path(done.json["volumes"][0]["archive"])
    for path in (archive, archive.with_name(archive.name + ".manifest.json")):
        rclone(remote, "copyto", str(path), f"{remote.path}/{volume}/{path.name}")
        path.unlink()
    return archive.name


@pytest.mark.parametrize("kind", KINDS)
def test_backup_list_verify_restore_prune_on_a_remote_target(
    kind: str,
    rclone_servers: Callable[[str], ServedRemote],
    tmp_path: Path,
    docker_client,
    make_volume,
    restored_volume: str,
    state_dir: Path,
) -> None:
    remote = rclone_servers(kind)
    environment = remote.environment()
    source = make_volume("src")
    populate_tree(volume_path(docker_client, source), big_bytes=200_000)
    policies = tmp_path / "policies"
    write_policy(policies, "app", f"volumes: [{source}]\nstrategy: live\nretention: {{keep_last: 1}}\n")
    (policies / "_defaults.yaml").write_text(f'targets:\n  {TARGET}: {{rclone: "{remote.path}"}}\n')
    common = ("--policies-dir", str(policies), "--state-dir", str(state_dir))

    def coord(*arguments: str):
        return run_coord(*arguments, *common, env=environment)

    older = backup_to_target(policies, tmp_path, state_dir, remote, source)
    expected = snapshot_tree(volume_path(docker_client, source))
    newest = backup_to_target(policies, tmp_path, state_dir, remote, source)
    assert newest != older
    # What an upload in progress (or a failed one) leaves: never listed, never latest.
    remote_dir = remote.local_root / source
    (remote_dir / f".coord-upload-{newest}").write_bytes(b"half an upload")
    (remote_dir / f"{source}-29990101T000000Z.tar.zst").write_bytes(b"uploaded, its manifest not yet")

    listed = coord("list", "--target", TARGET, "--volume", source, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [on_target] = listed.json["targets"]
    assert on_target["error"] is None
    assert [item["archive"] for item in on_target["archives"]] == [newest, older]
    ref = on_target["archives"][0]["ref"]
    assert ref == f"{TARGET}:{source}/{newest}" and on_target["archives"][0]["status"] == "ok"
    text = coord("list", "--target", TARGET)
    assert text.returncode == 0 and ref in text.stdout and ".coord-upload" not in text.stdout

    verified = coord("verify", ref)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK {ref}: sha256 matches the manifest")
    latest = coord("verify", "--latest", source, "--target", TARGET, "--json")
    assert latest.returncode == 0 and latest.json["archive"] == ref, latest.stdout + latest.stderr

    restored = coord("restore", ref, "--volume", restored_volume, "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.json["archive"] == ref
    assert differences(expected, snapshot_tree(volume_path(docker_client, restored_volume))) == []

    pruned = coord("prune", "--target", TARGET, "--json")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    [volume_result] = pruned.json["volumes"]
    assert volume_result["target"] == TARGET
    assert [item["archive"] for item in volume_result["deleted"]] == [f"{TARGET}:{source}/{older}"]
    assert sorted(path.name for path in remote_dir.iterdir()) == sorted(
        [newest, f"{newest}.manifest.json", f".coord-upload-{newest}", f"{source}-29990101T000000Z.tar.zst"]
    )
    assert json.loads((remote_dir / f"{newest}.manifest.json").read_text())["archive"] == newest
    assert remote.password not in listed.stdout + listed.stderr + restored.stdout + restored.stderr
