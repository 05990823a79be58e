"""backup/upload.py against real rclone servers: atomic-upload backends get the final name directly, a taken name
is never replaced, and `coord recover` removes what a dead upload left (journal entry REMOTE_PUBLISH)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.fakes import FakeEngine
from tests.rclone_servers import ServedRemote

from coord.backup.upload import RemoteArchive, capabilities_of, record_upload, upload_published
from coord.journal import Journal
from coord.manifest import MANIFEST_SUFFIX
from coord.recovery import recover
from coord.results import TargetStatus
from coord.targets import Target
from coord.targets.rclone import Rclone

Servers = Callable[[str], ServedRemote]


def use(remote: ServedRemote, monkeypatch: pytest.MonkeyPatch) -> Target:
    for name, value in remote.environment().items():
        monkeypatch.setenv(name, value)
    return Target("offsite", rclone_path=remote.under("up"))


def an_archive(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    archive = tmp_path / "v-20261201T000000Z.tar.zst"
    archive.write_bytes(b"not really zstd, but bytes all the same\n" * 1000)
    manifest = archive.with_name(archive.name + MANIFEST_SUFFIX)
    manifest.write_text('{"archive": "v-20261201T000000Z.tar.zst"}\n')
    return archive, manifest, {name: hashlib.new(name, archive.read_bytes()).hexdigest() for name in ("md5", "sha1")}


@pytest.mark.parametrize(("kind", "atomic"), [("s3", True), ("sftp", False), ("webdav", False)])
def test_object_stores_upload_to_the_final_name_others_through_a_temporary(
    kind: str, atomic: bool, tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers(kind)
    target = use(remote, monkeypatch)
    assert capabilities_of(target).atomic is atomic
    archive, manifest, hashes = an_archive(tmp_path)
    uploaded = RemoteArchive(target, f"v-{kind}", archive.name, direct=atomic)
    assert uploaded.temporary == (uploaded.location if atomic else uploaded.location + ".partial")
    result = upload_published(uploaded, archive, manifest, hashes, Journal(tmp_path / "state"))
    assert (result.status, result.ref) == (TargetStatus.OK, f"offsite:v-{kind}/{archive.name}")
    landed = remote.local_root / "up" / f"v-{kind}"
    assert sorted(path.name for path in landed.iterdir()) == [archive.name, archive.name + MANIFEST_SUFFIX]
    assert Journal(tmp_path / "state").entries() == []


@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_a_taken_name_is_never_replaced(
    kind: str, tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers(kind)
    target = use(remote, monkeypatch)
    archive, manifest, hashes = an_archive(tmp_path)
    Rclone("offsite").write_bytes(b"someone else's", target.location("taken", archive.name))
    uploaded = RemoteArchive(target, "taken", archive.name, direct=capabilities_of(target).atomic)
    result = upload_published(uploaded, archive, manifest, hashes, Journal(tmp_path / "state"))
    assert result.status is TargetStatus.FAILED and result.error is not None
    assert result.error.endswith("already exists; not replaced")
    landed = remote.local_root / "up" / "taken"
    assert sorted(path.name for path in landed.iterdir()) == [archive.name]
    assert (landed / archive.name).read_bytes() == b"someone else's"


@pytest.mark.parametrize("kind", ["s3", "webdav"])
def test_recover_removes_what_a_dead_upload_left_and_keeps_a_complete_archive(
    kind: str, tmp_path: Path, rclone_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = rclone_servers(kind)
    target = use(remote, monkeypatch)
    journal = Journal(tmp_path / "state")
    rclone = Rclone("offsite")
    dead = RemoteArchive(target, "dead", "v-1.tar.zst", direct=capabilities_of(target).atomic)
    record_upload(journal, dead)  # the run died after the upload, before the manifest
    rclone.write_bytes(b"archive bytes", dead.temporary)
    done = RemoteArchive(target, "dead", "v-2.tar.zst")
    record_upload(journal, done)  # died after the manifest landed, before clearing its entry
    rclone.write_bytes(b"archive bytes", done.location)
    rclone.write_bytes(b"{}", done.manifest)

    report = recover(journal, FakeEngine(tmp_path / "volumes"))
    assert report.errors == []
    assert report.removed_partials == [f"target offsite: {dead.temporary}"]
    assert sorted(path.name for path in (remote.local_root / "up" / "dead").iterdir()) == [
        "v-2.tar.zst",
        "v-2.tar.zst" + MANIFEST_SUFFIX,
    ]
    assert journal.entries() == []
