"""One `coord backup` run in-process, with the time of each step and coord's own CPU and peak RSS.

Not a timed benchmark run (bench/run.py times the real CLI): this one wraps a few of coord's functions with a
stopwatch to say where the time goes. It needs coord importable (.venv/bin/python) and root. Prints one JSON
object on stdout:

    imports_s      importing what `coord backup` imports (typer, rich, pydantic, docker SDK, coord)
    plan_s         loading the policies, asking Docker for the volumes and the volume's mount point
    archive_s      tar | zstd | coord (sha256 + write) until the compressor's output ends (archive._pump; in
                   coords with encryption archive.write_file, which includes the fsync)
    fsync_s        fsync of the archive (archive._sync; absent when write_file does it)
    consistency_s  re-listing every archived directory for the verdict (archive.assess_consistency)
    read_back_s    checking the archive after writing (runner.read_back, or WrittenArchiveCheck.read_back):
                   before the in-line check sha256, zstd -d | tar --list and comparing; since, the file's sha256
                   (the listing runs during archive_s)
    other_s        the rest of the run: process waits, publishing (rename, fsync dir), manifest
    total_s        imports to end
    self_cpu_s     CPU used by coord's own Python process (all threads)
    children_cpu_s CPU used by its children (tar, zstd, and the read-back's zstd -d and tar)
    self_peak_rss_kb  peak RSS of coord's Python process alone (VmHWM; not ru_maxrss, which Linux starts at
                   the parent's RSS when the parent forked us)
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import time
from pathlib import Path

_started = time.perf_counter()
import coord.cli  # noqa: E402 - measured: what the CLI imports before it runs
import coord.docker_ops  # noqa: E402
from coord import archive, runner, verify  # noqa: E402

IMPORTS_S = time.perf_counter() - _started

# (owner, function name, phase): the steps timed, under the names of coord before and after encryption came
# (archive._pump/_sync and runner.read_back, then archive.write_file with the fsync in it and
# WrittenArchiveCheck.read_back). A name this coord does not have is listed in "not_timed", not fatal.
TIMED = (
    (archive, "_pump", "archive_s"),
    (archive, "_sync", "fsync_s"),
    (archive, "write_file", "archive_s"),
    (verify, "write_file", "archive_s"),  # coord since the in-line check: WrittenArchiveCheck stores through it
    (archive, "assess_consistency", "consistency_s"),
    (runner, "read_back", "read_back_s"),
    (getattr(verify, "WrittenArchiveCheck", None), "read_back", "read_back_s"),
    (runner, "load_policies", "plan_s"),
    (runner, "plan_volumes", "plan_s"),
    (coord.docker_ops.DockerControl, "connect", "plan_s"),
    (coord.docker_ops.DockerControl, "volume_names", "plan_s"),
    (coord.docker_ops.DockerControl, "volume_mountpoint", "plan_s"),
)


def _timed(function, phase: str, phases: dict[str, float]):  # type: ignore[no-untyped-def]
    @functools.wraps(function)
    def wrapper(*arguments, **keywords):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return function(*arguments, **keywords)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - start

    return wrapper


def _own_peak_rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies-dir", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--policy", default="bench")
    options = parser.parse_args()

    phases: dict[str, float] = {"imports_s": IMPORTS_S}
    missing = []
    for owner, name, phase in TIMED:
        function = owner.__dict__.get(name) if owner is not None else None
        if function is None:
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            continue
        wrapped = _timed(function.__func__ if isinstance(function, classmethod) else function, phase, phases)
        setattr(owner, name, classmethod(wrapped) if isinstance(function, classmethod) else wrapped)

    request = runner.BackupRequest(
        policies_dir=Path(options.policies_dir),
        dest=Path(options.dest),
        policy_names=(options.policy,),
        state_dir=Path(options.state_dir),
    )
    result = runner.run_backup(request, coord.docker_ops.DockerControl.connect())
    total = time.perf_counter() - _started
    named = sum(value for key, value in phases.items())
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        **{key: round(value, 3) for key, value in phases.items()},
        "other_s": round(total - named, 3),
        "total_s": round(total, 3),
        "self_cpu_s": round(own.ru_utime + own.ru_stime, 3),
        "children_cpu_s": round(children.ru_utime + children.ru_stime, 3),
        "self_peak_rss_kb": _own_peak_rss_kb(),
        "ok": result.ok,
        "volumes": [volume.to_json() for volume in result.volumes],
        "not_timed": missing,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
