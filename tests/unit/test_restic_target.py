"""The restic target kind without a repository: its configuration, how restic's failures read, and which
snapshots make a complete archive (targets/restic.py, targets/archives.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coord.defaults import load_defaults
from coord.errors import PolicyError
from coord.targets import Target
from coord.targets.archives import restic_pairs
from coord.targets.config import ResticTargetConfig
from coord.targets.restic import Restic, Snapshot


def test_a_restic_target_with_its_password_file(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text(
        "targets:\n  repo: {restic: 'sftp:backup@host:/srv/coord', password_file: /run/secrets/restic}\n"
    )
    config = load_defaults(tmp_path).targets["repo"]
    assert config.resolved() == ResticTargetConfig("sftp:backup@host:/srv/coord", Path("/run/secrets/restic"))
    target = Target.of("repo", config)
    assert target.is_restic and not target.is_local
    assert target.describe() == "repo (restic sftp:backup@host:/srv/coord)"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{path: /b, password_file: /p}", "password_file: only a restic target (`restic:`) has a password"),
        ("{restic: 'rest:https://u:hunter2@host/'}", "carries a password"),
        ("{restic: /r, password_file: relative}", "'relative' is relative"),
    ],
)
def test_restic_target_mistakes_are_errors_with_the_line(tmp_path: Path, entry: str, expected: str) -> None:
    (tmp_path / "_defaults.yaml").write_text(f"targets:\n  repo: {entry}\n")
    with pytest.raises(PolicyError) as raised:
        load_defaults(tmp_path)
    assert "_defaults.yaml:2:" in str(raised.value) and expected in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_restic_failures_say_what_to_do_and_never_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("Sup3r-secret\n")
    restic = Restic("repo", "/srv/r", secret)
    wrong = restic.error("listing snapshots", 1, "Fatal: wrong password or no key found\n")
    assert wrong.message == (
        f"target repo: listing snapshots: wrong password or no key found (from password_file {secret})"
    )
    locked = restic.error("prune", 1, "Fatal: unable to create lock in backend: repository is already locked by PID 7")
    assert locked.locked and "coord did not break the lock" in locked.message
    missing = restic.error(
        "backup of x",
        1,
        "Fatal: unable to open config file: Stat: no such file\n"
        "Is there a repository at the following location?\n/srv/r",
    )
    assert "coord init-target repo" in missing.message
    full = restic.error("backup of x", 1, "Fatal: write /srv/r/data/ab: no space left on device")
    assert "full" in full.message
    assert "Sup3r-secret" not in restic.redact("echoed Sup3r-secret back")


def snapshot(id_: str, path: str, *tags: str) -> Snapshot:
    return Snapshot.of({"id": id_, "time": "2026-12-01T03:00:00.5Z", "paths": [path], "tags": list(tags)})


def test_an_archive_snapshot_is_complete_only_with_its_own_manifest_snapshot() -> None:
    archive = snapshot("a1b2c3d4" + "0" * 56, "/v-1.tar", "coord", "coord-archive", "coord-volume=v")
    orphan = snapshot("ffffffff" + "0" * 56, "/v-2.tar", "coord", "coord-archive", "coord-volume=v")
    manifest = snapshot("9" * 64, "/v-1.tar.manifest.json", "coord", "coord-manifest", "coord-of=a1b2c3d4")
    wrong_name = snapshot("8" * 64, "/v-9.tar.manifest.json", "coord", "coord-manifest", "coord-of=ffffffff")
    too_short = snapshot("7" * 64, "/v-2.tar.manifest.json", "coord", "coord-manifest", "coord-of=ff")
    pairs = restic_pairs([archive, orphan, manifest, wrong_name, too_short], "v")
    assert [(pair.archive.file, pair.manifest is not None) for pair in pairs] == [("v-1.tar", True), ("v-2.tar", False)]
    assert archive.time == datetime(2026, 12, 1, 3, 0, 0, 500000, tzinfo=UTC)
    assert restic_pairs([archive, manifest], "w") == []
