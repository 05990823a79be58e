#!/usr/bin/env python3
"""bench/run.py's archive cases on a plain directory, with no Docker engine: for a machine that has none (the
16-core run of issue 16, bench/device.sh). coord runs through bench/dircoord.py (tests/fakes.py's engine, strategy
live); tar, zstd, pzstd are the real ones.

    python3 bench/dirbench.py --size 2G --files 50000 --small-files 200000 --repeat 3 --work /tmp/w --out OUT

Cases (as in bench/run.py): zstd = `tar | zstd -3 -T0 > f`; zstd+check = the shell doing coord's in-line check,
`tar | zstd | tee >(zstd -d | tar -t) > f; sync f`; pzstd and pzstd+check the same with independent frames on every
core; coord; coord-before (--before DIR: another coord's source tree). Rounds alternate the order (A B C, C B A).
Wall time, and CPU of the whole process tree (wait4: user+sys of every waited-for descendant). Writes
OUT/dirbench.json and OUT/dirbench.md, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import datagen  # noqa: E402 - a sibling module, found through the line above


@dataclass
class Run:
    case: str
    data: str
    round: int
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float
    archive_bytes: int


def shell_cases(workers: int) -> dict[str, str]:
    """Shell text per case; SRC and OUT are the directory and the archive, FIFO a named pipe for the check."""
    pz, pzd = f"pzstd -q -3 -p {workers}", f"pzstd -q -d -c -p {workers}"

    def checked(compressor: str, decompressor: str) -> str:
        return (
            f'mkfifo "$FIFO" && {{ {decompressor} < "$FIFO" | tar -tf - > /dev/null & }} && listing=$! && '
            f'tar -C "$SRC" -cf - . | {compressor} | tee "$FIFO" > "$OUT" && wait $listing && sync "$OUT"'
        )

    return {
        "zstd": 'tar -C "$SRC" -cf - . | zstd -3 -T0 -q > "$OUT"',
        "zstd+check": checked("zstd -3 -T0 -q", "zstd -q -d -c"),
        "pzstd": f'tar -C "$SRC" -cf - . | {pz} > "$OUT"',
        "pzstd+check": checked(pz, pzd),
    }


def run_once(case: str, source: Path, work: Path, options: argparse.Namespace) -> tuple[float, float, int]:
    """One timed run of `case` on the directory `source`: wall s, CPU s, archive bytes."""
    scratch = work / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    os.sync()
    env = dict(os.environ, LC_ALL="C")
    before = os.times()
    if case.startswith("coord"):
        policies = scratch / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(f"volumes: [{source.name}]\nstrategy: live\n")
        if case == "coord-before":
            env["PYTHONPATH"] = f"{options.before / 'src'}:{env.get('PYTHONPATH', '')}"
        argv = [sys.executable, str(BENCH / "dircoord.py"), "--volumes-root", str(source.parent), "--volume"]
        argv += [source.name, "--policies-dir", str(policies), "--dest", str(scratch / "dest")]
        argv += ["--state-dir", str(scratch / "state")]
        started = time.perf_counter()
        completed = subprocess.run(argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        document = json.loads(completed.stdout or "{}")
        if completed.returncode != 0 or not document.get("ok"):
            raise RuntimeError(f"{case} failed (exit {completed.returncode}): {completed.stdout}{completed.stderr}")
    else:
        env.update(SRC=str(source), OUT=str(scratch / "out.tar.zst"), FIFO=str(scratch / "check.fifo"))
        started = time.perf_counter()
        completed = subprocess.run(["bash", "-o", "pipefail", "-c", shell_cases(options.workers)[case]], env=env)
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"{case} failed (exit {completed.returncode})")
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    archive = sum(p.stat().st_size for p in scratch.rglob("*.tar.zst") if p.is_file())
    shutil.rmtree(scratch, ignore_errors=True)
    return wall, cpu, archive


def run_dataset(source: Path, label: str, options: argparse.Namespace, runs: list[Run]) -> None:
    subprocess.run(f"tar -C {shlex.quote(str(source))} -cf - . | cat > /dev/null", shell=True, check=True)  # warm
    for round_number in range(options.repeat):
        order = options.cases if round_number % 2 == 0 else list(reversed(options.cases))
        for case in order:
            load_before = os.getloadavg()[0]
            wall, cpu, archive = run_once(case, source, options.work, options)
            run = Run(case, label, round_number, wall, cpu, load_before, os.getloadavg()[0], archive)
            runs.append(run)
            print(f"{label} round {round_number + 1} {case:13s} {wall:7.2f} s wall {cpu:7.2f} s CPU "
                  f"load {run.load_before:.2f} -> {run.load_after:.2f}", file=sys.stderr, flush=True)  # fmt: skip


def ratio(runs: list[Run], top: str, bottom: str) -> str | None:
    """'top / bottom = x paired (per round ...)' for one data set's runs, or None when a case is missing."""
    a = {r.round: r.wall_s for r in runs if r.case == top}
    b = {r.round: r.wall_s for r in runs if r.case == bottom}
    paired = [a[k] / b[k] for k in a if k in b]
    if not paired:
        return None
    rounds = ", ".join(f"{x:.2f}" for x in paired)
    return f"- {top} / {bottom} = {statistics.median(paired):.3f}x paired median (per round: {rounds})"


