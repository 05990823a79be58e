"""End to end on the real Docker engine, through the `coord` command line as an operator runs it:

backup (plain, passphrase, public key) -> verify -> restore into a new volume, byte-identical; the plain
gpg/zstd/tar pipeline gives the same tree; restore into a volume in use stops and restarts its containers;
a corrupt byte fails verify; a full destination fails cleanly; retention deletes only after a good run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
import pytest

from archives import plain_settings
from conftest import REPO, container_state, run_coord, volume_path, wait_for, write_policy
from coord.archive import create_archive
from coord.policy import Compression
from trees import differences, populate_tree, snapshot_tree

if TYPE_CHECKING:
    from sharedfixtures import ThrowawayKey

pytest_plugins = ["sharedfixtures"]  # throwaway_key, state_dir, passphrase_file
pytestmark = pytest.mark.docker


@pytest.fixture
def new_volume_name(docker_client, unique) -> Iterator[Callable[[str], str]]:
    """Names for volumes coord itself creates (restore); removed at the end."""
    names: list[str] = []

    def name(stem: str) -> str:
        names.append(unique(stem))
        return names[-1]

    yield name
    for created in names:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(created).remove(force=True)


def policy_text(volume: str, strategy: str = "live", encrypt: str = "", extra: str = "") -> str:
    return (
        f"volumes: [{volume}]\nstrategy: {strategy}\n{encrypt}\n"
        "restore: {allow_devices: true, allow_fifos: true}\n" + extra
    )


def encrypt_key(kind: str, key: ThrowawayKey, passphrase_file: Path) -> tuple[str, list[str]]:
    """The policy's encrypt: line, and the options that decrypt (for verify and restore)."""
    if kind == "passphrase":
        return f"encrypt: {{passphrase_file: {passphrase_file}}}", ["--passphrase-file", str(passphrase_file)]
    if kind == "public-key":
        return f"encrypt: {{recipient_key_file: {key.public_key_file}}}", ["--gpg-home", str(key.home)]
    return "", []


def backup(policies: Path, dest: Path, state_dir: Path, *, verbose: bool = False) -> dict:
    result = run_coord(
        *(["--verbose"] if verbose else []),
        "backup",
        "--policies-dir",
        str(policies),
        "--dest",
        str(dest),
        "--state-dir",
        str(state_dir),
        "--json",
    )
    document = json.loads(result.stdout)
    document["returncode"], document["stderr"] = result.returncode, result.stderr
    return document


