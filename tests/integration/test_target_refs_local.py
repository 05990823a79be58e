"""Refs on a local target (--dest is the target `local`), through the `coord` command line, on a real archive:
`coord list` prints the ref of each complete archive, and `coord verify` / `coord restore` take that ref or
`--latest VOLUME --target local` and give back the exact tree; an archive without manifest is never listed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from archives import plain_settings
from conftest import run_coord
from coord.archive import create_archive
from coord.policy import Compression
from trees import differences, snapshot_tree

pytest_plugins = ["sharedfixtures"]  # source, state_dir


def publish_archive(source: Path, dest: Path, volume: str, started: datetime) -> Path:
    """An archive of `source` with its manifest under `dest/volume`, as a backup publishes it."""
    directory = dest / volume
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / f"{volume}-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    partial = archive.with_name(archive.name + ".partial")
    outcome = create_archive(source, partial, plain_settings(Compression.ZSTD))
    assert not outcome.critical, outcome.critical
    partial.rename(archive)
    manifest = {
        "volume": volume,
        "archive": archive.name,
        "status": "ok",
        "verdict": "consistent",
        "started_at": started.isoformat(),
        "compression": "zstd",
        "encryption": None,
        "size": outcome.size,
        "sha256": outcome.sha256,
        "stream_sha256": outcome.sha256,
        "entries": outcome.entries,
        "entries_digest": outcome.entries_digest,
    }
    archive.with_name(archive.name + ".manifest.json").write_text(json.dumps(manifest))
    return archive


def test_list_verify_and_restore_by_ref_on_the_local_target(tmp_path: Path, source: Path, state_dir: Path) -> None:
    dest = tmp_path / "dest"
    archive = publish_archive(source, dest, "app", datetime(2026, 11, 30, 3, 0, tzinfo=UTC))
    (dest / "app" / "app-20261201T030000Z.tar.zst").write_bytes(b"no manifest: not complete")
    common = ("--dest", str(dest), "--state-dir", str(state_dir), "--policies-dir", str(tmp_path / "none"))

    listed = run_coord("list", "--json", *common)
    assert listed.returncode == 0, listed.stderr
    [local] = listed.json["targets"]
    assert local["target"] == "local" and local["where"] == str(dest)
    [item] = local["archives"]
    ref = f"local:app/{archive.name}"
    assert item["ref"] == ref and item["status"] == "ok" and item["encrypted"] is False
    assert item["size"] == archive.stat().st_size
    text = run_coord("list", *common)
    assert text.returncode == 0 and ref in text.stdout and "app-20261201T030000Z" not in text.stdout

    verified = run_coord("verify", ref, *common)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK {archive}: sha256 matches the manifest")
    by_latest = run_coord("verify", "--latest", "app", "--target", "local", *common)
    assert by_latest.returncode == 0 and by_latest.stdout == verified.stdout

    restored = run_coord("restore", ref, "--target-dir", str(tmp_path / "by-ref"), *common)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert differences(snapshot_tree(source), snapshot_tree(tmp_path / "by-ref")) == []
    latest = run_coord("restore", "--latest", "app", "--target-dir", str(tmp_path / "by-latest"), *common)
    assert latest.returncode == 0, latest.stdout + latest.stderr
    assert differences(snapshot_tree(source), snapshot_tree(tmp_path / "by-latest")) == []


def test_refs_that_name_nothing_complete_are_usage_errors(tmp_path: Path, state_dir: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "app").mkdir(parents=True)
    (dest / "app" / "app-1.tar.zst").write_bytes(b"no manifest")
    common = ("--dest", str(dest), "--state-dir", str(state_dir), "--policies-dir", str(tmp_path / "none"))
    incomplete = run_coord("verify", "local:app/app-1.tar.zst", *common)
    assert incomplete.returncode == 2
    assert "app-1.tar.zst has no manifest: it is not a complete archive" in incomplete.stderr
    unknown = run_coord("restore", "lokal:app/app-1.tar.zst", "--target-dir", str(tmp_path / "t"), *common)
    assert unknown.returncode == 2
    assert "no target named 'lokal' (did you mean 'local'?); targets: local" in unknown.stderr
    assert not (tmp_path / "t").exists()
    empty = run_coord("list", "--dest", str(tmp_path / "empty"), "--state-dir", str(state_dir))
    assert empty.returncode == 0 and "no complete archive yet" in empty.stdout
    nothing = run_coord("list", "--state-dir", str(state_dir), "--policies-dir", str(tmp_path / "none"))
    assert nothing.returncode == 2 and "no target: pass --dest DIR" in nothing.stderr


def test_latest_with_nothing_verified_fails_and_latest_reads_one_target(tmp_path: Path, state_dir: Path) -> None:
    dest, policies = tmp_path / "dest", tmp_path / "policies"
    policies.mkdir()
    (policies / "_defaults.yaml").write_text(f"targets:\n  nas: {{path: {tmp_path / 'nas'}}}\n")
    common = ("--state-dir", str(state_dir), "--policies-dir", str(policies))

    verified = run_coord("verify", "--latest", "app", "--dest", str(dest), *common)
    assert verified.returncode == 1
    assert verified.stdout == f"FAIL {dest}/app: no verified archive of volume app in {dest}\n"
    restored = run_coord("restore", "--latest", "app", "--target", "nas", "--target-dir", str(tmp_path / "t"), *common)
    assert restored.returncode == 1 and f"no verified archive of volume app in {tmp_path / 'nas'}" in restored.stderr
    assert not (tmp_path / "t").exists()

    (policies / "_defaults.yaml").write_text(
        f"targets:\n  nas: {{path: {tmp_path / 'nas'}}}\n  other: {{path: {tmp_path / 'other'}}}\n"
    )
    several = run_coord("verify", "--latest", "app", *common)
    assert several.returncode == 2 and "several are configured (nas, other): pass --target NAME" in several.stderr
    misplaced = run_coord("verify", str(tmp_path), "--target", "nas", *common)
    assert misplaced.returncode == 2 and "--target goes with --latest" in misplaced.stderr
