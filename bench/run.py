#!/usr/bin/env python3
"""Benchmark `coord backup` against the plain shell pipeline on the same data, in the same run.

    sudo python3 bench/run.py                                   # 500 MiB / 20k files, 3 rounds (a few minutes)
    sudo python3 bench/run.py --size 2G --files 50000 --small-files 1000000 --gpg    # the full P1 run
    sudo python3 bench/run.py --scaling 10000,100000,1000000 --cases zstd,coord  # P3: RSS and time vs files
    sudo python3 bench/run.py --size 2G --files 50000 --downtime --keep-volumes   # P2: downtime per strategy

What it does (docs/benchmarks.md has results and how to read them):

1. Generates each data set deterministically (bench/datagen.py, seeded) into its own Docker named volume
   `coordbench-<size>-<files>-s<seed>`, written as root into the volume's Mountpoint. A ClickHouse-shaped tree:
   many small part files, most bytes in a few large .bin files that zstd compresses about 1.6x.
2. Warms the page cache once per data set (`tar -cf - . | cat > /dev/null`): the page cache cannot be dropped
   here, so every case reads from a warm cache. Runs `sync` before every timed run so no case pays for the
   previous one's dirty pages.
3. Times each case `--repeat` times, in alternating order (A B C, C B A, ...) because the machine is shared,
   and prints the load average before and after every run. Wall time, CPU (user+sys of the whole process tree)
   and peak RSS come from wait4(2); for coord also its Python process's peak RSS (sampled from /proc).
4. Prints medians and minimums and the ratios between cases, never pass/fail. Ratios are medians of the
   per-round ratios (paired: both runs of a round saw similar load) and ratios of the medians.
5. Runs coord once more in-process (bench/coord_phases.py, not timed with the rest) to split its time into
   steps: imports, plan, archive, fsync, consistency check, read-back validation.
6. With --downtime (P2): starts a container on the main volume (coord-test/busybox, a heartbeat writer) and runs
   `coord backup --json` with a generated policy per strategy (stop, pause, snapshot), `--repeat` rounds in
   alternating order; reads each run's downtime_s and duration_s from coord's JSON and checks them against the
   engine's events and the writer's heartbeats. Times bare `docker stop/start/pause/unpause` once per round.

Never collected by pytest (it lives outside tests/). Needs root, a Docker engine, GNU tar, zstd, gzip
(and gpg for --gpg). Results also go to <out>/results-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datagen  # a sibling module, found through the line above

REPO = Path(__file__).resolve().parent.parent
VOLUME_LABEL = "coord.bench"
GNU_TIME = "/usr/bin/time"
GPG_UID = "coord bench <bench@coord.invalid>"


@dataclass(frozen=True)
class DataSet:
    size: int
    files: int
    seed: int
    role: str  # "main", "small-files" or "scaling"

    @property
    def volume(self) -> str:
        return f"coordbench-{self.size // 1024}k-{self.files}-s{self.seed}"

    @property
    def spec(self) -> str:
        return f"size={self.size},files={self.files},seed={self.seed},generator=1"


@dataclass
class Prepared:
    dataset: DataSet
    mountpoint: Path
    summary: dict[str, int]
    policies_dir: Path
    created: bool


@dataclass
class Run:
    case: str
    volume: str
    round: int
    wall_s: float
    cpu_s: float
    tree_peak_rss_kb: int  # the largest single process of the tree (wait4's ru_maxrss)
    load_before: float
    load_after: float
    archive_bytes: int
    coord_peak_rss_kb: int | None = None  # coord's Python process alone, sampled
    coord_duration_s: float | None = None  # coord's own duration_s for the volume (JSON)


@dataclass
class Context:
    out: Path
    coord: Path
    python: Path
    gpg_home: Path | None = None
    gpg_recipient: str | None = None
    log: list[str] = field(default_factory=list)
    before_source: Path | None = None  # --before: another coord's source tree (its src/), run as `coord-before`


# ---------------------------------------------------------------------------------------------------------------
# Cases: one command per case, built for a data set and an output directory.


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    command: Callable[[Context, Prepared, Path], str | list[str]]  # shell text or argv
    output_suffix: str
    needs_gpg: bool = False
    unavailable: Callable[[Path], str | None] | None = None  # why this coord cannot run the case, or None


def _shell_zstd(context: Context, prepared: Prepared, work: Path) -> str:
    archive = shlex.quote(str(work / "out.tar.zst"))
    return f"tar -C {shlex.quote(str(prepared.mountpoint))} -cf - . | zstd -T0 -q > {archive}"


def _shell_zstd_verified(context: Context, prepared: Prepared, work: Path) -> str:
    archive = shlex.quote(str(work / "out.tar.zst"))
    pipeline = _shell_zstd(context, prepared, work)
    return f"{pipeline} && sync {archive} && zstd -q -d -c {archive} | tar -tf - > /dev/null"


def _shell_zstd_overlapped(context: Context, prepared: Prepared, work: Path) -> str:
    archive = shlex.quote(str(work / "out.tar.zst"))
    return (
        f"tar -C {shlex.quote(str(prepared.mountpoint))} -cf - . | zstd -T0 -q | tee {archive} "
        f"| zstd -q -d -c | tar -tf - > /dev/null && sync {archive}"
    )


def _workers() -> int:
    return len(os.sched_getaffinity(0))


def _shell_pzstd(context: Context, prepared: Prepared, work: Path) -> str:
    archive = shlex.quote(str(work / "out.tar.zst"))
    return f"tar -C {shlex.quote(str(prepared.mountpoint))} -cf - . | pzstd -q -3 -p {_workers()} > {archive}"


def _shell_zstd_checked(context: Context, prepared: Prepared, work: Path, compressor: str, decompressor: str) -> str:
    """The shell doing coord's in-line check: the stream to the file and, through tee, decoded and listed
    (`tee >(decoder | tar -t)`, with a named pipe so the shell waits for the listing and sees its status)."""
    archive = shlex.quote(str(work / "out.tar.zst"))
    fifo = shlex.quote(str(work / "check.fifo"))
    return (
        f"mkfifo {fifo} && {{ {decompressor} < {fifo} | tar -tf - > /dev/null & }} && listing=$! && "
        f"tar -C {shlex.quote(str(prepared.mountpoint))} -cf - . | {compressor} | tee {fifo} > {archive} "
        f"&& wait $listing && sync {archive}"
    )


def _shell_zstd_check(context: Context, prepared: Prepared, work: Path) -> str:
    return _shell_zstd_checked(context, prepared, work, "zstd -T0 -q", "zstd -q -d -c")


def _shell_pzstd_check(context: Context, prepared: Prepared, work: Path) -> str:
    workers = _workers()
    return _shell_zstd_checked(context, prepared, work, f"pzstd -q -3 -p {workers}", f"pzstd -q -d -c -p {workers}")


def _shell_gzip(context: Context, prepared: Prepared, work: Path) -> str:
    return f"tar -C {shlex.quote(str(prepared.mountpoint))} -czf {shlex.quote(str(work / 'out.tar.gz'))} ."


def _shell_zstd_gpg(context: Context, prepared: Prepared, work: Path) -> str:
    assert context.gpg_home is not None and context.gpg_recipient is not None
    gpg = (
        f"gpg --batch --no-tty --quiet --homedir {shlex.quote(str(context.gpg_home))} --trust-model always "
        f"--compress-algo none --encrypt --recipient {context.gpg_recipient}"
    )
    return (
        f"tar -C {shlex.quote(str(prepared.mountpoint))} -cf - . | zstd -T0 -q | {gpg} "
        f"> {shlex.quote(str(work / 'out.tar.zst.gpg'))}"
    )


def _coord(context: Context, prepared: Prepared, work: Path, policies_dir: Path | None = None) -> list[str]:
    return [
        str(context.coord), "backup", "--policy", "bench", "--policies-dir", str(policies_dir or prepared.policies_dir),
        "--dest", str(work / "dest"),
        # its own lock and journal, not the default /var/lib/coord that other coord runs on this host use
        "--state-dir", str(context.out / "state"),
        "--json",
    ]  # fmt: skip


def _coord_before(context: Context, prepared: Prepared, work: Path) -> list[str]:
    """The same command with another coord (--before: e.g. `git archive main src | tar -x -C DIR`), run by this
    venv's Python with that tree first on its path: two versions in one run, alternating, under the same load."""
    assert context.before_source is not None
    argv = _coord(context, prepared, work)
    return ["env", f"PYTHONPATH={context.before_source / 'src'}", str(context.python), "-m", "coord", *argv[1:]]


