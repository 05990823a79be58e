"""Day 1 and day 2 of a ClickHouse-shaped volume: bytes added and wall time, restic target vs a zstd archive.

    python3 bench/restic.py --size 2G --files 50000 --change 0.02

1. Writes the deterministic ClickHouse-shaped tree (bench/datagen.py) as volume `ch` under a work directory.
2. Day 1: `coord backup` of the volume to a restic target (a repository on local disk: coord's uncompressed tar
   stream into `restic backup --stdin`), and to a local target (a .tar.zst archive, zstd -3); and, for item 2 of
   the issue, `restic backup DIR` of the directory itself (restic's own file walk, for comparison).
3. The "day": `--change` of the parts are merged away, and as many new parts (new bytes, same shape) appear.
4. Day 2: the same three again (the directory backup with restic's parent snapshot and `--ignore-ctime`).

Bytes added: the growth of the repository directory (`du`: packs, index, snapshots) for restic, the archive file
for zstd. coord runs in-process with tests/fakes.py's engine standing in for Docker (the volume has no container:
the strategy is `live`); tar, zstd and restic are the real ones. Prints a JSON summary and a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src"), str(REPO / "bench")]

from datagen import ContentSource, format_size, parse_size, write_tree  # noqa: E402
from tests.fakes import FakeEngine  # noqa: E402

from coord.docker_ops import DockerControl  # noqa: E402

VOLUME = "ch"


def directory_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def coord_backup(work: Path, policies: Path) -> tuple[float, dict[str, Any]]:
    from typer.testing import CliRunner

    from coord.cli import app

    arguments = ["backup", "--json", "--policies-dir", str(policies), "--state-dir", str(work / "state")]
    arguments += ["--volumes-root", str(work / "volumes")]
    started = time.monotonic()
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    elapsed = time.monotonic() - started
    document = json.loads(result.stdout)
    volume = document["volumes"][0]
    if result.exit_code != 0:
        raise SystemExit(f"coord backup failed: {volume['errors']}")
    return elapsed, volume


def policies_for(work: Path, name: str, target: dict[str, str]) -> Path:
    policies = work / f"policies-{name}"
    policies.mkdir()
    (policies / "ch.yaml").write_text(f"volumes: [{VOLUME}]\nstrategy: live\n")
    (policies / "_defaults.yaml").write_text(json.dumps({"targets": {name: target}}))
    return policies


def restic_environment(repository: Path, password: Path) -> dict[str, str]:
    return {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD_FILE": str(password)}


def restic_directory_backup(source: Path, repository: Path, password: Path) -> float:
    """restic's own walk of the directory (item 2's alternative): a stable path, its parent snapshot found by
    path, --ignore-ctime."""
    started = time.monotonic()
    subprocess.run(
        ["restic", "backup", "--quiet", "--ignore-ctime", "--host", "bench", "."],
        cwd=source,
        env=restic_environment(repository, password),
        check=True,
    )
    return time.monotonic() - started


def change_parts(root: Path, fraction: float, seed: int) -> tuple[int, int, int]:
    """Merge away `fraction` of the parts and write as many new ones of the same sizes (new bytes). Returns
    (parts in all, parts replaced, bytes written)."""
    parts = sorted(path for path in root.glob("store/*/*/*") if path.is_dir())
    rng = random.Random(seed)
    chosen = rng.sample(parts, max(1, round(len(parts) * fraction)))
    content = ContentSource(seed + 1)
    written = 0
    for number, part in enumerate(chosen):
        new = part.parent / f"{part.name}_day2_{number}"
        new.mkdir()
        for file in sorted(part.iterdir()):
            data = content.mixed(file.stat().st_size)
            (new / file.name).write_bytes(data)
            written += len(data)
        shutil.rmtree(part)
    return len(parts), len(chosen), written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="2G")
    parser.add_argument("--files", type=int, default=50000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", type=float, default=0.02, help="fraction of the parts replaced on day 2")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    options = parser.parse_args()
    work = Path(options.work or tempfile.mkdtemp(prefix="coord-bench-restic-"))
    source = work / "volumes" / VOLUME
    source.mkdir(parents=True)
    engine = FakeEngine(work / "volumes")
    engine.volumes[VOLUME] = source
    DockerControl.connect = classmethod(lambda cls: engine)  # type: ignore[method-assign,assignment]
    summary = write_tree(str(source), parse_size(options.size), options.files, options.seed)
    password = work / "password"
    password.write_text("bench-password\n")
    repository, direct = work / "restic-repo", work / "restic-direct"
    for path in (repository, direct):
        subprocess.run(["restic", "init", "--quiet"], env=restic_environment(path, password), check=True)
    restic_policies = policies_for(work, "repo", {"restic": str(repository), "password_file": str(password)})
    zstd_policies = policies_for(work, "local", {"path": str(work / "archives")})
    rows: dict[str, Any] = {"tree_bytes": directory_bytes(source), "tree": dataclasses.asdict(summary)}
    for day in (1, 2):
        if day == 2:
            rows["parts"], rows["replaced"], rows["replaced_bytes"] = change_parts(source, options.change, options.seed)
            time.sleep(1.1)  # a distinct archive name
        before = directory_bytes(repository)
        seconds, volume = coord_backup(work, restic_policies)
        added = directory_bytes(repository) - before
        rows[f"day{day}_restic"] = {"seconds": seconds, "added": added, "stream": volume["size"]}
        archives_before = directory_bytes(work / "archives") if (work / "archives").exists() else 0
        seconds, volume = coord_backup(work, zstd_policies)
        rows[f"day{day}_zstd"] = {"seconds": seconds, "added": directory_bytes(work / "archives") - archives_before}
        before = directory_bytes(direct)
        seconds = restic_directory_backup(source, direct, password)
        rows[f"day{day}_restic_dir"] = {"seconds": seconds, "added": directory_bytes(direct) - before}
    print(json.dumps(rows, indent=2, default=str))
    print("\n| | day 1 added | day 1 time | day 2 added | day 2 time | day 2 / day 1 |\n|---|---|---|---|---|---|")
    labels = {"restic": "coord -> restic (tar stream)", "zstd": "coord -> .tar.zst", "restic_dir": "restic backup DIR"}
    for key, label in labels.items():
        one, two = rows[f"day1_{key}"], rows[f"day2_{key}"]
        print(
            f"| {label} | {format_size(one['added'])} | {one['seconds']:.1f} s | {format_size(two['added'])} | "
            f"{two['seconds']:.1f} s | {two['added'] / one['added']:.1%} |"
        )
    print(f"\nwork directory: {work} (remove it when done)")


if __name__ == "__main__":
    main()
