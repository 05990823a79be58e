"""Upload of one archive to an rclone target: coord's publish to a target vs a bare `rclone copyto` of the same file
to the same local server (issue 14, item 9).

    python3 bench/upload.py [--size 1G] [--kinds s3,sftp] [--repeat 3] [--out bench/out]

A file of `--size` random bytes (incompressible, as a compressed archive is) stands for an archive, with a small
manifest beside it. For each server kind a real rclone server (`rclone serve KIND`, tests/rclone_servers.py) runs on
loopback over a directory under `--out`, and each round times, on a fresh name:

    rclone    `rclone copyto FILE remote:...` (the binary coord runs, same flags as coord's)
    coord     coord.backup.upload.upload_published: journal, upload as .partial, check size and hash, rename,
              manifest uploaded and renamed, journal cleared (the md5/sha1 are given: coord computes them in the
              archive's own pass, timed by bench/run.py, not here)

Prints a markdown table of medians and the ratio coord/rclone, and the machine's load; numbers, never pass/fail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.rclone_servers import serve_remote  # noqa: E402

from coord.backup import upload  # noqa: E402
from coord.backup.upload import RemoteArchive, capabilities_of, upload_published  # noqa: E402
from coord.journal import Journal  # noqa: E402
from coord.results import TargetStatus  # noqa: E402
from coord.targets import Target  # noqa: E402
from coord.targets.rclone import RCLONE_FLAGS, rclone_binary  # noqa: E402

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def make_archive(directory: Path, size: int) -> tuple[Path, Path, dict[str, str]]:
    """A random file of `size` bytes, its manifest, and its md5/sha1."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "benchvol-20261201T000000Z.tar.zst"
    digests = {name: hashlib.new(name) for name in ("md5", "sha1")}
    if not archive.is_file() or archive.stat().st_size != size:
        with open(archive, "wb") as handle:
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 24))
                handle.write(chunk)
                left -= len(chunk)
    with open(archive, "rb") as handle:
        while chunk := handle.read(1 << 24):
            for digest in digests.values():
                digest.update(chunk)
    manifest = archive.with_name(archive.name + ".manifest.json")
    manifest.write_text(json.dumps({"archive": archive.name, "size": size}) + "\n")
    return archive, manifest, {name: digest.hexdigest() for name, digest in digests.items()}


def time_rclone(archive: Path, destination: str) -> float:
    started = time.perf_counter()
    subprocess.run([rclone_binary(), *RCLONE_FLAGS, "copyto", str(archive), destination], check=True)
    return time.perf_counter() - started


PHASES: dict[str, float] = {}


def stopwatch(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, adding the seconds each call takes to PHASES[name]."""

    def timed(*arguments: Any, **keywords: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*arguments, **keywords)
        finally:
            PHASES[name] = PHASES.get(name, 0.0) + time.perf_counter() - started

    return timed


# coord's steps, timed where upload_published calls them: the check of what landed (size + the backend's hash:
# S3 keeps an md5 in the object's metadata, SFTP runs md5sum/sha1sum over the file on the server) and the finish
# (rename of the temporary: a server-side copy and delete on S3, a rename on SFTP; then the manifest).
upload.check_landed = stopwatch("check", upload.check_landed)
upload.finish = stopwatch("rename+manifest", upload.finish)


def time_coord(archive: Path, manifest: Path, hashes: dict[str, str], target: Target, journal: Journal) -> float:
    """coord's upload as the backup does it: the target's capabilities asked (as once per run), then the upload."""
    PHASES.clear()
    started = time.perf_counter()
    remote = RemoteArchive(target, "benchvol", archive.name, direct=capabilities_of(target).atomic)
    result = upload_published(remote, archive, manifest, hashes, journal)
    elapsed = time.perf_counter() - started
    if result.status is not TargetStatus.OK:
        raise SystemExit(f"coord upload failed: {result.error}")
    PHASES["upload"] = elapsed - sum(PHASES.values())  # the temporary's upload, the journal, rclone's starts
    print("  coord: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in PHASES.items()), file=sys.stderr)
    return elapsed


def bench_kind(
    kind: str, archive: Path, manifest: Path, hashes: dict[str, str], out: Path, repeat: int
) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"rclone": [], "coord": [], "upload": [], "check": [], "rename+manifest": []}
    with serve_remote(kind, out / f"served-{kind}" / "root") as remote:
        os.environ.update(remote.environment())
        journal = Journal(out / "state")
        for round_number in range(repeat):
            for case in ("rclone", "coord"):  # alternated: the machine's load drifts
                base = remote.under(f"r{round_number}-{case}")
                if case == "rclone":
                    seconds = time_rclone(archive, f"{base}/benchvol/{archive.name}")
                else:
                    seconds = time_coord(archive, manifest, hashes, Target("bench", rclone_path=base), journal)
                    for phase in ("upload", "check", "rename+manifest"):
                        runs[phase].append(PHASES.get(phase, 0.0))
                runs[case].append(seconds)
                print(f"{kind} {case} round {round_number + 1}: {seconds:.2f} s, load {os.getloadavg()[0]:.2f}",
                      file=sys.stderr)
                subprocess.run([rclone_binary(), "purge", base], check=False, capture_output=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--kinds", default="s3,sftp")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "upload")
    options = parser.parse_args()
    size = parse_size(options.size)
    archive, manifest, hashes = make_archive(options.out / "archive", size)
    print(
        "| server | rclone copyto (median) | coord (median) | coord / rclone "
        "| coord: upload, check, rename+manifest (medians, s) | runs (s) |"
    )
    print("|---|---|---|---|---|---|")
    for kind in options.kinds.split(","):
        runs = bench_kind(kind, archive, manifest, hashes, options.out, options.repeat)
        rclone, coord = statistics.median(runs["rclone"]), statistics.median(runs["coord"])
        shown = "; ".join(f"{case} " + ", ".join(f"{s:.2f}" for s in runs[case]) for case in ("rclone", "coord"))
        phases = ", ".join(f"{statistics.median(runs[p]):.2f}" for p in ("upload", "check", "rename+manifest"))
        print(
            f"| `rclone serve {kind}` | {rclone:.2f} s ({size / rclone / 1e6:.0f} MB/s) | {coord:.2f} s "
            f"({size / coord / 1e6:.0f} MB/s) | {coord / rclone:.2f} | {phases} | {shown} |"
        )
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end, {size} bytes")


if __name__ == "__main__":
    main()