def _coord_gpg(context: Context, prepared: Prepared, work: Path) -> list[str]:
    """coord with the policy's `encrypt: recipient_key_file:` (the shape issue 4 gives the policy) to the bench key."""
    assert context.gpg_home is not None
    policies_dir = prepared.policies_dir.with_name(prepared.policies_dir.name + "-gpg")
    policies_dir.mkdir(parents=True, exist_ok=True)
    text = (prepared.policies_dir / "bench.yaml").read_text()
    key_file = context.gpg_home / "recipient.asc"
    (policies_dir / "bench.yaml").write_text(f"{text}encrypt:\n  recipient_key_file: {key_file}\n")
    return _coord(context, prepared, work, policies_dir)


def coord_encryption_missing(coord: Path) -> str | None:
    """Why this coord cannot encrypt (no `encrypt.recipient_key_file` in `coord schema`), or None when it can."""
    completed = subprocess.run([str(coord), "schema"], capture_output=True, text=True)
    try:
        schema = json.loads(completed.stdout)
    except json.JSONDecodeError:
        return f"`coord schema` did not print JSON (exit {completed.returncode})"
    encrypt = schema.get("properties", {}).get("encrypt")
    if encrypt is None:
        return "coord has no encryption setting yet (no `encrypt` key in `coord schema`)"
    if "recipient_key_file" not in json.dumps(schema):
        return "coord's `encrypt` setting has no recipient_key_file: update _coord_gpg in bench/run.py"
    return None


CASES = {
    case.name: case
    for case in (
        Case("zstd", "tar -C MOUNT -cf - . | zstd -T0 -q > out.tar.zst", _shell_zstd, ".tar.zst"),
        Case(
            "zstd+verify",
            "the zstd pipeline, then `sync out.tar.zst` and `zstd -dc out.tar.zst | tar -tf - > /dev/null` "
            "(about the work coord does: fsync and a read-back listing; coord also hashes twice)",
            _shell_zstd_verified,
            ".tar.zst",
        ),
        Case(
            "zstd+overlap",
            "tar | zstd -T0 -q | tee out.tar.zst | zstd -dc | tar -tf - > /dev/null; sync out.tar.zst "
            "(the same checks as zstd+verify, listing the stream while it is written: what coord could do)",
            _shell_zstd_overlapped,
            ".tar.zst",
        ),
        Case(
            "zstd+check",
            "tar | zstd -T0 -q | tee >(zstd -dc | tar -tf - > /dev/null) > out.tar.zst; sync out.tar.zst "
            "(the shell doing coord's in-line check: one zstd frame, decoded on one core)",
            _shell_zstd_check,
            ".tar.zst",
        ),
        Case(
            "pzstd",
            "tar -C MOUNT -cf - . | pzstd -q -3 -p NPROC > out.tar.zst (independent frames)",
            _shell_pzstd,
            ".tar.zst",
        ),
        Case(
            "pzstd+check",
            "tar | pzstd -q -3 -p NPROC | tee >(pzstd -dc -p NPROC | tar -tf - > /dev/null) > out.tar.zst; "
            "sync out.tar.zst (coord's check on independent frames, decoded on every core)",
            _shell_pzstd_check,
            ".tar.zst",
        ),
        Case("gzip", "tar -C MOUNT -czf out.tar.gz . (the incident's command)", _shell_gzip, ".tar.gz"),
        Case("coord", "coord backup --policy bench --dest DEST --json (strategy live, zstd)", _coord, ".tar.zst"),
        Case("coord-before", "the same with the coord of --before DIR (DIR/src)", _coord_before, ".tar.zst"),
        Case(
            "zstd+gpg",
            "tar -C MOUNT -cf - . | zstd -T0 -q | gpg --encrypt --recipient KEY --compress-algo none > out",
            _shell_zstd_gpg,
            ".gpg",
            needs_gpg=True,
        ),
        Case(
            "coord+gpg",
            "coord backup with the policy's encrypt: recipient_key_file: (the bench key)",
            _coord_gpg,
            ".gpg",
            needs_gpg=True,
            unavailable=coord_encryption_missing,
        ),
    )
}
DEFAULT_CASES = ("zstd", "zstd+verify", "gzip", "coord")


# ---------------------------------------------------------------------------------------------------------------
# Running and measuring one command


def _sample_peak_rss(parent: int, stop: threading.Event, peak: list[int]) -> None:
    """Keep peak[0] at the highest VmHWM (own peak RSS, kB) seen for the first child of `parent` until `stop`."""
    children = f"/proc/{parent}/task/{parent}/children"
    pid = ""
    while not pid and not stop.is_set():
        try:
            with open(children) as listing:
                pid = listing.read().split(" ")[0].strip()
        except OSError:
            return
        stop.wait(0.01)
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except OSError:
            return
        stop.wait(0.05)


