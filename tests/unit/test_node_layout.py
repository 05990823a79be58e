"""A Swarm node's namespace on shared targets (`<root>/_nodes/<node>/<volume>/`; on a restic target, the
snapshots whose host is the node): where a run writes, what refs name, what each store lists, retention's reach.
Local stores on a temporary directory, the remote on an in-memory fake of coord's own transport interface, restic
snapshots as `restic snapshots --json` gives them."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

from tests.unit.test_target_archives import NOW, FakeRclone

from coord.policy import RetentionSettings
from coord.targets import Target, volume_parts
from coord.targets.archives import LocalStore, RcloneStore, Ref, ResticStore, parse_ref, restic_pairs
from coord.targets.prune import prune_store_volume
from coord.targets.restic import Snapshot

VOLUME = "coord-fleet_data"


def test_a_swarm_nodes_target_writes_under_nodes_and_names_the_node_in_its_refs(tmp_path: Path) -> None:
    flat = Target("offsite", rclone_path="offsite:coord")
    on_node = flat.for_node("node1")
    assert flat.volume_location(VOLUME, "f.tar.zst") == f"offsite:coord/{VOLUME}/f.tar.zst"
    assert on_node.volume_location(VOLUME, "f.tar.zst") == f"offsite:coord/_nodes/node1/{VOLUME}/f.tar.zst"
    assert (flat.ref(VOLUME, "f"), on_node.ref(VOLUME, "f")) == (f"offsite:{VOLUME}/f", f"offsite:node1/{VOLUME}/f")
    assert (flat.where(VOLUME), on_node.where(VOLUME)) == (f"offsite:{VOLUME}/", f"offsite:node1/{VOLUME}/")
    local = Target("local", local_path=tmp_path).for_node("node1")
    assert local.volume_directory(VOLUME) == tmp_path / "_nodes" / "node1" / VOLUME
    assert local.archive_root == tmp_path / "_nodes" / "node1"
    assert Target("local", local_path=tmp_path).archive_root == tmp_path
    assert volume_parts(VOLUME, None) == (VOLUME,)
    assert parse_ref(on_node.ref(VOLUME, "f")) == Ref("offsite", VOLUME, "f", node="node1")


def local_archive(directory: Path, volume: str, started: datetime, node: str) -> str:
    """A complete local archive (content and manifest agree) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    content = f"{node} {started}".encode()
    (directory / name).write_bytes(content)
    manifest = {"volume": volume, "archive": name, "status": "ok", "started_at": started.isoformat(), "node": node}
    manifest |= {"size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "verdict": "consistent"}
    (directory / f"{name}.manifest.json").write_text(json.dumps(manifest))
    return name


def test_a_local_store_reads_one_namespace_and_retention_never_reaches_another_nodes(tmp_path: Path) -> None:
    node1_dir, node2_dir = tmp_path / "_nodes/node1" / VOLUME, tmp_path / "_nodes/node2" / VOLUME
    mine = [local_archive(node1_dir, VOLUME, NOW - timedelta(days=d), "node1") for d in (1, 2, 3)]
    theirs = [local_archive(node2_dir, VOLUME, NOW - timedelta(hours=h), "node2") for h in (1, 2)]
    old_flat = local_archive(tmp_path / VOLUME, VOLUME, NOW - timedelta(days=30), "node1")
    (tmp_path / "_runs").mkdir()  # another helper's run records: never a volume
    flat, node1 = LocalStore("local", tmp_path), LocalStore("local", tmp_path, node="node1")
    assert flat.volumes() == [VOLUME] and node1.volumes() == [VOLUME]
    assert flat.nodes() == ["node1", "node2"]
    assert [item.ref.file for item in node1.list_volume(VOLUME, NOW).archives] == mine
    refs = {str(item.ref) for item in node1.list_volume(VOLUME, NOW).archives}
    assert refs == {f"local:node1/{VOLUME}/{name}" for name in mine}
    latest, _ = node1.list_volume(VOLUME, NOW).latest()
    assert latest is not None and latest.ref.file == mine[0]  # not node2's newer ones
    assert [item.ref.file for item in flat.list_volume(VOLUME, NOW).archives] == [old_flat]
    other, _ = node1.in_namespace("node2").list_volume(VOLUME, NOW).latest()
    assert other is not None and other.ref.file == theirs[0]
    # a flat ref still reads an old flat archive on a node's store; a node's ref reads that node's
    assert node1.location(Ref("local", VOLUME, old_flat)).describe() == str(tmp_path / VOLUME / old_flat)
    assert node1.location(Ref("local", VOLUME, theirs[1], "node2")).describe() == str(node2_dir / theirs[1])

    pruned = prune_store_volume(node1, VOLUME, RetentionSettings(keep_last=1), NOW)
    assert sorted(Path(path).name for path, _ in pruned.deleted) == sorted(mine[1:]), pruned
    assert sorted(p.name for p in node2_dir.glob("*.zst")) == sorted(theirs)
    assert (tmp_path / VOLUME / old_flat).is_file()  # the flat layout is not this node's to prune


def remote_archive(fake: FakeRclone, directory: str, volume: str, started: datetime) -> str:
    name = f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    fake.files[f"{directory}/{name}"] = b"data"
    manifest = {"volume": volume, "archive": name, "status": "ok", "started_at": started.isoformat(), "size": 4}
    fake.files[f"{directory}/{name}.manifest.json"] = json.dumps(manifest).encode()
    return name


def test_a_remote_store_reads_one_namespace_and_prunes_only_its_own() -> None:
    fake = FakeRclone()
    mine = [remote_archive(fake, f"off:base/_nodes/node1/{VOLUME}", VOLUME, NOW - timedelta(days=d)) for d in (1, 2)]
    theirs = remote_archive(fake, f"off:base/_nodes/node2/{VOLUME}", VOLUME, NOW - timedelta(hours=1))
    old_flat = remote_archive(fake, f"off:base/{VOLUME}", VOLUME, NOW - timedelta(days=30))
    fake.files["off:base/_runs/run.json"] = b"{}"
    node1 = RcloneStore("off", "off:base", fake, node="node1")  # type: ignore[arg-type]
    flat = node1.in_namespace(None)
    assert flat.volumes() == [VOLUME] and node1.volumes() == [VOLUME] and flat.nodes() == ["node1", "node2"]
    assert node1.describe() == "off:base/_nodes/node1"
    assert [str(item.ref) for item in node1.list_volume(VOLUME, NOW).archives] == [
        f"off:node1/{VOLUME}/{name}" for name in mine
    ]
    assert [item.ref.file for item in flat.list_volume(VOLUME, NOW).archives] == [old_flat]
    assert node1.location(Ref("off", VOLUME, theirs, "node2")).describe() == f"off:node2/{VOLUME}/{theirs}"
    pruned = prune_store_volume(node1, VOLUME, RetentionSettings(keep_last=1), NOW)
    assert [path for path, _ in pruned.deleted] == [f"off:node1/{VOLUME}/{mine[1]}"]
    assert fake.deleted == [
        f"off:base/_nodes/node1/{VOLUME}/{mine[1]}.manifest.json",
        f"off:base/_nodes/node1/{VOLUME}/{mine[1]}",
    ]


def snapshot(id_: str, path: str, host: str, *tags: str) -> dict[str, object]:
    return {"id": id_, "time": "2026-12-01T03:00:00Z", "paths": [path], "tags": ["coord", *tags], "hostname": host}


class FakeRestic:
    repository = "/srv/restic"

    def __init__(self, entries: list[dict[str, object]]) -> None:
        self.entries = entries

    def snapshots(self, *tags: str) -> list[Snapshot]:
        return [Snapshot.of(entry) for entry in self.entries]


def test_a_restic_store_reads_the_snapshots_of_its_nodes_host() -> None:
    entries = []
    for index, host in enumerate(("node1", "node2", "coord")):
        archive_id = str(index) * 8 + "0" * 56
        archive = f"/{VOLUME}-{host}.tar"
        entries.append(snapshot(archive_id, archive, host, "coord-archive", f"coord-volume={VOLUME}"))
        figures = ["coord-status=ok", "coord-size=10", "coord-started=2026-12-01T03:00:00+00:00"]
        of = [f"coord-volume={VOLUME}", f"coord-of={archive_id[:8]}", *figures]
        entries.append(snapshot(str(index) * 64, f"{archive}.manifest.json", host, "coord-manifest", *of))
    node1 = ResticStore("repo", FakeRestic(entries), node="node1")  # type: ignore[arg-type]
    assert node1.nodes() == ["node1", "node2"]  # `coord` is the flat layout's host
    listed = [str(item.ref) for item in node1.list_volume(VOLUME, NOW).archives]
    assert listed == [f"repo:node1/{VOLUME}/{VOLUME}-node1.tar"]
    flat = node1.in_namespace(None)
    assert [str(item.ref) for item in flat.list_volume(VOLUME, NOW).archives] == [f"repo:{VOLUME}/{VOLUME}-coord.tar"]
    assert [pair.archive.host for pair in restic_pairs(node1.snapshots("node2"), VOLUME)] == ["node2"]
    assert node1.describe() == "restic /srv/restic (host node1)"


def test_the_fleet_report_reads_every_nodes_namespace_and_the_flat_layout_counting_each_archive_once(
    tmp_path: Path,
) -> None:
    from coord.fleet import fleet_report
    from coord.report import Period

    shared, copy = tmp_path / "shared", tmp_path / "copy"  # copy: node2's archive on a second target too
    for node, hours in (("node1", 1), ("node2", 2)):
        local_archive(shared / "_nodes" / node / VOLUME, VOLUME, NOW - timedelta(hours=hours), node)
    local_archive(shared / VOLUME, VOLUME, NOW - timedelta(hours=3), "node1")  # written before the namespaces
    for item in (shared / "_nodes" / "node2" / VOLUME).iterdir():
        (copy / "_nodes" / "node2" / VOLUME).mkdir(parents=True, exist_ok=True)
        (copy / "_nodes" / "node2" / VOLUME / item.name).write_bytes(item.read_bytes())
    stores = [LocalStore("local", shared, node="node1"), LocalStore("copy", copy)]  # whatever namespace they read
    report = fleet_report(stores, Period(NOW - timedelta(days=1), NOW, "today"), NOW)
    assert report.errors == []
    assert {(row.node, row.volume): row.archives for row in report.rows} == {("node1", VOLUME): 2, ("node2", VOLUME): 1}
    assert {row.node: sorted(row.targets) for row in report.rows} == {"node1": ["local"], "node2": ["copy", "local"]}