@pytest.mark.parametrize(
    ("strategy", "encryption", "compression"),
    [
        ("live", "none", "zstd"),
        ("live", "passphrase", "zstd"),
        ("live", "public-key", "zstd"),
        ("live", "public-key", "gzip"),
        ("pause", "passphrase", "zstd"),
        ("stop", "public-key", "zstd"),
    ],
)
def test_round_trip_is_byte_identical_through_coord_and_through_plain_tools(
    tmp_path: Path,
    docker_client,
    make_volume,
    make_container,
    new_volume_name,
    state_dir: Path,
    throwaway_key: ThrowawayKey,
    passphrase_file: Path,
    strategy: str,
    encryption: str,
    compression: str,
) -> None:
    source = make_volume("src")
    populate_tree(volume_path(docker_client, source), fifo=True, device=True)
    make_container("user", ["sleep", "3600"], volumes={source: "/data"})
    encrypt, secret = encrypt_key(encryption, throwaway_key, passphrase_file)
    policies = tmp_path / "policies"
    write_policy(policies, "app", policy_text(source, strategy, encrypt, f"compression: {compression}\n"))
    dest = tmp_path / "dest"

    done = backup(policies, dest, state_dir, verbose=True)
    assert done["returncode"] == 0, done
    [volume] = done["volumes"]
    archive = Path(volume["archive"])
    expected = snapshot_tree(volume_path(docker_client, source))
    suffix = ".tar.zst" if compression == "zstd" else ".tar.gz"
    assert archive.name.endswith(suffix + (".gpg" if encryption != "none" else ""))
    manifest_text = Path(volume["manifest"]).read_text()
    manifest = json.loads(manifest_text)
    passphrase = passphrase_file.read_text().splitlines()[0]
    assert passphrase not in manifest_text and passphrase not in done["stderr"]
    assert (manifest["encryption"] or {}).get("method", "none") == encryption
    if encryption == "public-key":
        assert manifest["encryption"]["recipients"] == [throwaway_key.fingerprint]
    assert sorted(p.name for p in archive.parent.iterdir()) == sorted([archive.name, archive.name + ".manifest.json"])

    verified = run_coord("verify", "--latest", source, "--dest", str(dest), "--state-dir", str(state_dir), *secret)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK ") and f"{manifest['entries']} entries" in verified.stdout

    target = new_volume_name("restored")
    restored = run_coord(
        "restore",
        str(archive),
        "--volume",
        target,
        "--state-dir",
        str(state_dir),
        "--policies-dir",
        str(policies),
        "--json",
        *secret,
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.json["created"] is True and restored.json["entries"] == manifest["entries"]
    assert differences(expected, snapshot_tree(volume_path(docker_client, target))) == []

    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    decrypt = ""
    if encryption == "passphrase":
        decrypt = (
            f"gpg --batch --homedir {state_dir}/gnupg --pinentry-mode loopback "
            f"--passphrase-file {passphrase_file} -d '{archive}' | "
        )
    elif encryption == "public-key":
        decrypt = f"gpg --batch --homedir {throwaway_key.home} -d '{archive}' | "
    decompress = "zstd -d" if compression == "zstd" else "gzip -d"
    source_stream = f"{decompress} < '{archive}'" if not decrypt else decrypt + decompress
    subprocess.run(
        f"set -o pipefail; {source_stream} | tar -x --numeric-owner -C {by_hand}",
        shell=True,
        executable="/bin/bash",
        check=True,
        capture_output=True,
    )
    assert differences(expected, snapshot_tree(by_hand)) == []


def test_restore_into_a_volume_in_use_stops_and_restarts_its_containers(
    tmp_path: Path, docker_client, make_volume, make_container, state_dir: Path
) -> None:
    volume = make_volume("inuse")
    root = volume_path(docker_client, volume)
    populate_tree(root)
    policies = tmp_path / "policies"
    write_policy(policies, "app", policy_text(volume))
    done = backup(policies, tmp_path / "dest", state_dir)
    assert done["returncode"] == 0, done
    archive = done["volumes"][0]["archive"]
    expected = snapshot_tree(root)

    running = make_container("running", ["sleep", "3600"], volumes={volume: "/data"})
    paused = make_container("paused", ["sleep", "3600"], volumes={volume: "/data"})
    stopped = make_container("stopped", ["true"], volumes={volume: "/data"})
    paused.pause()
    stopped.wait()
    running.reload()
    started_before = running.attrs["State"]["StartedAt"]
    (root / "data" / "file.txt").unlink()
    (root / "written-after-the-backup").write_text("must go with --force")
    changed = snapshot_tree(root)
    # `sleep` as PID 1 ignores SIGTERM: a short timeout keeps the test from waiting 30 s per container.
    common = ["--volume", volume, "--policies-dir", str(policies), "--json", "--stop-timeout", "1"]

    refused = run_coord("restore", archive, *common)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    assert snapshot_tree(root) == changed
    assert [container_state(docker_client, c) for c in (running, paused)] == ["running", "paused"]

    dry = run_coord("restore", archive, *common, "--force", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert {c["container"]: c["action"] for c in dry.json["containers"]} == {
        running.name: "would stop",
        paused.name: "would stop",
        stopped.name: "left-alone",
    }
    assert snapshot_tree(root) == changed

    forced = run_coord("restore", archive, *common, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    actions = {c["container"]: (c["action"], c["prior_state"], c["restored"]) for c in forced.json["containers"]}
    assert actions == {
        running.name: ("stopped", "running", True),
        paused.name: ("stopped", "paused", True),
        stopped.name: ("left-alone", "exited", True),
    }
    assert differences(expected, snapshot_tree(root)) == []
    assert container_state(docker_client, running) == "running"
    assert container_state(docker_client, paused) == "paused"
    assert container_state(docker_client, stopped) == "exited"
    assert running.attrs["State"]["StartedAt"] != started_before  # it really was stopped and started again
    assert running.exec_run(["cat", "/data/data/file.txt"]).output == b"postgres would keep its heap here\n"


def test_verify_catches_one_corrupt_byte(
    tmp_path: Path, docker_client, make_volume, state_dir: Path, passphrase_file: Path
) -> None:
    plain, encrypted = make_volume("plain"), make_volume("enc")
    for volume in (plain, encrypted):
        (volume_path(docker_client, volume) / "file").write_bytes(os.urandom(300_000))
    policies = tmp_path / "policies"
    write_policy(policies, "plain", policy_text(plain))
    write_policy(policies, "enc", policy_text(encrypted, encrypt=f"encrypt: {{passphrase_file: {passphrase_file}}}"))
    dest = tmp_path / "dest"
    done = backup(policies, dest, state_dir)
    assert done["returncode"] == 0, done

    for volume in done["volumes"]:
        archive = Path(volume["archive"])
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0x01
        archive.write_bytes(bytes(data))
        result = run_coord(
            "verify", str(archive), "--passphrase-file", str(passphrase_file), "--state-dir", str(state_dir), "--json"
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.json["ok"] is False
        assert result.json["verdict"].startswith(f"FAIL {archive}: sha256 mismatch")
        text = run_coord(
            "verify",
            "--latest",
            volume["volume"],
            "--dest",
            str(dest),
            "--passphrase-file",
            str(passphrase_file),
            "--state-dir",
            str(state_dir),
        )
        assert text.returncode == 1 and text.stdout.startswith("FAIL ") and len(text.stdout.splitlines()) == 1


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: the destination that fills up."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.mark.parametrize("encryption", ["none", "public-key"])
def test_a_full_destination_fails_cleanly_and_keeps_the_earlier_archive(
    tmp_path: Path,
    docker_client,
    make_volume,
    state_dir: Path,
    throwaway_key: ThrowawayKey,
    passphrase_file: Path,
    small_filesystem: Path,
    encryption: str,
) -> None:
    volume = make_volume("full")
    root = volume_path(docker_client, volume)
    (root / "small").write_text("fits\n")
    encrypt, _ = encrypt_key(encryption, throwaway_key, passphrase_file)
    policies = tmp_path / "policies"
    # keep_last 1: a successful second run WOULD delete the first archive; a failed one must not.
    write_policy(policies, "app", policy_text(volume, encrypt=encrypt, extra="retention: {keep_last: 1}\n"))
    first = backup(policies, small_filesystem, state_dir)
    assert first["returncode"] == 0, first
    kept = sorted(p.name for p in (small_filesystem / volume).iterdir())

    (root / "big").write_bytes(os.urandom(6_000_000))  # incompressible, three times the file system
    second = backup(policies, small_filesystem, state_dir)
    assert second["returncode"] == 1
    [result] = second["volumes"]
    assert result["status"] == "failed" and result["archive"] is None
    assert "No space left on device" in " ".join(result["errors"]), result["errors"]
    assert sorted(p.name for p in (small_filesystem / volume).iterdir()) == kept  # no .partial, nothing deleted


def test_retention_after_backups_and_never_after_a_failed_run(
    tmp_path: Path, docker_client, make_volume, state_dir: Path, passphrase_file: Path
) -> None:
    volume = make_volume("kept")
    (volume_path(docker_client, volume) / "f").write_text("x")
    policies = tmp_path / "policies"
    write_policy(policies, "app", policy_text(volume, extra="retention: {keep_last: 2}\n"))
    dest = tmp_path / "dest"
    archives = []
    for _ in range(3):
        done = backup(policies, dest, state_dir)
        assert done["returncode"] == 0, done
        archives.append(done["volumes"][0]["archive"])
    assert done["volumes"][0]["pruned"] == [archives[0]]
    remaining = sorted(p.name for p in (dest / volume).iterdir())
    assert remaining == sorted(n for a in archives[1:] for n in (Path(a).name, Path(a).name + ".manifest.json"))

    passphrase_file.write_text("")  # the next run fails (empty passphrase) and must delete nothing
    write_policy(
        policies,
        "app",
        policy_text(
            volume, encrypt=f"encrypt: {{passphrase_file: {passphrase_file}}}", extra="retention: {keep_last: 1}\n"
        ),
    )
    failed = backup(policies, dest, state_dir)
    assert failed["returncode"] == 1 and "first line is empty" in " ".join(failed["volumes"][0]["errors"])
    assert sorted(p.name for p in (dest / volume).iterdir()) == remaining


def test_a_malicious_archive_never_creates_the_volume(tmp_path: Path, docker_client, new_volume_name) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as writer:
        link = tarfile.TarInfo("./etc")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        writer.addfile(link)
        payload = tarfile.TarInfo("./etc/coord-test-pwned")
        payload.size = 5
        writer.addfile(payload, io.BytesIO(b"pwned"))
    archive = tmp_path / "evil.tar.zst"
    archive.write_bytes(
        subprocess.run(["zstd", "-q", "-c"], input=buffer.getvalue(), capture_output=True, check=True).stdout
    )
    target = new_volume_name("evil")
    result = run_coord("restore", str(archive), "--volume", target, "--policies-dir", str(tmp_path / "none"))
    assert result.returncode == 1 and "refusing to restore" in result.stderr
    assert "etc/coord-test-pwned: lies below the symlink etc" in result.stderr
    assert not Path("/etc/coord-test-pwned").exists()
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(target)


def test_sigterm_during_restore_keeps_the_old_content_and_restarts_containers(
    tmp_path: Path, docker_client, make_volume, make_container
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for index in range(8):
        (big / f"part-{index}").write_bytes(os.urandom(16_000_000))
    archive = tmp_path / "big.tar.zst"
    outcome = create_archive(big, archive, plain_settings(Compression.ZSTD))
    assert not outcome.critical
    volume = make_volume("term")
    root = volume_path(docker_client, volume)
    (root / "old").write_text("still here after the interrupted restore\n")
    before = snapshot_tree(root)
    running = make_container("running", ["sleep", "3600"], volumes={volume: "/data"})

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coord",
            "restore",
            str(archive),
            "--volume",
            volume,
            "--force",
            "--stop-timeout",
            "1",
            "--policies-dir",
            str(tmp_path / "none"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    wait_for(
        lambda: any(p.name.startswith(".coord-restore-") for p in root.iterdir()) or process.poll() is not None,
        timeout=60,
        what="the restore to start extracting",
    )
    assert process.poll() is None, "the restore ended before it could be interrupted: make the archive larger"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert snapshot_tree(root) == before  # staging removed, old content untouched
    assert container_state(docker_client, running) == "running"


def test_attributes_survive_coord_backup_then_coord_restore_and_the_plain_pipeline(
    tmp_path: Path, docker_client, make_volume, new_volume_name
) -> None:
    """Issue 11, finding 8, end to end: what coord's own archive step writes (pax, xattrs, ACLs, holes, ns mtimes)
    is what `coord restore` and the documented plain pipeline give back, links included."""
    from trees import populate_attributes, populate_links

    volume = make_volume("attributes")
    populate_attributes(volume_path(docker_client, volume))
    populate_links(volume_path(docker_client, volume))
    expected = snapshot_tree(volume_path(docker_client, volume), attributes=True)
    write_policy(tmp_path / "p", "app", policy_text(volume))
    backup = run_coord("backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"), "--json")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    [entry] = backup.json["volumes"]
    assert (entry["status"], entry["verdict"]) == ("ok", "consistent")

    restored = new_volume_name("attributes-restored")
    restore = run_coord("restore", entry["archive"], "--volume", restored, "--policies-dir", str(tmp_path / "p"))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "not restored" not in restore.stdout
    assert differences(expected, snapshot_tree(volume_path(docker_client, restored), attributes=True)) == []

    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(
        f"set -o pipefail; zstd -dc '{entry['archive']}' | "
        f"tar -x --xattrs --xattrs-include='*' --acls --numeric-owner -C '{by_tar}'",
        shell=True,
        executable="/bin/bash",
        check=True,
    )
    assert differences(expected, snapshot_tree(by_tar, attributes=True)) == []


@pytest.mark.parametrize("encryption", ["passphrase", "public-key"])
def test_verify_without_the_key_says_only_that(
    tmp_path: Path,
    docker_client,
    make_volume,
    state_dir: Path,
    throwaway_key: ThrowawayKey,
    passphrase_file: Path,
    encryption: str,
) -> None:
    source = make_volume("keyless")
    (volume_path(docker_client, source) / "data").write_text("rows\n")
    encrypt, _ = encrypt_key(encryption, throwaway_key, passphrase_file)
    write_policy(tmp_path / "p", "app", policy_text(source, "live", encrypt))
    assert backup(tmp_path / "p", tmp_path / "dest", state_dir)["returncode"] == 0
    home = tmp_path / "home"
    home.mkdir()
    verified = run_coord(
        "verify",
        "--latest",
        source,
        "--dest",
        str(tmp_path / "dest"),
        "--state-dir",
        str(state_dir),
        "--json",
        env={"HOME": str(home), "GNUPGHOME": ""},
    )
    assert verified.returncode == 1
    [problem] = verified.json["problems"]  # the cause, not the mismatches that follow from not reading it
    assert problem.startswith("cannot decrypt") or "--passphrase-file" in problem, problem
    assert list(home.iterdir()) == []  # no ~/.gnupg made: coord writes state only under --state-dir