def measure(command: str | list[str], *, sample_rss: bool = False) -> tuple[dict[str, float | int], str, str]:
    """Run `command` (shell text or argv) to its end: wall time, and from GNU time the CPU (user+sys) of the
    whole process tree and the peak RSS of its largest process; with `sample_rss`, also the command's own peak.

    Through /usr/bin/time, not wait4 from here: Linux carries a parent's RSS into a forked child's ru_maxrss
    (the hiwater mark is recorded at exec), so children of this process, which holds the data generator's
    memory, would all report at least its size. /usr/bin/time is a small parent. Raises RuntimeError with the
    command's stderr when it exits non-zero.
    """
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr, tempfile.NamedTemporaryFile() as usage:
        shell = isinstance(command, str)
        argv = ["bash", "-o", "pipefail", "-c", command] if shell else command
        argv = [GNU_TIME, "--format=%e %U %S %M", f"--output={usage.name}", "--", *argv]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
        peak = [0]
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_peak_rss, args=(process.pid, stop, peak), daemon=True)
        if sample_rss:
            sampler.start()
        process.wait()
        wall = time.perf_counter() - started
        stop.set()
        if sample_rss:
            sampler.join()
        load_after = os.getloadavg()[0]
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
        # the last line: "Command exited with non-zero status N" may come before it
        _, user, system, max_rss = Path(usage.name).read_text().splitlines()[-1].split()
    if process.returncode != 0:
        shown = command if shell else shlex.join(command)
        raise RuntimeError(f"exit {process.returncode}: {shown}\n{err.strip()}")
    numbers = {
        "wall_s": wall,
        "cpu_s": float(user) + float(system),
        "tree_peak_rss_kb": int(max_rss),
        "load_before": load_before,
        "load_after": load_after,
        "own_peak_rss_kb": peak[0],
    }
    return numbers, out, err


def run_case(context: Context, case: Case, prepared: Prepared, round_number: int) -> Run:
    work = Path(tempfile.mkdtemp(prefix=f"{case.name.replace('+', '-')}-", dir=context.out))
    try:
        os.sync()  # no case pays for the previous one's dirty pages
        numbers, out, _ = measure(case.command(context, prepared, work), sample_rss=case.name.startswith("coord"))
        archives = [p for p in work.rglob("*") if p.is_file() and p.name.endswith(case.output_suffix)]
        if not archives:
            raise RuntimeError(f"{case.name} wrote no *{case.output_suffix} archive under {work}")
        run = Run(
            case=case.name,
            volume=prepared.dataset.volume,
            round=round_number,
            wall_s=numbers["wall_s"],
            cpu_s=numbers["cpu_s"],
            tree_peak_rss_kb=int(numbers["tree_peak_rss_kb"]),
            load_before=numbers["load_before"],
            load_after=numbers["load_after"],
            archive_bytes=sum(p.stat().st_size for p in archives),
        )
        if case.name.startswith("coord"):
            document = json.loads(out)
            volume = document["volumes"][0]
            if not document["ok"] or volume["status"] != "ok":
                raise RuntimeError(f"coord did not back up {prepared.dataset.volume} cleanly: {out}")
            run.coord_duration_s = volume["duration_s"]
            run.coord_peak_rss_kb = int(numbers["own_peak_rss_kb"]) or None
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Data sets in Docker volumes


def docker(*arguments: str) -> str:
    completed = subprocess.run(["docker", *arguments], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"docker {' '.join(arguments)}: {completed.stderr.strip()}")
    return completed.stdout.strip()


def volume_labels(name: str) -> dict[str, str] | None:
    completed = subprocess.run(
        ["docker", "volume", "inspect", "--format", "{{json .Labels}}", name], capture_output=True, text=True
    )
    if completed.returncode != 0:
        return None
    return json.loads(completed.stdout) or {}


def prepare(dataset: DataSet, out: Path, reuse: bool) -> Prepared:
    """The data set's volume, generated (or reused when --keep-volumes left a complete one), and its policy."""
    marker = out / "volumes" / f"{dataset.volume}.json"
    labels = volume_labels(dataset.volume)
    if labels is not None and VOLUME_LABEL not in labels:
        raise RuntimeError(f"volume {dataset.volume} exists and is not a benchmark volume: not touching it")
    summary = None
    if labels is not None and reuse and labels.get(VOLUME_LABEL) == dataset.spec and marker.exists():
        summary = json.loads(marker.read_text())
        log(f"{dataset.volume}: reusing the volume generated earlier ({marker})")
    elif labels is not None:
        docker("volume", "rm", dataset.volume)
        marker.unlink(missing_ok=True)
    created = summary is None
    if created:
        docker("volume", "create", "--label", f"{VOLUME_LABEL}={dataset.spec}", dataset.volume)
    mountpoint = Path(docker("volume", "inspect", "--format", "{{.Mountpoint}}", dataset.volume))
    if summary is None:
        log(f"{dataset.volume}: generating {datagen.format_size(dataset.size)} in ~{dataset.files:,} files")
        started = time.perf_counter()
        summary = asdict(datagen.write_tree(str(mountpoint), dataset.size, dataset.files, dataset.seed))
        log(f"{dataset.volume}: generated {summary['files']:,} files, {datagen.format_size(summary['bytes'])} "
            f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(summary))
    policies_dir = out / "policies" / dataset.volume
    policies_dir.mkdir(parents=True, exist_ok=True)
    (policies_dir / "bench.yaml").write_text(
        f"description: benchmark data set {dataset.spec}\nvolumes:\n  - {dataset.volume}\nstrategy: live\n"
    )
    log(f"{dataset.volume}: warming the page cache (tar -cf - . | cat > /dev/null)")
    subprocess.run(f"tar -C {shlex.quote(str(mountpoint))} -cf - . | cat > /dev/null", shell=True, check=True)
    return Prepared(dataset, mountpoint, summary, policies_dir, created)


# ---------------------------------------------------------------------------------------------------------------
# gpg for the encrypted cases


def set_up_gpg(context: Context) -> None:
    """A throw-away key in a short-named homedir (facts.md: long homedir paths break gpg-agent)."""
    home = Path(tempfile.mkdtemp(prefix="cbg", dir="/tmp"))
    home.chmod(0o700)
    subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback", "--passphrase", "",
         "--quick-gen-key", GPG_UID, "future-default", "default", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--with-colons", "--list-keys", GPG_UID],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    context.gpg_home = home
    context.gpg_recipient = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    exported = subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), "--armor", "--export", context.gpg_recipient],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    (home / "recipient.asc").write_bytes(exported)  # for coord's policy (encrypt: recipient_key_file:)


