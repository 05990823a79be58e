"""The read side of targets without a server: refs, what a remote target's listing counts as complete, and
retention's decisions and deletion order there. The remote is an in-memory fake of coord's own transport
interface (targets/rclone.Rclone); the real servers are in tests/e2e/test_target_round_trip.py."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import IO

import pytest

from coord.errors import UsageError
from coord.policy import RetentionSettings
from coord.retention import plan_retention
from coord.targets.archives import (
    RcloneStore,
    Ref,
    StoreOptions,
    configured_stores,
    manifest_problem,
    parse_ref,
    remote_join,
    resolve_archive,
    selected_stores,
    store_for_latest,
)
from coord.targets.prune import prune_store_volume
from coord.targets.rclone import RemoteError, RemoteFile

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


class FakeRclone:
    """Files by full rclone path, in memory; records deletions in order."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.deleted: list[str] = []

    def list_files(self, path: str, *, with_hashes: bool = False) -> list[RemoteFile]:
        prefix = path.rstrip("/") + "/"
        return sorted(
            (
                RemoteFile(name=key[len(prefix) :], size=len(data), modified=NOW)
                for key, data in self.files.items()
                if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ),
            key=lambda item: item.name,
        )

    def list_dirs(self, path: str) -> list[str]:
        prefix = path if path.endswith(":") else path + "/"
        below = [key[len(prefix) :] for key in self.files if key.startswith(prefix)]
        return sorted({rest.split("/")[0] for rest in below if "/" in rest})

    def read_bytes(self, path: str) -> bytes:
        if path not in self.files:
            raise RemoteError(f"target t: {path}: no such file")
        return self.files[path]

    def delete(self, path: str) -> None:
        self.deleted.append(path)
        self.files.pop(path, None)

    @contextmanager
    def open_read(self, path: str) -> Iterator[IO[bytes]]:
        yield io.BufferedReader(io.BytesIO(self.files[path]))  # as rclone cat's stdout is


def put(
    fake: FakeRclone, volume: str, started: datetime, *, status: str = "ok", changes: dict[str, object] | None = None
) -> str:
    """An archive and its manifest on the fake remote `off:base`, as coord uploads them; `changes` alter the
    manifest. Returns the archive's name."""
    name = f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    content = f"{volume} {started}".encode()
    fake.files[f"off:base/{volume}/{name}"] = content
    manifest = {"volume": volume, "archive": name, "status": status, "started_at": started.isoformat()}
    manifest |= {"size": len(content), "sha256": "0" * 64, "verdict": "consistent", "encryption": None}
    fake.files[f"off:base/{volume}/{name}.manifest.json"] = json.dumps(manifest | (changes or {})).encode()
    return name


def store(fake: FakeRclone) -> RcloneStore:
    return RcloneStore("off", "off:base", fake)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("offsite:pgdata/pgdata-20261201T030000Z.tar.zst", Ref("offsite", "pgdata", "pgdata-20261201T030000Z.tar.zst")),
        ("local:v/f.tar.gz.gpg", Ref("local", "v", "f.tar.gz.gpg")),
        ("/backups/v/f.tar.zst", None),
        ("./x:v/f", None),
        ("offsite:pgdata", None),
        ("offsite:a/b/c", Ref("offsite", "b", "c", node="a")),  # three segments: a Swarm node's archive
        ("offsite:node1/pg_data/f.tar.zst", Ref("offsite", "pg_data", "f.tar.zst", node="node1")),
        ("offsite:a/b/c/d", None),
        ("offsite:.a/b/c", None),
        ("offsite:../b/c", None),
        ("offsite:_nodes/node1/b/c", None),  # the path on the target is not a ref: `offsite:node1/b/c` is
        ("offsite:a/_b/c", None),
        (":v/f", None),
        ("t:v/.coord-upload-f", None),
        ("t:../f", None),
    ],
)
def test_refs_parse_and_print_back(text: str, expected: Ref | None) -> None:
    assert parse_ref(text) == expected
    if expected is not None:
        assert str(expected) == text


def test_remote_paths_join_below_a_bucket_or_a_remote_root() -> None:
    assert remote_join("off:bucket", "v", "f") == "off:bucket/v/f"
    assert remote_join("off:", "v") == "off:v"


def test_a_listing_counts_only_archives_with_their_manifest_and_ignores_temporaries() -> None:
    fake = FakeRclone()
    newest = put(fake, "app", NOW - timedelta(hours=1))
    older = put(fake, "app", NOW - timedelta(days=1))
    fake.files["off:base/app/.coord-upload-app-x.tar.zst"] = b"half"
    fake.files["off:base/app/app-y.tar.zst.partial"] = b"half"
    fake.files["off:base/app/app-z.tar.zst"] = b"uploaded, manifest not yet"
    fake.files["off:base/app/app-gone.tar.zst.manifest.json"] = b"{}"
    listing = store(fake).list_volume("app", NOW)
    assert [item.ref.file for item in listing.archives] == [newest, older]
    assert [str(item.ref) for item in listing.archives] == [f"off:app/{newest}", f"off:app/{older}"]
    assert listing.warnings == []
    ignored = "\n".join(listing.ignored)
    for name in (".coord-upload-app-x.tar.zst", "app-y.tar.zst.partial", "app-z.tar.zst", "app-gone"):
        assert name in ignored
    chosen, _ = listing.latest()
    assert chosen is not None and chosen.ref.file == newest