def report(runs: list[Run], summaries: dict[str, dict[str, int]], host: dict[str, str]) -> str:
    lines = ["## dirbench", "", *(f"- {key}: {value}" for key, value in host.items()), ""]
    for label, summary in summaries.items():
        mine = [r for r in runs if r.data == label]
        lines += [f"### {label}: {summary['files']:,} files, {datagen.format_size(summary['bytes'])}", ""]
        lines += ["| case | median wall s | min wall s | median CPU s | archive |", "|---|---:|---:|---:|---:|"]
        for case in dict.fromkeys(r.case for r in mine):
            of = [r for r in mine if r.case == case]
            lines.append(
                f"| {case} | {statistics.median(r.wall_s for r in of):.2f} | {min(r.wall_s for r in of):.2f} | "
                f"{statistics.median(r.cpu_s for r in of):.2f} | "
                f"{datagen.format_size(int(statistics.median(r.archive_bytes for r in of)))} |"
            )
        lines.append("")
        pairs = [("coord", "zstd"), ("coord-before", "zstd"), ("coord", "coord-before"), ("zstd+check", "zstd"),
                 ("pzstd", "zstd"), ("pzstd+check", "zstd"), ("coord", "pzstd+check")]  # fmt: skip
        lines += [line for top, bottom in pairs if (line := ratio(mine, top, bottom))]
        loads = [r.load_before for r in mine] + [r.load_after for r in mine]
        lines += [f"- load average (1 min) around the runs: {min(loads):.2f} to {max(loads):.2f}", ""]
    return "\n".join(lines)


def machine(workers: int) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            completed = subprocess.run(argv, capture_output=True, text=True)
            return (completed.stdout or completed.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            return "missing"

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores (affinity) / workers": f"{len(os.sched_getaffinity(0))} / {workers}",
        "cpu": next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tar": first_line(["tar", "--version"]),
        "zstd": first_line(["zstd", "--version"]),
        "pzstd": first_line(["pzstd", "--version"]),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", default="2G", help="data of the main set (K/M/G)")
    parser.add_argument("--files", type=int, default=50_000, help="files of the main set")
    parser.add_argument("--small-files", type=int, default=200_000, help="files of the small-file set (0: none)")
    parser.add_argument("--small-size", default=None, help="data of the small-file set (default: 1 KiB a file)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="zstd,zstd+check,pzstd,pzstd+check,coord,coord-before")
    parser.add_argument("--before", type=Path, default=None, help="another coord's source tree (DIR/src)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="pzstd -p")
    parser.add_argument("--work", type=Path, required=True, help="where the data and the archives go")
    parser.add_argument("--out", type=Path, required=True, help="where dirbench.json and dirbench.md go")
    options = parser.parse_args()
    options.cases = [case.strip() for case in options.cases.split(",") if case.strip()]
    if "coord-before" in options.cases and not (options.before and (options.before / "src" / "coord").is_dir()):
        options.cases.remove("coord-before")
        print("dirbench: no --before DIR with src/coord: coord-before not run", file=sys.stderr)
    return options


def main() -> None:
    options = parse_arguments()
    options.out.mkdir(parents=True, exist_ok=True)
    host = machine(options.workers)
    sets = [("main", datagen.parse_size(options.size), options.files)]
    if options.small_files:
        small = datagen.parse_size(options.small_size) if options.small_size else options.small_files * 1024
        sets.append(("small", small, options.small_files))
    runs: list[Run] = []
    summaries: dict[str, dict[str, int]] = {}
    for role, size, files in sets:
        label = f"{role}-{datagen.format_size(size).replace(' ', '')}-{files}"
        source = options.work / "volumes" / label
        if not source.is_dir():
            started = time.perf_counter()
            summary = datagen.write_tree(str(source), size, files, seed=1)
            print(f"{label}: generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
            summaries[label] = asdict(summary)
        else:
            summaries[label] = {"files": files, "bytes": size}
        run_dataset(source, label, options, runs)
        text = report(runs, summaries, host)  # written after every data set: a run stopped later keeps these
        (options.out / "dirbench.md").write_text(text + "\n")
        document = {"machine": host, "arguments": {k: str(v) for k, v in vars(options).items()}, "runs": []}
        document["runs"] = [asdict(run) for run in runs]
        (options.out / "dirbench.json").write_text(json.dumps(document, indent=2))
    print(report(runs, summaries, host))


if __name__ == "__main__":
    main()