def tear_down_gpg(context: Context) -> None:
    if context.gpg_home is not None:
        subprocess.run(["gpgconf", "--homedir", str(context.gpg_home), "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(context.gpg_home, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# P2: container downtime per strategy, with a running container on the main volume

DOWNTIME_STRATEGIES = ("stop", "pause", "snapshot")
SERVICE_NAME = "coordbench-downtime"
SERVICE_IMAGE = "coord-test/busybox"  # built offline by scripts/build-test-images.sh; never pulled
WRITER_DIRECTORY = "coord-bench-writer"  # the writer's files in the volume, removed again at the end
HEARTBEAT = "/tmp/heartbeat"  # in the container's own file system, not in the volume
TICK_S = 0.05
# PID 1 of the container. `trap 'exit 0' TERM` makes it stop at once on SIGTERM (a bare `sleep` as PID 1 has no
# handler, so the kernel ignores SIGTERM and `docker stop` waits its whole timeout, then kills). Every tick it
# appends the host's boot-time clock (/proc/uptime, 10 ms steps) to its heartbeat file; every 20 ticks (~1 s) it
# writes a small "part" the way ClickHouse does: into tmp_part_N, renamed to part_N, replacing the part of that
# slot 10 parts earlier (a new inode each time, never a file changed in place).
WRITER_SCRIPT = f"""\
trap 'exit 0' TERM
mkdir -p /data/{WRITER_DIRECTORY}
i=0
while :; do
  read up idle < /proc/uptime
  echo "$up" >> {HEARTBEAT}
  i=$((i + 1))
  if [ $((i % 20)) -eq 0 ]; then
    slot=$((i / 20 % 10))
    echo "part $i at $up" > /data/{WRITER_DIRECTORY}/tmp_part_$slot
    mv /data/{WRITER_DIRECTORY}/tmp_part_$slot /data/{WRITER_DIRECTORY}/part_$slot
  fi
  sleep {TICK_S} & wait $!
done
"""
DOWN_EVENTS = ("pause", "kill")  # the engine's first event of a pause or a stop (kill: SIGTERM sent)
BACK_EVENTS = ("unpause", "start")


@dataclass
class DowntimeRun:
    strategy: str
    volume: str
    round: int
    downtime_s: float  # coord's JSON: the longest time a container was paused or stopped (volumes[0].downtime_s)
    duration_s: float  # coord's JSON duration_s: from the start of the archive step to the published manifest
    wall_s: float  # the whole `coord backup` process
    cpu_s: float
    load_before: float
    load_after: float
    status: str
    verdict: str | None
    warnings: dict[str, int]
    containers: list[dict]  # coord's JSON containers[]: action, seconds, restored
    engine_s: float | None  # docker events: first pause/kill to last unpause/start of the container
    engine_events: list[tuple[str, float]]  # (action, seconds after the coord process started)
    service_gap_s: float | None  # the longest gap between two heartbeats of the writer around the run


@dataclass
class BareCycle:
    round: int
    stop_s: float  # `docker stop -t 30 NAME`, the CLI's wall time
    start_s: float
    pause_s: float
    unpause_s: float
    inspect_s: float  # `docker inspect NAME`: what the CLI itself costs (process start, one API call)
    stop_engine_s: float | None  # docker events kill -> die: the container's own shutdown
    stop_gap_s: float | None  # the writer's longest heartbeat gap over the stop + start


@dataclass
class Service:
    name: str
    id: str
    mountpoint: Path

    def state(self) -> str:
        return docker("inspect", "--format", "{{.State.Status}}", self.id)

    def heartbeats(self) -> list[float]:
        """Every heartbeat the writer wrote, read through its PID 1's root (no `docker exec` in the events)."""
        pid = docker("inspect", "--format", "{{.State.Pid}}", self.id)
        try:
            text = Path(f"/proc/{pid}/root{HEARTBEAT}").read_text()
        except OSError:
            return []
        beats = []
        for line in text.splitlines():
            try:
                beats.append(float(line))
            except ValueError:
                continue  # a line cut by a read in the middle of a write
        return beats

    def assert_running(self, after: float, timeout_s: float = 5.0) -> None:
        """Benchmark precondition, not a test: the container runs and its writer wrote after `after` (boot time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            if state == "running" and (beats := self.heartbeats()) and beats[-1] > after:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"container {self.name} is {state} and its writer is silent: the benchmark stops")
            time.sleep(TICK_S)


def boot_time() -> float:
    """The clock of the writer's heartbeats (/proc/uptime is CLOCK_BOOTTIME; no time namespace in the container)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def longest_gap(beats: Sequence[float], start: float, end: float) -> float | None:
    """The longest interval between consecutive heartbeats that overlaps [start, end], or None without beats."""
    gaps = [b - a for a, b in itertools.pairwise(beats) if b >= start and a <= end]
    return max(gaps) if gaps else None


def engine_events(container_id: str, since: float, until: float) -> list[tuple[str, float]]:
    """The container's state events between two wall-clock times: (action, unix time)."""
    text = docker(
        "events", "--since", f"{since:.9f}", "--until", f"{until:.9f}", "--filter", f"container={container_id}",
        "--filter", "type=container", "--format", "{{json .}}",
    )  # fmt: skip
    events = []
    for line in text.splitlines():
        event = json.loads(line)
        events.append((event["Action"], event["timeNano"] / 1e9))
    return events


def engine_window(events: Sequence[tuple[str, float]]) -> float | None:
    down = [at for action, at in events if action in DOWN_EVENTS]
    back = [at for action, at in events if action in BACK_EVENTS]
    return max(back) - min(down) if down and back and max(back) > min(down) else None


def start_service(prepared: Prepared) -> Service:
    """The container the strategies pause and stop: coord-test/busybox with the writer, the volume at /data."""
    existing = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Config.Labels}}", SERVICE_NAME], capture_output=True, text=True
    )
    if existing.returncode == 0:
        if VOLUME_LABEL not in (json.loads(existing.stdout) or {}):
            raise RuntimeError(f"a container {SERVICE_NAME} exists and is not a benchmark container: not touching it")
        docker("rm", "--force", SERVICE_NAME)
    shutil.rmtree(prepared.mountpoint / WRITER_DIRECTORY, ignore_errors=True)  # a killed run's leftovers
    container_id = docker(
        "run", "--detach", "--name", SERVICE_NAME, "--label", f"{VOLUME_LABEL}=downtime",
        "--volume", f"{prepared.dataset.volume}:/data", SERVICE_IMAGE, "sh", "-c", WRITER_SCRIPT,
    )  # fmt: skip
    service = Service(SERVICE_NAME, container_id, prepared.mountpoint)
    service.assert_running(boot_time())
    log(f"{SERVICE_NAME}: running on {prepared.dataset.volume} (/data), heartbeat every {TICK_S * 1000:.0f} ms")
    return service


