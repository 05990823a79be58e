"""Issue 14, items 6 and 8 (round trip): for each of rclone's real servers (`rclone serve s3|sftp|webdav` on
loopback, tests/rclone_servers.py), through the `coord` command line: `coord backup` to the remote target only ->
list -> verify -> restore gives a byte-identical volume (content, owners, modes, links, mtimes; one kind
encrypted), nothing of the archive lands on local disk, the listing ignores temporaries and archives without
manifest, and prune on the remote keeps the newest verified archive. On one kind (the code is the same): the
backup's own retention on the remote, and a corrupted remote archive failing verify and restore. One server per
kind for the module."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import docker.errors
import pytest

from conftest import CoordRun, run_coord, volume_path, write_policy
from coord.targets.archives import parse_ref
from rclone_servers import KINDS, ServedRemote
from trees import differences, populate_tree, snapshot_tree

pytest_plugins = ["sharedfixtures"]  # state_dir, passphrase_file
pytestmark = pytest.mark.docker

TARGET = "offsite"


@pytest.fixture
def restored_volume(docker_client, unique) -> Iterator[str]:
    """The name of a volume `coord restore` creates; removed at the end."""
    name = unique("restored")
    yield name
    with contextlib.suppress(docker.errors.NotFound):
        docker_client.volumes.get(name).remove(force=True)


def backup_to_target(coord: Callable[..., CoordRun], volume: str) -> str:
    """One `coord backup` whose only target is the remote; the file name of the archive it put there."""
    done = coord("backup", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = done.json["volumes"]
    [landed] = result["targets"]
    assert landed["target"] == TARGET and landed["status"] == "ok" and landed["error"] is None, landed
    ref = parse_ref(landed["ref"])
    assert ref is not None and ref.volume == volume
    return ref.file


def local_archives(*directories: Path) -> list[Path]:
    """Archive files (or pieces of them) anywhere under `directories`."""
    return [path for directory in directories for path in directory.rglob("*") if ".tar." in path.name]


def check_backup_retention_and_corruption(
    coord: Callable[..., CoordRun], remote_dir: Path, source: str, leftovers: list[str], tmp_path: Path
) -> None:
    """A third backup: its own retention (keep_last 1) leaves only it on the remote. Then a byte of it changed
    on the remote (same size, so the listing still counts it): verify and restore read it whole and refuse it."""
    third = backup_to_target(coord, source)  # the backup's own retention, on the remote
    assert sorted(path.name for path in remote_dir.iterdir()) == sorted([third, f"{third}.manifest.json", *leftovers])
    assert json.loads((remote_dir / f"{third}.manifest.json").read_text())["archive"] == third

    stored = remote_dir / third
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    corrupt = coord("verify", "--latest", source)
    assert corrupt.returncode == 1 and corrupt.stdout.startswith(f"FAIL {TARGET}:{source}/{third}: sha256 mismatch")
    refused = coord("restore", "--latest", source, "--target-dir", str(tmp_path / "never"), "--dry-run")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"coord: error: cannot read {TARGET}:{source}/{third}: "), refused.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_backup_list_verify_restore_prune_on_a_remote_target(
    kind: str,
    rclone_servers: Callable[[str], ServedRemote],
    tmp_path: Path,
    docker_client,
    make_volume,
    restored_volume: str,
    state_dir: Path,
    passphrase_file: Path,
) -> None:
    remote = rclone_servers(kind)
    source = make_volume("src")
    populate_tree(volume_path(docker_client, source), big_bytes=200_000)
    expected = snapshot_tree(volume_path(docker_client, source))
    policies = tmp_path / "policies"
    # One kind encrypted (passphrase): decryption reads the remote stream as it reads a file.
    encrypt = f"encrypt: {{passphrase_file: {passphrase_file}}}\n" if kind == "webdav" else ""
    secret = ["--passphrase-file", str(passphrase_file)] if encrypt else []
    write_policy(policies, "app", f"volumes: [{source}]\nstrategy: live\n{encrypt}")
    (policies / "_defaults.yaml").write_text(f'targets:\n  {TARGET}: {{rclone: "{remote.path}"}}\n')
    common = ("--policies-dir", str(policies), "--state-dir", str(state_dir))
    environment = {**remote.environment(), "COORD_DEST": ""}

    def coord(*arguments: str) -> CoordRun:
        return run_coord(*arguments, *common, env=environment)

    older = backup_to_target(coord, source)
    newest = backup_to_target(coord, source)
    assert newest != older
    assert not local_archives(tmp_path, state_dir)  # nothing of them on local disk
    # What an upload in progress (or a failed one) leaves: never listed, never latest.
    remote_dir = remote.local_root / source
    leftovers = [f".coord-upload-{newest}", f"{newest}.partial", f"{source}-29990101T000000Z.tar.zst"]
    for name in leftovers:
        (remote_dir / name).write_bytes(b"an upload in progress, or one that failed")

    listed = coord("list", "--target", TARGET, "--volume", source, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [on_target] = listed.json["targets"]
    assert on_target["error"] is None
    assert [item["archive"] for item in on_target["archives"]] == [newest, older]
    ref = on_target["archives"][0]["ref"]
    assert ref == f"{TARGET}:{source}/{newest}" and on_target["archives"][0]["status"] == "ok"
    assert on_target["archives"][0]["encrypted"] is bool(encrypt)
    text = coord("list")
    assert text.returncode == 0 and ref in text.stdout and ".coord-upload" not in text.stdout

    verified = coord("verify", ref, *secret)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK {ref}: sha256 matches the manifest")
    latest = coord("verify", "--latest", source, "--json", *secret)  # the only target
    assert latest.returncode == 0 and latest.json["archive"] == ref, latest.stdout + latest.stderr

    restored = coord("restore", ref, "--volume", restored_volume, "--json", *secret)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.json["archive"] == ref
    assert differences(expected, snapshot_tree(volume_path(docker_client, restored_volume))) == []
    assert not local_archives(tmp_path, state_dir)  # streamed: no local copy was made to restore from

    write_policy(policies, "app", f"volumes: [{source}]\nstrategy: live\nretention: {{keep_last: 1}}\n{encrypt}")
    pruned = coord("prune", "--target", TARGET, "--json")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    [volume_result] = pruned.json["volumes"]
    assert volume_result["target"] == TARGET
    assert [item["archive"] for item in volume_result["deleted"]] == [f"{TARGET}:{source}/{older}"]
    assert [item["archive"] for item in volume_result["kept"]] == [ref]
    assert sorted(path.name for path in remote_dir.iterdir()) == sorted([newest, f"{newest}.manifest.json", *leftovers])

    if kind == "s3":  # the same code for every kind: once is enough for the suite's time
        check_backup_retention_and_corruption(coord, remote_dir, source, leftovers, tmp_path)
    everything = listed.stdout + listed.stderr + text.stdout + text.stderr + restored.stdout + restored.stderr
    assert remote.password not in everything
    assert passphrase_file.read_text().splitlines()[0] not in everything + verified.stdout + verified.stderr


def test_a_target_that_cannot_be_listed_fails_the_listing_but_not_the_others(
    rclone_servers: Callable[[str], ServedRemote], tmp_path: Path, state_dir: Path
) -> None:
    remote = rclone_servers("webdav")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "_defaults.yaml").write_text(f'targets:\n  {TARGET}: {{rclone: "{remote.path}"}}\n')
    remote.stop()  # the server is gone (the module's fixture starts it again for the next test)
    listed = run_coord(
        "list",
        "--json",
        "--policies-dir",
        str(policies),
        "--dest",
        str(tmp_path / "dest"),
        "--state-dir",
        str(state_dir),
        env=remote.environment(),
    )
    assert listed.returncode == 1, listed.stdout + listed.stderr
    by_name = {item["target"]: item for item in listed.json["targets"]}
    assert by_name["local"]["error"] is None and by_name["local"]["archives"] == []
    assert by_name[TARGET]["error"].startswith(f"target {TARGET}: ")
    assert remote.password not in listed.stdout + listed.stderr