def test_a_manifest_that_does_not_prove_its_archive_is_never_counted() -> None:
    fake = FakeRclone()
    good = put(fake, "app", NOW - timedelta(days=3))
    put(fake, "app", NOW - timedelta(days=2), changes={"size": 1})  # the upload landed short, or was replaced
    put(fake, "app", NOW - timedelta(days=1), changes={"volume": "other"})
    future = put(fake, "app", NOW + timedelta(days=1))
    listing = store(fake).list_volume("app", NOW)
    assert [item.ref.file for item in listing.archives] == [good]
    assert [item.ref.file for item, _ in listing.held] == [future]
    assert len(listing.mismatched) == 1 and "its manifest says 1" in listing.mismatched[0]
    assert any("for volume 'other'" in line for line in listing.warnings)


def test_manifest_problems_name_what_is_wrong() -> None:
    ref = Ref("off", "app", "a.tar.zst")
    document = {"archive": "a.tar.zst", "volume": "app", "started_at": NOW.isoformat(), "size": 5}
    assert manifest_problem(ref, document, 5) == (None, NOW, False)
    assert "names archive 'b'" in str(manifest_problem(ref, {**document, "archive": "b"}, 5).problem)
    assert "no usable 'started_at'" in str(manifest_problem(ref, {**document, "started_at": "yesterday"}, 5).problem)
    short = manifest_problem(ref, document, 6)
    assert short.started_at is None and short.differs and "is 6 bytes" in str(short.problem)


def test_remote_retention_makes_the_local_decisions_and_deletes_the_manifest_first() -> None:
    fake = FakeRclone()
    newest_failed = put(fake, "app", NOW - timedelta(hours=1), status="failed")
    newest_verified = put(fake, "app", NOW - timedelta(days=1))
    old = put(fake, "app", NOW - timedelta(days=2))
    listing = store(fake).list_volume("app", NOW)
    rules = RetentionSettings(keep_last=1)
    planned = plan_retention(listing.archives, rules, NOW)
    assert [item.ref.file for item, _ in planned.keep] == [newest_verified]
    assert {item.ref.file for item, _ in planned.delete} == {newest_failed, old}

    dry = prune_store_volume(store(fake), "app", rules, NOW, dry_run=True)
    assert fake.deleted == [] and len(dry.deleted) == 2 and dry.target == "off"
    done = prune_store_volume(store(fake), "app", rules, NOW)
    assert done.errors == []
    assert fake.deleted[:2] == [f"off:base/app/{newest_failed}.manifest.json", f"off:base/app/{newest_failed}"]
    assert sorted(fake.files) == [f"off:base/app/{newest_verified}", f"off:base/app/{newest_verified}.manifest.json"]


def test_the_newest_verified_archive_of_a_remote_volume_survives_any_rule() -> None:
    fake = FakeRclone()
    only = put(fake, "app", NOW - timedelta(days=400))
    done = prune_store_volume(store(fake), "app", RetentionSettings(keep_days=1), NOW)
    assert done.deleted == [] and fake.deleted == []
    assert [why for _, why in done.kept] == ["newest verified archive (always kept)"]
    assert f"off:base/app/{only}" in fake.files


def test_a_remote_ref_reads_only_a_complete_archive() -> None:
    fake = FakeRclone()
    name = put(fake, "app", NOW)
    fake.files["off:base/app/app-z.tar.zst"] = b"no manifest yet"
    location = store(fake).location(Ref("off", "app", name))
    assert location.describe() == f"off:app/{name}" and location.read_manifest()["archive"] == name
    with location.open() as stream:
        assert stream.read() == fake.files[f"off:base/app/{name}"]
    with pytest.raises(UsageError, match="has no manifest: not a complete archive"):
        store(fake).location(Ref("off", "app", "app-z.tar.zst"))
    with pytest.raises(UsageError, match=r"no archive nope\.tar\.zst"):
        store(fake).location(Ref("off", "app", "nope.tar.zst"))


def test_targets_come_from_defaults_and_dest(tmp_path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "_defaults.yaml").write_text('targets:\n  offsite: {rclone: "off:base"}\n  nas: {path: /nas}\n')
    options = StoreOptions(policies, dest=tmp_path / "dest")
    assert sorted(configured_stores(options)) == ["local", "nas", "offsite"]
    assert [s.name for s in selected_stores(StoreOptions(policies, names=("offsite",)))] == ["offsite"]
    with pytest.raises(UsageError, match="no target named 'ofsite' \\(did you mean 'offsite'\\?\\)"):
        selected_stores(StoreOptions(policies, names=("ofsite",)))
    with pytest.raises(UsageError, match="several are configured \\(nas, offsite\\): pass --target NAME"):
        store_for_latest(StoreOptions(policies))
    assert store_for_latest(options).name == "local"  # --dest alone: as before targets existed
    with pytest.raises(UsageError, match="not a ref to a configured target: no target named 'ofsite'"):
        resolve_archive("ofsite:app/a.tar.zst", options)
    (policies / "_defaults.yaml").write_text("targets:\n  local: {path: /elsewhere}\n")
    with pytest.raises(UsageError, match="local \\(/elsewhere\\)\\) disagree"):
        configured_stores(options)
