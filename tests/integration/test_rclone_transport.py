"""The rclone transport against real servers on loopback (rclone serve s3|sftp|webdav): list, write and read,
stream upload and read, rename, delete, hash types, and the errors an operator sees (wrong password, server down),
which name the target and never the secret."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.rclone_servers import KINDS, ServedRemote

from coord.targets.rclone import Rclone, RemoteError


@pytest.fixture(params=KINDS)
def served(request: pytest.FixtureRequest, rclone_servers: Callable[[str], ServedRemote]) -> Iterator[ServedRemote]:
    """One server of each kind, its remote defined by RCLONE_CONFIG_* variables for the test."""
    remote = rclone_servers(request.param)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in remote.environment().items():
            patch.setenv(name, value)
        yield remote


def join(remote: ServedRemote, *parts: str) -> str:
    base = remote.path
    return base + ("" if base.endswith(":") else "/") + "/".join(parts)


def test_write_list_read_move_delete(served: ServedRemote, request: pytest.FixtureRequest) -> None:
    rclone = Rclone("offsite")
    directory = join(served, f"vol-{request.node.callspec.id}")
    rclone.write_bytes(b'{"manifest": 1}', f"{directory}/a.json")
    assert rclone.read_bytes(f"{directory}/a.json") == b'{"manifest": 1}'
    assert (served.local_root / f"vol-{request.node.callspec.id}" / "a.json").read_bytes() == b'{"manifest": 1}'
    listed = rclone.list_files(directory)
    assert [(item.name, item.size) for item in listed] == [("a.json", 15)]
    assert listed[0].modified.tzinfo is not None
    assert f"vol-{request.node.callspec.id}" in rclone.list_dirs(served.path)

    rclone.move(f"{directory}/a.json", f"{directory}/b.json")
    assert [item.name for item in rclone.list_files(directory)] == ["b.json"]
    rclone.delete(f"{directory}/b.json")
    rclone.delete(f"{directory}/b.json")  # already gone: not an error
    assert rclone.list_files(directory) == []


def test_a_missing_directory_lists_empty(served: ServedRemote) -> None:
    rclone = Rclone("offsite")
    assert rclone.list_files(join(served, "no-such-volume")) == []
    assert rclone.list_dirs(join(served, "no-such-volume")) == []


def test_stream_upload_and_read_back_with_the_hashes_the_backend_offers(served: ServedRemote) -> None:
    rclone = Rclone("offsite")
    data = os.urandom(3 << 20)
    path = join(served, "streamed", "archive.tar.zst")
    rclone.upload_stream(io.BytesIO(data), path)
    with rclone.open_read(path) as stream:
        assert stream.read() == data
    offered = rclone.hash_types(path)
    expected_offers = {"s3": ["md5"], "sftp": ["md5", "sha1"], "webdav": []}[served.kind]
    assert offered == expected_offers
    stat = rclone.stat(path, with_hashes=True)
    assert stat is not None and stat.size == len(data)
    for name in offered:
        if name in stat.hashes:  # s3 keeps an md5 for a streamed upload only when it could compute it
            assert stat.hashes[name] == hashlib.new(name, data).hexdigest()
    rclone.delete(path)


def test_open_read_of_a_missing_file_raises_naming_the_target(served: ServedRemote) -> None:
    rclone = Rclone("offsite")
    with pytest.raises(RemoteError) as raised, rclone.open_read(join(served, "nothing-here.tar.zst")) as stream:
        stream.read()
    assert raised.value.message.startswith("target offsite: reading ")


def test_a_wrong_password_is_a_clear_error_without_the_secret(served: ServedRemote) -> None:
    wrong = served.environment(**served.wrong_password())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in wrong.items():
            patch.setenv(name, value)
        with pytest.raises(RemoteError) as raised:
            Rclone("offsite").write_bytes(b"x", join(served, "denied.json"))
    message = raised.value.message
    assert message.startswith("target offsite: writing ")
    assert any(word in message for word in ("401", "403", "unable to authenticate", "SignatureDoesNotMatch"))
    assert served.password not in message
    assert wrong[f"RCLONE_CONFIG_{served.name.upper()}_{next(iter(served.wrong_password())).upper()}"] not in message
    assert not raised.value.transient


@pytest.mark.parametrize("kind", ["sftp", "webdav"])  # s3 too, but its SDK backs off ~10 s a try: not worth the time
def test_a_server_that_is_down_fails_after_bounded_retries(
    kind: str, rclone_servers: Callable[[str], ServedRemote], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = rclone_servers(kind)
    for name, value in served.environment().items():
        monkeypatch.setenv(name, value)
    served.stop()
    try:
        with pytest.raises(RemoteError) as raised:
            Rclone("offsite").read_bytes(join(served, "x.json"))
        assert raised.value.transient  # connection refused: retried, then reported
        assert "connection refused" in raised.value.message
        assert raised.value.message.startswith("target offsite: reading ")
    finally:
        rclone_servers(served.kind)  # started again for the next test


def test_a_config_file_works_like_the_environment(
    served: ServedRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in served.environment():
        monkeypatch.delenv(name)
    config = served.write_config(tmp_path / "rclone.conf")
    rclone = Rclone("offsite", config_file=config)
    rclone.write_bytes(b"via config", join(served, "conf", "c.json"))
    assert rclone.read_bytes(join(served, "conf", "c.json")) == b"via config"
    with pytest.raises(RemoteError):
        Rclone("offsite").read_bytes(join(served, "conf", "c.json"))  # without it the remote is unknown