def remove_service(service: Service | None, prepared: Prepared) -> None:
    if service is not None:
        subprocess.run(["docker", "rm", "--force", service.id], capture_output=True)
    shutil.rmtree(prepared.mountpoint / WRITER_DIRECTORY, ignore_errors=True)


def downtime_policy(context: Context, prepared: Prepared, strategy: str) -> Path:
    """The `bench` policy of the volume with this strategy; the writer's unfinished tmp_part is excluded, as
    ClickHouse's tmp_* parts are in the shipped policy."""
    policies_dir = context.out / "policies" / f"{prepared.dataset.volume}-{strategy}"
    policies_dir.mkdir(parents=True, exist_ok=True)
    (policies_dir / "bench.yaml").write_text(
        f"description: P2 benchmark, {strategy}, data set {prepared.dataset.spec}\n"
        f"volumes:\n  - {prepared.dataset.volume}\nstrategy: {strategy}\n"
        f"exclude:\n  - {WRITER_DIRECTORY}/tmp_*\n"
    )
    return policies_dir


def run_downtime_case(
    context: Context, prepared: Prepared, service: Service, strategy: str, round_number: int
) -> DowntimeRun:
    work = Path(tempfile.mkdtemp(prefix=f"downtime-{strategy}-", dir=context.out))
    try:
        os.sync()
        command = _coord(context, prepared, work, downtime_policy(context, prepared, strategy))
        since, booted = time.time(), boot_time()
        numbers, out, _ = measure(command)
        until, ended = time.time(), boot_time()
        document = json.loads(out)
        volume = document["volumes"][0]
        if not document["ok"] or volume["status"] == "failed":
            raise RuntimeError(f"coord did not back up {prepared.dataset.volume} with {strategy}: {out}")
        touched = [c for c in volume["containers"] if c["action"] in ("paused", "stopped")]
        if [c["container"] for c in touched] != [service.name]:
            raise RuntimeError(f"coord {strategy} changed {touched}, expected only {service.name}: {out}")
        service.assert_running(ended)
        events = engine_events(service.id, since, until)
        return DowntimeRun(
            strategy=strategy,
            volume=prepared.dataset.volume,
            round=round_number,
            downtime_s=volume["downtime_s"],
            duration_s=volume["duration_s"],
            wall_s=numbers["wall_s"],
            cpu_s=numbers["cpu_s"],
            load_before=numbers["load_before"],
            load_after=numbers["load_after"],
            status=volume["status"],
            verdict=volume["verdict"],
            warnings=volume["warnings"],
            containers=volume["containers"],
            engine_s=engine_window(events),
            engine_events=[(action, round(at - since, 3)) for action, at in events],
            service_gap_s=longest_gap(service.heartbeats(), booted, ended),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def timed_docker(*arguments: str) -> float:
    started = time.perf_counter()
    docker(*arguments)
    return time.perf_counter() - started


def bare_cycle(service: Service, round_number: int) -> BareCycle:
    """What stopping and pausing cost on their own: the docker CLI, no archive in between."""
    inspect_s = timed_docker("inspect", "--format", "{{.State.Status}}", service.id)
    since, booted = time.time(), boot_time()
    stop_s = timed_docker("stop", "--time", "30", service.id)
    start_s = timed_docker("start", service.id)
    until, ended = time.time(), boot_time()
    service.assert_running(ended)
    events = engine_events(service.id, since, until)
    kill = [at for action, at in events if action == "kill"]
    die = [at for action, at in events if action == "die"]
    if stop_s > 5:
        raise RuntimeError(f"docker stop took {stop_s:.1f} s: the container's PID 1 does not exit on SIGTERM")
    pause_s = timed_docker("pause", service.id)
    unpause_s = timed_docker("unpause", service.id)
    service.assert_running(boot_time())
    return BareCycle(
        round=round_number,
        stop_s=stop_s,
        start_s=start_s,
        pause_s=pause_s,
        unpause_s=unpause_s,
        inspect_s=inspect_s,
        stop_engine_s=die[0] - kill[0] if kill and die else None,
        stop_gap_s=longest_gap(service.heartbeats(), booted, ended),
    )


def run_downtime(
    context: Context, prepared: Prepared, strategies: Sequence[str], repeat: int
) -> tuple[list[DowntimeRun], list[BareCycle]]:
    """P2: each strategy `repeat` times in alternating order on the main volume, the service container running."""
    runs: list[DowntimeRun] = []
    bare: list[BareCycle] = []
    service = None
    try:
        service = start_service(prepared)
        for round_number in range(repeat):
            cycle = bare_cycle(service, round_number)
            bare.append(cycle)
            log(f"{SERVICE_NAME} round {round_number + 1}/{repeat} bare docker: stop {cycle.stop_s:.2f} s, start "
                f"{cycle.start_s:.2f} s, pause {cycle.pause_s:.2f} s, unpause {cycle.unpause_s:.2f} s")  # fmt: skip
            for strategy in strategies if round_number % 2 == 0 else reversed(strategies):
                run = run_downtime_case(context, prepared, service, strategy, round_number)
                runs.append(run)
                log(f"{prepared.dataset.volume} round {round_number + 1}/{repeat} {strategy:8s} downtime "
                    f"{run.downtime_s:7.3f} s (engine {run.engine_s or float('nan'):.3f}, writer's gap "
                    f"{run.service_gap_s or float('nan'):.3f})  duration_s {run.duration_s:6.2f}  "
                    f"wall {run.wall_s:6.2f} s  load {run.load_before:.2f} -> {run.load_after:.2f}")  # fmt: skip
    finally:
        remove_service(service, prepared)
    return runs, bare


# ---------------------------------------------------------------------------------------------------------------
# Reporting


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "missing"

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    filesystem = subprocess.run(
        ["findmnt", "-no", "FSTYPE", "-T", "/var/lib/docker"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "tar": first_line(["tar", "--version"]),
        "zstd": first_line(["zstd", "--version"]),
        "pzstd": "on PATH" if shutil.which("pzstd") else "missing",  # its --version writes to stderr
        "gzip": first_line(["gzip", "--version"]),
        "gpg": first_line(["gpg", "--version"]),
        "python": platform.python_version(),
        "coord": first_line([str(REPO / ".venv/bin/coord"), "--version"]),
        "volume filesystem": filesystem or "?",
    }


def ratio_lines(runs: list[Run], numerator: str, denominator: str, label: str) -> list[str]:
    """'label: a / b = x (paired median), y (medians), z (minimums)', or nothing when a case is missing."""
    top = {run.round: run.wall_s for run in runs if run.case == numerator}
    bottom = {run.round: run.wall_s for run in runs if run.case == denominator}
    if not top or not bottom:
        return []
    paired = [top[r] / bottom[r] for r in top if r in bottom]
    return [
        f"- {label}: {numerator} / {denominator} = {median(paired):.2f}x paired median "
        f"(per round: {', '.join(f'{x:.2f}' for x in paired)}), {median(top.values()) / median(bottom.values()):.2f}x "
        f"of medians, {min(top.values()) / min(bottom.values()):.2f}x of minimums"
    ]


def report_dataset(prepared: Prepared, runs: list[Run], phases: dict | None) -> list[str]:
    summary = prepared.summary
    lines = [
        f"### {prepared.dataset.volume}: {summary['files']:,} files, {summary['directories']:,} directories, "
        f"{datagen.format_size(summary['bytes'])} (largest file {datagen.format_size(summary['largest_file'])})",
        "",
        "| case | median wall s | min wall s | median CPU s | peak RSS MB (largest process) | archive | data/archive |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(run.case for run in runs):
        mine = [run for run in runs if run.case == name]
        archive = median([run.archive_bytes for run in mine])
        rss = max(run.tree_peak_rss_kb for run in mine) / 1024
        coord_rss = [run.coord_peak_rss_kb for run in mine if run.coord_peak_rss_kb]
        rss_text = f"{rss:.0f}" + (f" (coord's Python: {max(coord_rss) / 1024:.0f})" if coord_rss else "")
        lines.append(
            f"| {name} | {median([r.wall_s for r in mine]):.2f} | {min(r.wall_s for r in mine):.2f} | "
            f"{median([r.cpu_s for r in mine]):.2f} | {rss_text} | {datagen.format_size(archive)} | "
            f"{summary['bytes'] / archive:.2f}x |"
        )
    lines.append("")
    lines += ratio_lines(runs, "coord", "zstd", "coord vs the zstd pipeline (target <= 1.1x, later 1.05x)")
    lines += ratio_lines(runs, "coord", "zstd+verify", "coord vs pipeline + fsync + read-back listing")
    lines += ratio_lines(runs, "zstd+overlap", "zstd", "validation overlapped with the write vs the zstd pipeline")
    lines += ratio_lines(runs, "zstd+check", "zstd", "the shell doing coord's check vs the zstd pipeline")
    lines += ratio_lines(runs, "pzstd", "zstd", "independent frames (pzstd) vs the zstd pipeline")
    lines += ratio_lines(runs, "pzstd+check", "zstd", "the shell's check on independent frames vs the zstd pipeline")
    lines += ratio_lines(runs, "coord-before", "zstd", "the --before coord vs the zstd pipeline")
    lines += ratio_lines(runs, "coord", "coord-before", "this coord vs the --before coord")
    lines += ratio_lines(runs, "coord", "pzstd+check", "coord vs the shell doing its check on independent frames")
    lines += ratio_lines(runs, "gzip", "coord", "tar -czf vs coord (target >= 3x)")
    lines += ratio_lines(runs, "gzip", "zstd", "tar -czf vs the zstd pipeline")
    lines += ratio_lines(runs, "coord+gpg", "zstd+gpg", "coord+gpg vs the zstd+gpg pipeline")
    lines += ratio_lines(runs, "zstd+gpg", "zstd", "what gpg adds to the pipeline")
    cpu = {name: median([r.cpu_s for r in runs if r.case == name]) for name in {r.case for r in runs}}
    if "coord" in cpu and "zstd" in cpu:
        versus = f", coord / zstd+verify = {cpu['coord'] / cpu['zstd+verify']:.2f}x" if "zstd+verify" in cpu else ""
        lines.append(
            f"- CPU seconds (user+sys of all processes, medians; less sensitive to the load of other users): "
            f"coord / zstd = {cpu['coord'] / cpu['zstd']:.2f}x{versus}"
        )
    coord_runs = [run for run in runs if run.case == "coord" and run.coord_duration_s is not None]
    if coord_runs:
        inside = median([run.coord_duration_s or 0.0 for run in coord_runs])
        wall = median([run.wall_s for run in coord_runs])
        lines.append(
            f"- coord's JSON duration_s (archive + validation + publish) median {inside:.2f} s of {wall:.2f} s wall: "
            f"{wall - inside:.2f} s is process start, imports, policy loading and Docker calls"
        )
    if phases:
        steps = ("imports_s", "plan_s", "archive_s", "fsync_s", "consistency_s", "read_back_s", "other_s")
        shown = ", ".join(f"{key[:-2]} {phases[key]:.2f}" for key in steps if key in phases)
        lines.append(f"- coord's steps (one in-process run, s): {shown}; total {phases['total_s']:.2f}")
        lines.append(
            f"- coord's own Python process: {phases['self_cpu_s']:.2f} s CPU, peak RSS "
            f"{phases['self_peak_rss_kb'] / 1024:.0f} MB; its children (tar, zstd, read-back): "
            f"{phases['children_cpu_s']:.2f} s CPU"
        )
    loads = [(run.load_before, run.load_after) for run in runs]
    lines.append(
        f"- load average (1 min) before/after runs: {min(a for a, _ in loads):.2f} to {max(b for _, b in loads):.2f}; "
        "per run in the log above and in the JSON"
    )
    return [*lines, ""]


def downtime_ratio_line(runs: list[DowntimeRun], numerator: str, denominator: str, label: str) -> list[str]:
    """'label: a / b downtime = x (y%) paired median (per round), of medians', or nothing when one is missing."""
    top = {run.round: run.downtime_s for run in runs if run.strategy == numerator}
    bottom = {run.round: run.downtime_s for run in runs if run.strategy == denominator and run.downtime_s > 0}
    paired = [top[r] / bottom[r] for r in top if r in bottom]
    if not paired:
        return []
    of_medians = median(list(top.values())) / median(list(bottom.values()))
    return [
        f"- {label}: {numerator} / {denominator} downtime = {median(paired):.3f}x ({median(paired):.1%}) paired "
        f"median (per round: {', '.join(f'{x:.3f}' for x in paired)}), {of_medians:.3f}x ({of_medians:.1%}) of medians"
    ]


def report_downtime(prepared: Prepared, runs: list[DowntimeRun], bare: list[BareCycle]) -> list[str]:
    summary = prepared.summary
    rounds = len({run.round for run in runs})
    lines = [
        f"### P2: container downtime per strategy, {prepared.dataset.volume}: {summary['files']:,} files, "
        f"{datagen.format_size(summary['bytes'])}",
        "",
        f"One container ({SERVICE_NAME}, {SERVICE_IMAGE}) mounts the volume at /data and runs a writer: a heartbeat "
        f"every {TICK_S * 1000:.0f} ms in its own /tmp, a small part renamed into /data/{WRITER_DIRECTORY}/ every "
        f"~1 s. coord backs the volume up with each strategy, {rounds} rounds in alternating order.",
        "",
        "| strategy | median downtime s | min downtime s | median duration_s | median coord wall s | "
        "downtime / duration_s | downtime / coord wall | engine's events s | writer's longest gap s | verdicts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for strategy in dict.fromkeys(run.strategy for run in runs):
        mine = [run for run in runs if run.strategy == strategy]
        engine = [run.engine_s for run in mine if run.engine_s is not None]
        gaps = [run.service_gap_s for run in mine if run.service_gap_s is not None]
        verdicts = ", ".join(f"{n}x {v}" for v, n in Counter(f"{r.status} {r.verdict}" for r in mine).items())
        lines.append(
            f"| {strategy} | {median([r.downtime_s for r in mine]):.3f} | {min(r.downtime_s for r in mine):.3f} | "
            f"{median([r.duration_s for r in mine]):.2f} | {median([r.wall_s for r in mine]):.2f} | "
            f"{median([r.downtime_s / r.duration_s for r in mine if r.duration_s]):.1%} | "
            f"{median([r.downtime_s / r.wall_s for r in mine]):.1%} | "
            f"{median(engine) if engine else float('nan'):.3f} | {median(gaps) if gaps else float('nan'):.3f} | "
            f"{verdicts} |"
        )
    lines.append("")
    lines += downtime_ratio_line(runs, "snapshot", "stop", "snapshot vs stop (target <= 2%)")
    lines += downtime_ratio_line(runs, "snapshot", "pause", "snapshot vs pause")
    lines += downtime_ratio_line(runs, "pause", "stop", "pause vs stop")
    if bare:

        def typical(values: list[float | None]) -> str:
            known = [value for value in values if value is not None]
            return f"{median(known):.3f}" if known else "?"

        lines.append(
            f"- bare docker CLI, no archive (median of {len(bare)}, one cycle per round): "
            f"`docker stop --time 30` {typical([c.stop_s for c in bare])} s (the engine's kill -> die: "
            f"{typical([c.stop_engine_s for c in bare])} s), `docker start` {typical([c.start_s for c in bare])} s, "
            f"writer's gap over stop + start {typical([c.stop_gap_s for c in bare])} s; "
            f"`docker pause` {typical([c.pause_s for c in bare])} s, `docker unpause` "
            f"{typical([c.unpause_s for c in bare])} s; `docker inspect` (the CLI's own cost) "
            f"{typical([c.inspect_s for c in bare])} s"
        )
    loads = [(run.load_before, run.load_after) for run in runs]
    lines.append(
        f"- load average (1 min) before/after coord runs: {min(a for a, _ in loads):.2f} to "
        f"{max(b for _, b in loads):.2f}; every run in the log above and in the JSON (`downtime_runs`, `docker_bare`)"
    )
    return [*lines, ""]


def report_scaling(prepared_sets: list[Prepared], runs: list[Run], phases: dict[str, dict]) -> list[str]:
    lines = [
        "### Scaling with the number of files (P3)",
        "",
        "| files | data | zstd median s | coord median s | coord / zstd | coord s per 100k files | "
        "coord duration_s | coord Python peak RSS MB (in-process run) | largest process RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for prepared in prepared_sets:
        mine = [run for run in runs if run.volume == prepared.dataset.volume]
        zstd = [run.wall_s for run in mine if run.case == "zstd"]
        coord = [run for run in mine if run.case == "coord"]
        if not coord:
            continue
        coord_wall = median([run.wall_s for run in coord])
        files = prepared.summary["files"]
        own = phases.get(prepared.dataset.volume, {}).get("self_peak_rss_kb")
        lines.append(
            f"| {files:,} | {datagen.format_size(prepared.summary['bytes'])} | "
            f"{median(zstd) if zstd else float('nan'):.2f} | {coord_wall:.2f} | "
            f"{coord_wall / median(zstd) if zstd else float('nan'):.2f}x | {coord_wall / files * 100_000:.2f} | "
            f"{median([run.coord_duration_s or 0.0 for run in coord]):.2f} | "
            f"{own / 1024 if own else float('nan'):.0f} | {max(run.tree_peak_rss_kb for run in coord) / 1024:.0f} |"
        )
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time coord backup against tar | zstd -T0 (and tar -czf) on generated data in a Docker volume.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[1],
    )
    parser.add_argument("--size", default="500M", help="data size of the main volume (K/M/G, powers of 1024)")
    parser.add_argument("--files", type=int, default=20_000, help="approximate file count of the main volume")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (alternating order)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the data generator")
    parser.add_argument(
        "--small-files",
        type=int,
        default=0,
        metavar="N",
        help="also run every case on a second volume of N small files (P1's 1M-file volume)",
    )
    parser.add_argument("--small-size", default=None, help="data size of that volume (default: N KiB)")
    parser.add_argument(
        "--scaling",
        default="",
        metavar="N,N,...",
        help="P3: also run on volumes of these file counts at --scaling-bytes-per-file each",
    )
    parser.add_argument("--scaling-bytes-per-file", default="1K", help="data per file of the scaling volumes")
    parser.add_argument(
        "--cases",
        default=None,
        help=f"comma list from {', '.join(CASES)} (default {','.join(DEFAULT_CASES)}; none with --downtime)",
    )
    parser.add_argument(
        "--downtime",
        action="store_true",
        help="P2: container downtime of coord's stop, pause and snapshot on the main volume, a container running",
    )
    parser.add_argument(
        "--strategies",
        default=",".join(DOWNTIME_STRATEGIES),
        help="with --downtime: comma list of coord strategies to compare",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="DIR",
        help="source tree of another coord (DIR/src), timed as the case coord-before beside coord",
    )
    parser.add_argument("--gpg", action="store_true", help="add zstd+gpg and coord+gpg (a throw-away key)")
    parser.add_argument("--no-main", action="store_true", help="skip the main volume (with --scaling)")
    parser.add_argument("--no-phases", action="store_true", help="skip the in-process run that splits coord's time")
    parser.add_argument(
        "--keep-volumes",
        action="store_true",
        help="keep the generated volumes and reuse them in the next run with the same parameters",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="work directory (archives, JSON)")
    return parser.parse_args(argv)  # fmt: skip


def check_environment(cases: Sequence[Case], downtime: bool = False) -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root: the data is written into the volumes' Mountpoint under /var/lib/docker")
    tools = {"docker", "tar", "zstd", "gzip", "bash", "sync", "findmnt"}
    if any(case.name.startswith("pzstd") for case in cases):
        tools.add("pzstd")
    if any(case.needs_gpg for case in cases):
        tools |= {"gpg", "gpgconf"}
    problems += [f"{tool} is not on PATH" for tool in sorted(tools) if shutil.which(tool) is None]
    if not os.access(GNU_TIME, os.X_OK):
        problems.append(f"no {GNU_TIME} (GNU time measures CPU and peak RSS): apt-get install time")
    if not (REPO / ".venv" / "bin" / "coord").exists():
        problems.append("no .venv/bin/coord: run scripts/bootstrap.sh first")
    if downtime and subprocess.run(["docker", "image", "inspect", SERVICE_IMAGE], capture_output=True).returncode:
        problems.append(f"no image {SERVICE_IMAGE} (nothing is pulled): run scripts/build-test-images.sh")
    if problems:
        sys.exit("bench: " + "; ".join(problems))


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_arguments(argv)
    # SIGTERM ends the run like Ctrl-C: through the finally blocks that remove the container and the volumes
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if options.cases is None:
        options.cases = "" if options.downtime else ",".join(DEFAULT_CASES)
    names = [name.strip() for name in options.cases.split(",") if name.strip()]
    strategies = [name.strip() for name in options.strategies.split(",") if name.strip()]
    if options.downtime and (options.no_main or not strategies):
        sys.exit("bench: --downtime runs on the main volume: drop --no-main, give --strategies")
    wrong = [name for name in strategies if name not in ("live", "pause", "stop", "snapshot", "auto")]
    if wrong:
        sys.exit(f"bench: unknown strategy {', '.join(wrong)}; choose from live, pause, stop, snapshot, auto")
    if options.gpg:
        names += [name for name in ("zstd+gpg", "coord+gpg") if name not in names]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        sys.exit(f"bench: unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    cases = [CASES[name] for name in names]
    if "coord-before" in names and not (options.before and (options.before / "src" / "coord").is_dir()):
        sys.exit("bench: coord-before needs --before DIR holding another coord's src/coord")
    check_environment(cases, options.downtime)
    coord = REPO / ".venv" / "bin" / "coord"
    reasons = {case.name: case.unavailable(coord) for case in cases if case.unavailable}
    skipped = {name: reason for name, reason in reasons.items() if reason}
    cases = [case for case in cases if case.name not in skipped]

    datasets = []
    if not options.no_main:
        datasets.append(DataSet(datagen.parse_size(options.size), options.files, options.seed, "main"))
    if options.small_files:
        size = datagen.parse_size(options.small_size) if options.small_size else options.small_files * 1024
        datasets.append(DataSet(size, options.small_files, options.seed, "small-files"))
    per_file = datagen.parse_size(options.scaling_bytes_per_file)
    for count in (int(text) for text in options.scaling.split(",") if text.strip()):
        datasets.append(DataSet(count * per_file, count, options.seed, "scaling"))
    datasets = list(dict.fromkeys(datasets))

    options.out.mkdir(parents=True, exist_ok=True)
    context = Context(out=options.out, coord=coord, python=REPO / ".venv" / "bin" / "python")
    context.before_source = options.before.resolve() if options.before else None
    host = machine()
    all_runs: list[Run] = []
    phases: dict[str, dict] = {}
    prepared_sets: list[Prepared] = []
    downtime_runs: list[DowntimeRun] = []
    bare: list[BareCycle] = []
    report: list[str] = []
    try:
        if any(case.needs_gpg for case in cases):
            set_up_gpg(context)
        for dataset in datasets:
            prepared = prepare(dataset, options.out, options.keep_volumes)
            prepared_sets.append(prepared)
            runs = []
            order = [case.name for case in cases if dataset.role != "scaling" or case.name in ("zstd", "coord")]
            for round_number in range(options.repeat):
                for name in order if round_number % 2 == 0 else reversed(order):
                    run = run_case(context, CASES[name], prepared, round_number)
                    runs.append(run)
                    log(f"{dataset.volume} round {round_number + 1}/{options.repeat} {name:12s} "
                        f"{run.wall_s:7.2f} s wall {run.cpu_s:7.2f} s CPU  "
                        f"load {run.load_before:.2f} -> {run.load_after:.2f}")  # fmt: skip
            if not options.no_phases and "coord" in order:
                phases[dataset.volume] = run_phases(context, prepared)
            all_runs += runs
            if dataset.role != "scaling" and runs:
                report += report_dataset(prepared, runs, phases.get(dataset.volume))
            if options.downtime and dataset.role == "main":
                downtime_runs, bare = run_downtime(context, prepared, strategies, options.repeat)
                report += report_downtime(prepared, downtime_runs, bare)
        scaling = [p for p in prepared_sets if p.dataset.role == "scaling"]
        if scaling:
            report += report_scaling(scaling, all_runs, phases)
    finally:
        tear_down_gpg(context)
        if not options.keep_volumes:
            for prepared in prepared_sets:
                subprocess.run(["docker", "volume", "rm", prepared.dataset.volume], capture_output=True)
                (options.out / "volumes" / f"{prepared.dataset.volume}.json").unlink(missing_ok=True)
        shutil.rmtree(options.out / "policies", ignore_errors=True)

    header = [
        "## Benchmark run",
        "",
        "Command: `" + shlex.join(["python3", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]) + "`",
        "",
        *(f"- {key}: {value}" for key, value in host.items()),
        f"- rounds per case{' and strategy' if options.downtime else ''}: {options.repeat}, alternating order; "
        "page cache warmed once per volume (not dropped); `sync` before every timed run",
        *(f"- not measured: {name}: {reason}" for name, reason in skipped.items()),
        "",
    ]
    text = "\n".join(header + report)
    print(text)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = options.out / f"results-{stamp}.json"
    results.write_text(
        json.dumps(
            {
                "machine": host,
                "arguments": {key: str(v) if isinstance(v, Path) else v for key, v in vars(options).items()},
                "datasets": [{"volume": p.dataset.volume, "spec": p.dataset.spec, **p.summary} for p in prepared_sets],
                "runs": [asdict(run) for run in all_runs],
                "downtime_runs": [asdict(run) for run in downtime_runs],
                "docker_bare": [asdict(cycle) for cycle in bare],
                "coord_phases": phases,
                "report": text,
            },
            indent=2,
        )
    )
    log(f"results: {results}")


def run_phases(context: Context, prepared: Prepared) -> dict:
    """coord once in-process (bench/coord_phases.py) for the split of its time; not counted in the medians."""
    work = Path(tempfile.mkdtemp(prefix="phases-", dir=context.out))
    try:
        os.sync()
        _, out, _ = measure([
            str(context.python), str(Path(__file__).resolve().parent / "coord_phases.py"),
            "--policies-dir", str(prepared.policies_dir), "--dest", str(work / "dest"),
            "--state-dir", str(context.out / "state"),
        ])  # fmt: skip
        document = json.loads(out)
        log(f"{prepared.dataset.volume} coord steps: " + ", ".join(
            f"{key} {value}" for key, value in document.items() if isinstance(value, float | int)
        ))  # fmt: skip
        return document
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
