"""The `coord` command line. Parses options, calls one function, prints; errors become exit codes here only."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from coord import __version__
from coord.errors import EXIT_FAILED, EXIT_OK, CoordError, PolicyError, UsageError
from coord.grammar import plural
from coord.policy import LoadedPolicy, current_policy_names, load_policies, render_json_schema
from coord.render import human_size, run_summary
from coord.results import RunResult
from coord.runner import DEFAULT_STATE_DIR, BackupRequest
from coord.signals import Interrupted
from coord.sources import VolumeSources, own_container_id
from coord.targets import Target

if TYPE_CHECKING:
    from coord.monitoring import Monitoring
    from coord.run_records import RecordPrune

T = TypeVar("T")

app = typer.Typer(
    name="coord",
    help=(
        "Back up Docker named volumes consistently: per-volume policies decide whether containers keep running "
        "(live), are paused or stopped while their volume is archived.\n\n"
        "Exit codes: 0 all volumes ok/warning/excluded; 1 a volume failed or the run could not be done; "
        "2 usage or policy error (nothing touched)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could print secrets; errors are handled below
    add_completion=False,
    rich_markup_mode=None,
)


PoliciesDir = Annotated[
    Path,
    typer.Option(
        "--policies-dir",
        envvar="COORD_POLICIES_DIR",
        help="Directory of policy files (*.yaml), one per workload. Env: COORD_POLICIES_DIR.",
        show_default=True,
    ),
]
CurrentPoliciesDir = Annotated[
    Path | None,
    typer.Option(
        "--policies-dir",
        envvar="COORD_POLICIES_DIR",
        help="The policies in force: volumes whose policy is no longer there are marked gone. Without it (and "
        "without COORD_POLICIES_DIR) only what the history itself shows marks a volume gone.",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout (see README).")]
DestOption = Annotated[
    Path | None,
    typer.Option(
        "--dest", help="Directory holding the archives, as <dest>/<volume>/... Env: COORD_DEST.", envvar="COORD_DEST"
    ),
]
StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="COORD_STATE_DIR",
        help="Where coord keeps its lock, its journal of containers it paused or stopped, and the GnuPG home "
        "for recipient keys (<state-dir>/gnupg: keep the path short, gpg-agent's sockets live there). "
        "Env: COORD_STATE_DIR.",
    ),
]
LockTimeout = Annotated[
    float,
    typer.Option("--lock-timeout", help="Seconds to wait for another coord run to finish before giving up (exit 1)."),
]
VolumesRoot = Annotated[
    Path | None,
    typer.Option(
        "--volumes-root",
        envvar="COORD_VOLUMES_ROOT",
        help="Sidecar mode: volumes are mounted into this container at DIR/<volume name> (default /volumes when "
        "coord finds itself in a container). Without it, on the host, volumes are read at their Mountpoint. "
        "Env: COORD_VOLUMES_ROOT.",
    ),
]
Dest = Annotated[
    Path | None,
    typer.Option(
        help="Directory archives are written to, as <dest>/<volume>/<volume>-<UTC time>.tar.zst. Env: COORD_DEST.",
        envvar="COORD_DEST",
    ),
]
TargetNames = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="Write only to this target (repeatable): a name from _defaults.yaml `targets:`, or `local` for --dest.",
    ),
]
RcloneConfig = Annotated[
    Path | None,
    typer.Option(
        "--rclone-config",
        help="rclone's configuration file defining the remotes of rclone targets (default: rclone's own, "
        "RCLONE_CONFIG or ~/.config/rclone/rclone.conf, and RCLONE_CONFIG_<REMOTE>_<KEY> variables).",
    ),
]
ScheduleOption = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        envvar="COORD_SCHEDULE",
        help=(
            "Cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first, or @daily...; "
            "in the machine's time zone ($TZ). Env: COORD_SCHEDULE."
        ),
    ),
]
Jitter = Annotated[
    float,
    typer.Option(
        "--jitter", envvar="COORD_JITTER", help="Delay each scheduled run by a random 0..N seconds. Env: COORD_JITTER."
    ),
]
MetricsFile = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        envvar="COORD_METRICS_FILE",
        help="Write Prometheus metrics to this file after each run, for node_exporter's textfile collector (a name "
        "ending in .prom; replaced atomically). Overrides metrics.file of _defaults.yaml. Env: COORD_METRICS_FILE.",
    ),
]
PolicyNames = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        "-p",
        metavar="NAME",
        help="Policy to run (file name without .yaml); repeat for several. Default: all.",
    ),
]
PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        envvar="COORD_PASSPHRASE_FILE",
        help="File whose first line is the passphrase (symmetric encryption, or a passphrase-protected secret "
        "key). Env: COORD_PASSPHRASE_FILE.",
    ),
]
GpgHome = Annotated[
    Path | None,
    typer.Option(
        "--gpg-home",
        help="GnuPG home holding the secret key of a recipient, for archives encrypted to public keys. "
        "Default: $GNUPGHOME or ~/.gnupg.",
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"coord {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step to stderr.")] = False,
) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="coord: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # the level sits on the handler: a run may capture INFO records
        handler.setLevel(level)  # for its notifications (notify.LogTail) without printing them here


@contextmanager
def _handle_errors(as_json: bool = False) -> Iterator[None]:
    """Turn coord's errors into one message and an exit code; never a traceback for an expected problem."""
    try:
        yield
    except CoordError as error:
        if as_json:
            print(json.dumps({"ok": False, "volumes": [], "errors": _error_lines(error)}))
        # plain writes, not rich: an error message must never be re-wrapped to the terminal width
        print(f"coord: error: {error.message}", file=sys.stderr)
        raise typer.Exit(error.exit_code) from None
    except Interrupted as interruption:
        if as_json:
            print(json.dumps({"ok": False, "volumes": [], "errors": [f"interrupted by {interruption}"]}))
        print(f"coord: interrupted by {interruption}; every container coord changed was put back", file=sys.stderr)
        raise typer.Exit(interruption.exit_code) from None
    except KeyboardInterrupt:
        print("coord: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except OSError as error:  # a file coord needs (state dir, destination) that the system refused: exit 1
        where = f"{error.filename}: " if error.filename else ""
        message = f"{where}{error.strerror or error}"
        if as_json:
            print(json.dumps({"ok": False, "volumes": [], "errors": [message]}))
        print(f"coord: error: {message}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None


def _error_lines(error: CoordError) -> list[str]:
    return list(error.problems) if isinstance(error, PolicyError) else [error.message]


def _run(as_json: bool, work: Callable[[], T]) -> T:
    with _handle_errors(as_json):
        return work()
    raise AssertionError("unreachable")  # pragma: no cover


class _ConsoleProgress:
    """Progress on a terminal (stderr): what happens to containers as it happens (the `coord.steps` log), and
    a bar for the archiving step with bytes written, a percentage and an ETA when the volume's last archive
    gives an expected size (`expected_size`, from the history)."""

    def __init__(self, expected_size: Callable[[str], int | None] = lambda volume: None) -> None:
        # Imported here: rich costs ~40 ms at start-up, paid only when a terminal shows the progress.
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self._expected_size = expected_size
        self._display: Any = None
        self._task: Any = None
        self._total: int | None = None
        self._steps = _StepLines(self.console)

    def __enter__(self) -> _ConsoleProgress:
        steps = logging.getLogger("coord.steps")
        steps.addHandler(self._steps)
        steps.setLevel(logging.INFO)
        steps.propagate = False  # shown here already; -v would print each line twice
        return self

    def __exit__(self, *exception: object) -> None:
        self.end()
        steps = logging.getLogger("coord.steps")
        steps.removeHandler(self._steps)
        steps.propagate = True

    def begin(self, volume: str) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        try:
            self._total = self._expected_size(volume)
        except CoordError:  # an unreadable history costs the estimate, never the backup
            self._total = None
        estimate = [BarColumn(), TaskProgressColumn(), TimeRemainingColumn()] if self._total else []
        self._display = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            *estimate,
            TextColumn("{task.fields[written]}, {task.fields[entries]:,} entries"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._display.start()
        self._task = self._display.add_task(
            f"archiving {volume}", total=self._total, entries=0, written=self._written(0)
        )

    def _written(self, written_bytes: int) -> str:
        if self._total:
            return f"{human_size(written_bytes)} of ~{human_size(self._total)}"
        return human_size(written_bytes)

    def update(self, entries: int, written_bytes: int) -> None:
        if self._display is not None:
            if self._total and written_bytes > self._total:  # bigger than last time: the estimate was low
                self._total = written_bytes
                self._display.update(self._task, total=self._total)
            self._display.update(
                self._task, completed=written_bytes, entries=entries, written=self._written(written_bytes)
            )

    def end(self) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None


class _StepLines(logging.Handler):
    """Prints each `coord.steps` record as a line on the terminal, above a progress bar if one is drawn."""

    def __init__(self, console: Any) -> None:
        super().__init__(logging.INFO)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        self._console.print(f"coord: {record.getMessage()}", markup=False, soft_wrap=True)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def print_run_summary(result: RunResult) -> None:
    """One short block per volume: status, what was written, what went wrong (render.run_summary)."""
    print("\n".join(run_summary(result)))


@app.command()
def backup(
    policy: PolicyNames = None,
    policies_dir: PoliciesDir = Path("policies"),
    dest: Dest = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    lock_timeout: LockTimeout = 0.0,
    volumes_root: VolumesRoot = None,
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file",
            envvar="COORD_PASSPHRASE_FILE",
            help="Encrypt (symmetric AES256) the volumes whose policy has no 'encrypt:' with the passphrase on this "
            "file's first line. Env: COORD_PASSPHRASE_FILE.",
        ),
    ] = None,
    metrics_file: MetricsFile = None,
    target: TargetNames = None,
    rclone_config: RcloneConfig = None,
    as_json: JsonFlag = False,
) -> None:
    """Back up the volumes selected by the policies: quiesce per strategy, archive, put containers back,
    validate, write a manifest beside each archive. Runs `coord recover` first; records the run in the history,
    sends the notifications and dead-man pings of <policies dir>/_defaults.yaml and of the policies, and writes
    the metrics file."""
    from coord.gateway_client import connect_engine
    from coord.history import History
    from coord.recording import MANUAL, Watch, run_and_record

    def work() -> RunResult:
        request = BackupRequest(
            policies_dir=policies_dir,
            dest=dest,
            policy_names=tuple(policy or ()),
            state_dir=state_dir,
            lock_timeout_s=lock_timeout,
            sources=VolumeSources.detect(volumes_root),
            passphrase_file=passphrase_file,
        )
        request, monitoring = _checked_request(request, target or (), rclone_config, metrics_file)
        history = History(state_dir)
        if not sys.stderr.isatty() or as_json:
            result, _ = run_and_record(request, connect_engine, history, monitoring, MANUAL)
            return result
        with _ConsoleProgress(history.last_archive_size) as progress:
            result, _ = run_and_record(request, connect_engine, history, monitoring, MANUAL, Watch(progress))
        return result

    result = _run(as_json, work)
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        print_run_summary(result)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


def _checked_request(
    request: BackupRequest, target_names: Sequence[str], rclone_config: Path | None, metrics_file: Path | None
) -> tuple[BackupRequest, Monitoring]:
    """The request with its targets resolved (_defaults.yaml `targets:`, --dest as `local`, --target), and the
    notifications, pings and metrics file of _defaults.yaml (`metrics_file` overrides its metrics.file), after
    checking the policies (their `targets:` too) and the defaults before Docker is contacted. Raises
    PolicyError/UsageError."""
    from coord.defaults import load_defaults
    from coord.monitoring import Monitoring
    from coord.targets import check_policy_targets, resolve_targets

    loaded = load_policies(request.policies_dir, request.policy_names or None)
    defaults = load_defaults(request.policies_dir)
    check_policy_targets(loaded, defaults.targets, request.dest)
    if rclone_config is not None and not rclone_config.is_file():
        raise UsageError(f"--rclone-config {rclone_config}: no such file")
    targets = resolve_targets(defaults.targets, request.dest, target_names, rclone_config)
    monitoring = Monitoring(defaults.notify, defaults.ping, metrics_file or defaults.metrics.file)
    return replace(request, targets=tuple(targets)), monitoring


@app.command()
def plan(
    policy: PolicyNames = None,
    policies_dir: PoliciesDir = Path("policies"),
    volumes_root: VolumesRoot = None,
    dest: Dest = None,
    target: TargetNames = None,
    as_json: JsonFlag = False,
) -> None:
    """Show, touching nothing, each volume, its strategy, its targets, its containers and the exact actions backup
    would take, and the volumes no policy covers (not backed up). Exit 1 when a volume would fail, 2 for a policy
    error."""
    from coord.backup.plan import describe_group
    from coord.backup.steps import remote_only_volumes
    from coord.docker_ops import swarm_place
    from coord.gateway_client import connect_engine
    from coord.node import node_of_engine
    from coord.plan import group_volumes, plan_volumes, uncovered_volumes
    from coord.targets import targets_of

    def work() -> tuple[list[dict[str, Any]], list[str], str | None]:
        loaded = load_policies(policies_dir, policy or None)
        docker = connect_engine()
        node = node_of_engine(docker)  # a Swarm node's archives go to _nodes/<node>/ on every target
        run_targets = [t.for_node(node) for t in _planned_targets(loaded, policies_dir, dest, target or ())]
        existing = docker.volume_names()
        plans = plan_volumes(loaded, existing, policy or None)
        groups = [
            {
                "strategy": group.strategy.value,
                "volumes": [
                    {
                        "volume": p.volume,
                        "policy": p.policy.name,
                        "error": p.error or group.errors.get(p.volume),
                        "targets": [t.describe() for t in targets_of(p.policy.policy, run_targets)],
                        # where its archives go on each: `offsite:pg_data/`, on a Swarm node `offsite:node1/pg_data/`
                        "archives_to": [t.where(p.volume) for t in targets_of(p.policy.policy, run_targets)],
                    }
                    for p in group.volumes
                ],
                "containers": [{"name": c.name, "state": c.state, **swarm_place(c)} for c in group.containers],
                "steps": describe_group(group, remote_only_volumes(group.volumes, run_targets)),
            }
            for group in group_volumes(plans, docker, own_container_id())
        ]
        return groups, uncovered_volumes(loaded, existing), node

    groups, uncovered, node = _run(as_json, work)
    failing = [volume for group in groups for volume in group["volumes"] if volume["error"]]
    sources = VolumeSources.detect(volumes_root)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not failing,
                    "mode": sources.mode,
                    "volumes_root": _text(sources.volumes_root),
                    "node": node,  # the Swarm node whose namespace the archives go to; null outside a swarm
                    "groups": groups,
                    "uncovered": uncovered,
                }
            )
        )
    else:
        print(sources.describe())
        if node is not None:
            print(f"Swarm node {node}: archives go to <target>/_nodes/{node}/<volume>/ on every target")
        for group in groups:
            names = ", ".join(f"{v['volume']} (policy {v['policy']})" for v in group["volumes"])
            print(f"\n{group['strategy']}: {names}")
            for step in group["steps"]:
                print(f"  {step}")
            for volume in group["volumes"]:
                print(f"  {volume['volume']} -> {', '.join(volume['targets']) or 'no target (give --dest or targets)'}")
                if node is not None and volume["archives_to"]:  # outside a swarm: <target>:<volume>/, as always
                    print(f"    archives to {', '.join(volume['archives_to'])}")
        if uncovered:
            print(f"\nnot backed up, no policy covers them: {', '.join(uncovered)}")
        if failing:
            print(f"\n{plural(len(failing), 'volume')} would fail: {', '.join(v['volume'] for v in failing)}")
    raise typer.Exit(EXIT_FAILED if failing else EXIT_OK)


@app.command()
def recover(
    state_dir: StateDir = DEFAULT_STATE_DIR, lock_timeout: LockTimeout = 0.0, as_json: JsonFlag = False
) -> None:
    """Put back containers a crashed coord run left paused or stopped (from its journal), remove its partial
    archives. Only containers still in the state coord put them in are touched. Every backup does this first."""
    from coord.gateway_client import connect_engine
    from coord.journal import Journal
    from coord.lock import run_lock
    from coord.recovery import RecoveryReport
    from coord.recovery import recover as recover_journal

    def work() -> RecoveryReport:
        with run_lock(state_dir, lock_timeout):
            return recover_journal(Journal(state_dir), connect_engine())

    report = _run(as_json, work)
    if as_json:
        print(json.dumps({"ok": not report.errors, **report.to_json()}))
    else:
        for line in report.restored:
            print(line)
        for path in report.removed_partials:
            print(f"removed partial archive {path}")
        for line in report.left_alone:
            print(f"warning: {line}")
        for error in report.errors:
            print(f"error: {error}")
        if report.nothing_to_do:
            print("nothing to recover: no container left paused or stopped by coord")
    raise typer.Exit(EXIT_FAILED if report.errors else EXIT_OK)


def _planned_targets(
    loaded: list[LoadedPolicy], policies_dir: Path, dest: Path | None, names: Sequence[str]
) -> list[Target]:
    """The targets a backup would write to, for `coord plan`: none when none is given (plan needs no
    destination). Raises PolicyError for a policy naming an unknown target, UsageError for an unknown --target."""
    from coord.defaults import load_defaults
    from coord.targets import check_policy_targets, resolve_targets

    defaults = load_defaults(policies_dir)
    check_policy_targets(loaded, defaults.targets, dest)
    if not defaults.targets and dest is None:
        return []
    return resolve_targets(defaults.targets, dest, names)


@app.command()
def validate(
    policies_dir: PoliciesDir = Path("policies"),
    with_docker: Annotated[
        bool,
        typer.Option(
            "--docker",
            help="Also check against the Docker engine: volumes that do not exist, globs matching no volume, "
            "volumes matched by two policies' globs.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check every policy file in the directory; report every problem with file, line and key. Exit 2 if any.

    Without --docker nothing but the files is read; with it, the engine is asked which volumes exist."""
    from coord.defaults import Defaults, load_defaults
    from coord.targets.config import LOCAL_TARGET, unknown_target_problems

    def work() -> list[str]:
        problems: list[str] = []
        loaded = []
        defaults: list[Defaults] = []

        def read_policies() -> None:
            loaded.extend(load_policies(policies_dir))

        def read_defaults() -> None:
            defaults.append(load_defaults(policies_dir))

        for check in (read_policies, read_defaults):
            try:
                check()
            except PolicyError as error:
                problems += error.problems
        if defaults:  # `local` may come from --dest at run time
            problems += unknown_target_problems(loaded, {*defaults[0].targets, LOCAL_TARGET})
        if with_docker and not problems:
            from coord.gateway_client import connect_engine
            from coord.plan import engine_problems

            problems += engine_problems(loaded, connect_engine().volume_names())
        if problems:
            raise PolicyError(problems)
        return [item.name for item in loaded]

    names = _run(as_json, work)
    if as_json:
        print(json.dumps({"ok": True, "policies": names, "errors": []}))
    else:
        valid = "valid against the engine" if with_docker else "valid"
        print(f"{plural(len(names), 'policy', 'policies')} {valid} in {policies_dir}: {', '.join(names)}")


@app.command()
def policies(policies_dir: PoliciesDir = Path("policies"), as_json: JsonFlag = False) -> None:
    """List the policies with the volumes they select and their strategy."""

    def work() -> list[dict[str, Any]]:
        return [
            {
                "policy": item.name,
                "file": str(item.path),
                "strategy": item.policy.strategy.value,
                "volumes": list(item.policy.volumes),
                "exclude": list(item.policy.exclude),
                "description": item.policy.description,
            }
            for item in load_policies(policies_dir)
        ]

    rows = _run(as_json, work)
    if as_json:
        print(json.dumps({"ok": True, "policies": rows}))
        return
    for row in rows:
        print(f"{row['policy']}: {row['strategy']} {', '.join(row['volumes'])}  ({row['file']})")


ReadTargets = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        metavar="NAME",
        help="Only this target (a name from _defaults.yaml `targets:`, or `local` for --dest); repeatable. "
        "Default: every target.",
    ),
]
LatestTarget = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        metavar="NAME",
        help="The target --latest reads (a name from _defaults.yaml `targets:`, or `local` for --dest). Default: "
        "--dest when given, else the only target.",
    ),
]
ArchiveOrRef = Annotated[
    str | None,
    typer.Argument(
        metavar="ARCHIVE",
        help="An archive file (its manifest beside it), or a ref as `coord list` prints it: <target>:<volume>/<file>, "
        "or <target>:<node>/<volume>/<file> for a Swarm node's archive.",
    ),
]


ReadNode = Annotated[
    str | None,
    typer.Option(
        "--node",
        metavar="NAME",
        help="Read the archives Swarm node NAME wrote (<target>/_nodes/NAME/), e.g. to restore a dead node's "
        "volume on another node. Default: on a Swarm node, its own; elsewhere the flat layout.",
    ),
]


# verify and restore: a ref names its archive whole, so these options choose among archives only with --latest
TARGET_WITHOUT_LATEST = "--target goes with --latest; a ref names its target itself (<target>:<volume>/<file>)"
NODE_WITHOUT_LATEST = "--node goes with --latest; a ref names its node itself (<target>:<node>/<volume>/<file>)"

def _read_namespace(node: str | None, *, deleting: bool = False) -> str | None:
    """Whose archives a read command reads on its targets: --node NAME, else this engine's Swarm node (its name:
    coord.node.node_of_engine), else None (not a Swarm node: the flat layout). An engine that cannot be asked
    is a warning and the flat layout, except before deleting (`deleting`: coord prune), where it is an error: a
    Swarm node's prune must never reach another node's archives. Raises UsageError (an unusable name),
    DockerError."""
    from coord.docker_ops import DockerControl
    from coord.errors import DockerError
    from coord.node import check_node_name, namespace_node

    if node is not None:
        return check_node_name(node, "--node")
    try:
        return namespace_node(DockerControl.connect)
    except DockerError as error:
        if deleting:
            raise DockerError(
                f"{error.message}; coord prune asks the engine whether this host is a Swarm node (whose archives are "
                "under <target>/_nodes/<node>/) before it deletes anything"
            ) from None
        print(
            f"warning: cannot ask the Docker engine whether this host is a Swarm node ({error.message}): reading "
            "the flat layout (<target>/<volume>/); --node NAME reads a Swarm node's archives",
            file=sys.stderr,
        )
        return None


def _store_options(
    policies_dir: Path,
    dest: Path | None,
    targets: list[str] | None,
    state_dir: Path,
    rclone_config: Path | None,
    node: str | None = None,
) -> Any:
    """The read commands' way to their targets, reading `node`'s namespace (None: the flat layout). Raises
    UsageError for an --rclone-config that is not a file."""
    from coord.targets.archives import StoreOptions

    if rclone_config is not None and not rclone_config.is_file():
        raise UsageError(f"--rclone-config {rclone_config}: no such file")
    return StoreOptions(policies_dir, dest, tuple(targets or ()), state_dir, rclone_config, node)


def _latest_archive(volume: str, options: Any) -> Any:
    """The newest verified archive of `volume` on the one target `--latest` reads (a LatestChoice); what was
    passed over goes to stderr (the JSON on stdout stays one document). Raises UsageError, CoordError."""
    from datetime import UTC, datetime

    from coord.targets.archives import choose_latest

    chosen = choose_latest(options, volume, datetime.now(UTC))
    for line in chosen.skipped:
        print(f"passed over: {line}", file=sys.stderr)
    return chosen


def _decryption(gpg_home: Path | None, passphrase_file: Path | None, state_dir: Path) -> Callable[[], Any]:
    """Decryption settings, built only when an archive turns out to be encrypted."""

    def build() -> Any:
        from coord.encrypt import decryption_for

        return decryption_for(gpg_home, passphrase_file, state_dir)

    return build


@app.command("init-target")
def init_target(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A restic target of _defaults.yaml `targets:`.")],
    policies_dir: PoliciesDir = Path("policies"),
    rclone_config: RcloneConfig = None,
) -> None:
    """Create the repository of a restic target (`restic init`, with the target's password_file). coord never
    creates one by itself. Exit 0 when created, 1 when restic refused (one is already there, unreachable), 2 for
    a usage error (no such target, or not a restic one)."""
    from coord.targets.archives import init_restic_target

    _run(False, lambda: init_restic_target(policies_dir, name, rclone_config))
    print(f"created the restic repository of target {name}")


@app.command("list")
def list_archives(
    target: ReadTargets = None,
    volume: Annotated[
        list[str] | None, typer.Option("--volume", metavar="V", help="Only the archives of this volume; repeatable.")
    ] = None,
    dest: DestOption = None,
    policies_dir: PoliciesDir = Path("policies"),
    state_dir: StateDir = DEFAULT_STATE_DIR,
    rclone_config: RcloneConfig = None,
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node",
            metavar="NAME",
            help="List the archives Swarm node NAME wrote (<target>/_nodes/NAME/); repeatable. Default: on a Swarm "
            "node, its own; elsewhere the flat layout.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the complete archives on each target (--dest, and _defaults.yaml `targets:`): start time, size,
    status, verdict, encrypted or not, and the ref that `coord verify` and `coord restore` take. On a Swarm node,
    the archives this node wrote (`_nodes/<node>/`); --node NAME lists another node's.

    An archive counts only with its manifest; temporaries and archives without manifest are not listed. Exit 0
    when every target was listed (even with no archive), 1 when one could not be, 2 for a usage error.
    """
    from datetime import UTC, datetime

    from coord.render import listing_lines
    from coord.targets.archives import TargetListing, list_targets, selected_stores

    volumes = tuple(volume or ())

    def work() -> list[TargetListing]:
        namespaces = [_read_namespace(name) for name in dict.fromkeys(node)] if node else [_read_namespace(None)]
        listings = []
        for namespace in namespaces:
            options = _store_options(policies_dir, dest, target, state_dir, rclone_config, namespace)
            listings += list_targets(selected_stores(options), volumes, datetime.now(UTC))
        return listings

    listings = _run(as_json, work)
    failed = any(listing.error is not None for listing in listings)
    if as_json:
        print(json.dumps({"ok": not failed, "targets": [listing.to_json() for listing in listings]}))
    else:
        for listing in listings:
            for line in listing.warnings:  # stderr: what to look at, apart from the listing itself
                print(f"warning: {listing.target}: {line}", file=sys.stderr)
        print("\n".join(listing_lines(listings, volumes)))
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


@app.command()
def verify(
    archive: ArchiveOrRef = None,
    latest: Annotated[
        str | None,
        typer.Option("--latest", metavar="VOLUME", help="Verify the newest verified archive of VOLUME on a target."),
    ] = None,
    target: LatestTarget = None,
    node: ReadNode = None,
    dest: DestOption = None,
    policies_dir: PoliciesDir = Path("policies"),
    gpg_home: GpgHome = None,
    passphrase_file: PassphraseFile = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    rclone_config: RcloneConfig = None,
    read_data_subset: Annotated[
        str | None,
        typer.Option(
            "--read-data-subset",
            metavar="SUBSET",
            help="For an archive on a restic target: also run `restic check --read-data-subset SUBSET` on its "
            "repository (e.g. 5%, 1/10, 2G).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Read a whole archive (decrypting, decompressing), check its sha256 and entries against its manifest.

    The archive is a local file, a ref (`<target>:<volume>/<file>`, see `coord list`), or the newest of a volume
    (--latest VOLUME [--target NAME]); a remote one is streamed, never stored. Prints one line, OK or FAIL;
    exit 0 when it verifies, 1 when it does not, 2 for a usage error.
    """
    from coord.errors import UsageError
    from coord.targets.archives import check_repository, resolve_archive
    from coord.verify import Verification, verify_archive

    def work() -> Verification:
        if (archive is None) == (latest is None):
            raise UsageError("give either an ARCHIVE or --latest VOLUME")
        namespace = _read_namespace(node) if latest is not None else None  # a ref names its node itself
        options = _store_options(policies_dir, dest, target, state_dir, rclone_config, namespace)
        decryption = _decryption(gpg_home, passphrase_file, state_dir)
        if latest is not None:
            chosen = _latest_archive(latest, options)
            if chosen.archive is None:
                return Verification(archive=chosen.where, problems=[chosen.problem()])
            verification = verify_archive(chosen.archive, decryption)
            # An archive that no longer matches its manifest fails the check even when an older one verifies:
            # `verify --latest` is what monitoring runs, and a corrupt backup must not pass unnoticed.
            verification.problems += chosen.mismatched
            return verification
        assert archive is not None
        if target:
            raise UsageError(TARGET_WITHOUT_LATEST)
        if node:
            raise UsageError(NODE_WITHOUT_LATEST)
        resolved = resolve_archive(archive, options)
        if isinstance(resolved, Path) and not resolved.is_file():
            raise UsageError(f"archive {resolved} does not exist or is not a file")
        verification = verify_archive(resolved, decryption)
        verification.problems += check_repository(resolved, read_data_subset)
        return verification

    result = _run(as_json, work)
    print(json.dumps(result.to_json()) if as_json else result.verdict())
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


@app.command()
def restore(
    archive: ArchiveOrRef = None,
    latest: Annotated[
        str | None,
        typer.Option("--latest", metavar="VOLUME", help="Restore the newest verified archive of VOLUME on a target."),
    ] = None,
    source_target: LatestTarget = None,
    node: ReadNode = None,
    dest: DestOption = None,
    rclone_config: RcloneConfig = None,
    volume: Annotated[
        str | None, typer.Option("--volume", metavar="NAME", help="Docker volume to restore into (created if missing).")
    ] = None,
    target_dir: Annotated[
        Path | None, typer.Option("--target-dir", help="Restore into this directory instead of a volume.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the content of a non-empty volume.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the archive and list what would be written; change nothing.")
    ] = False,
    gpg_home: GpgHome = None,
    passphrase_file: PassphraseFile = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    policies_dir: PoliciesDir = Path("policies"),
    stop_timeout: Annotated[
        int, typer.Option("--stop-timeout", help="Seconds a container gets to stop before it is killed.")
    ] = 30,
    volumes_root: VolumesRoot = None,
    lock_timeout: LockTimeout = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Restore an archive into a volume, exactly (owners, modes, links, mtimes), refusing unsafe archives.

    The archive is a local file, a ref (`<target>:<volume>/<file>`, see `coord list`), or the newest of a volume
    (--latest VOLUME [--target NAME]). The whole archive is checked before anything is written (an archive on a
    remote target is streamed twice, never stored: once to check, once to extract); containers using the volume
    are stopped for the restore and started again afterwards. See docs/restore.md.
    """
    from coord.errors import UsageError
    from coord.restore import RestoreRequest, RestoreResult, restore_settings_for
    from coord.restore import restore as run_restore

    def work() -> RestoreResult:
        if (volume is None) == (target_dir is None):
            raise UsageError("give either --volume NAME or --target-dir DIR")
        if archive is not None and node is not None:
            raise UsageError(NODE_WITHOUT_LATEST)
        namespace = _read_namespace(node) if latest is not None else None  # a ref names its node itself
        chosen = _archive_to_restore(
            archive, latest, _store_options(policies_dir, dest, source_target, state_dir, rclone_config, namespace)
        )
        request = RestoreRequest(
            archive=chosen,
            volume=volume,
            target_dir=target_dir,
            force=force,
            dry_run=dry_run,
            allowed=restore_settings_for(policies_dir, volume, chosen),
            stop_timeout_s=stop_timeout,
            state_dir=state_dir,
            sources=VolumeSources.detect(volumes_root),
            lock_timeout_s=lock_timeout,
        )
        docker = None
        if volume is not None:
            from coord.gateway_client import connect_engine

            docker = connect_engine()
        if not sys.stderr.isatty() or as_json:
            return run_restore(request, _decryption(gpg_home, passphrase_file, state_dir), docker)
        with _ConsoleProgress():  # "stopping X (up to 30 s...)": a stop that takes long is not silent
            return run_restore(request, _decryption(gpg_home, passphrase_file, state_dir), docker)

    result = _run(as_json, work)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    for warning in result.warnings:
        print(f"warning: {warning}")
    target = f"volume {result.target}" if volume is not None else result.target
    if result.dry_run:
        for member in result.members:
            print(member.describe())
        state = (
            "would be created"
            if result.created
            else (f"holds {len(result.replaced)} entries that would be replaced" if result.replaced else "is empty")
        )
        if result.replaced:
            shown = ", ".join(result.replaced[:20]) + (", ..." if len(result.replaced) > 20 else "")
            print(f"would replace (top-level entries of {target}): {shown}")
        print(f"dry run: {result.entries} entries would be written; {target} {state}")
        for container in result.containers:
            print(f"  container {container.container} ({container.prior_state}): {container.action}")
        return
    how = "created" if result.created else ("replaced its content" if result.replaced else "was empty")
    print(f"restored {result.entries} entries from {result.archive} into {target} ({how}) in {result.duration_s:.1f}s")
    for container in result.containers:
        back = "put back" if container.restored else f"NOT put back: {container.error}"
        print(f"  container {container.container}: {container.action} ({container.prior_state} before), {back}")


def _archive_to_restore(archive: str | None, latest: str | None, options: Any) -> Any:
    """The archive `coord restore` reads: a local path, a ref's location, or --latest's. Raises UsageError."""
    from coord.targets.archives import resolve_archive

    if (archive is None) == (latest is None):
        raise UsageError("give either an ARCHIVE or --latest VOLUME")
    if latest is not None:
        chosen = _latest_archive(latest, options)
        if chosen.archive is None:
            from coord.errors import RestoreError

            raise RestoreError(chosen.problem())  # exit 1: nothing to restore is a failure, not a usage error
        return chosen.archive
    assert archive is not None
    if options.names:
        raise UsageError(TARGET_WITHOUT_LATEST)
    return resolve_archive(archive, options)


@app.command()
def drill(
    volume: Annotated[
        list[str] | None,
        typer.Option(
            "--volume", metavar="NAME", help="Volume to drill; repeatable. Default: every volume on each target."
        ),
    ] = None,
    target: ReadTargets = None,
    dest: DestOption = None,
    gpg_home: GpgHome = None,
    passphrase_file: PassphraseFile = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    policies_dir: PoliciesDir = Path("policies"),
    volumes_root: VolumesRoot = None,
    rclone_config: RcloneConfig = None,
    lock_timeout: LockTimeout = 0.0,
    node: ReadNode = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore each volume's latest verified archive on each target (--dest, and _defaults.yaml `targets:`; a
    remote one streamed) into a scratch volume, compare it with the manifest and the archive (entries, each
    file's content), remove the scratch volume, and record the drill in the history.

    One line per volume and target, OK or FAIL; exit 0 when every drill passed, 1 when one failed. See
    docs/drills.md.
    """
    from coord.drill import DrillRequest, DrillResult, drill_volumes

    def work() -> list[DrillResult]:
        sources = VolumeSources.detect(volumes_root)
        options = _store_options(policies_dir, dest, target, state_dir, rclone_config, _read_namespace(node))
        request = DrillRequest(
            dest=options.dest,
            volumes=tuple(volume or ()),
            state_dir=state_dir,
            policies_dir=policies_dir,
            sources=sources,
            lock_timeout_s=lock_timeout,
            targets=options.names,
            rclone_config=options.rclone_config,
            node=options.node,
        )
        docker = None
        if sources.volumes_root is None:
            from coord.gateway_client import connect_engine

            docker = connect_engine()
        return drill_volumes(request, docker, _decryption(gpg_home, passphrase_file, state_dir))

    results = _run(as_json, work)
    ok = all(result.ok for result in results)
    if as_json:
        print(json.dumps({"ok": ok, "drills": [result.to_json() for result in results]}))
    else:
        for result in results:
            print(result.line())
            for problem in result.problems[1:]:
                print(f"     {problem}")
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@app.command()
def prune(
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", metavar="NAME", help="Only the volumes of this policy; repeatable."),
    ] = None,
    policies_dir: PoliciesDir = Path("policies"),
    dest: DestOption = None,
    target: ReadTargets = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    rclone_config: RcloneConfig = None,
    as_json: JsonFlag = False,
) -> None:
    """Apply each policy's retention to the archives on every target (--dest, and _defaults.yaml `targets:`;
    --target picks); archives and manifests go together, the newest verified archive of a volume always stays.
    On a Swarm node, only the archives this node wrote (`_nodes/<node>/`): never another node's, nor the flat
    layout's."""
    from coord.retention import PruneResult
    from coord.run_records import prune_run_records
    from coord.targets.archives import selected_stores
    from coord.targets.prune import prune_stores

    def work() -> tuple[list[PruneResult], list[RecordPrune]]:
        namespace = _read_namespace(None, deleting=True)  # this node's archives only: never another node's
        stores = selected_stores(_store_options(policies_dir, dest, target, state_dir, rclone_config, namespace))
        results = prune_stores(policies_dir, stores, tuple(policy or ()), dry_run)
        # run records are not a policy's: pruned when no --policy narrows the prune
        return results, [] if policy else prune_run_records(policies_dir, stores, dry_run)

    results, records = _run(as_json, work)
    failed = any(result.errors for result in results) or any(result.errors for result in records)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": not failed,
                    "volumes": [result.to_json() for result in results],
                    "run_records": [result.to_json() for result in records],
                }
            )
        )
    else:
        _print_record_prunes(records, dry_run)
        verb = "would delete" if dry_run else "deleted"
        for result in results:
            # --dest's volumes as they always were; another target's named with it
            label = result.volume if result.target == "local" else f"{result.target}:{result.volume or '*'}"
            for path, why in result.deleted:
                print(f"{label}: {verb} {path} ({why})")
            for path, why in result.kept:
                print(f"{label}: keep {path} ({why})")
            for line in result.ignored:
                print(f"{label}: ignored {line}")
            for line in result.warnings:
                print(f"{label}: warning: {line}")
            for error in result.errors:
                print(f"{label}: error: {error}")
        if not results:
            print("nothing to prune: no policy with 'retention:' covers a volume directory on the targets")
        else:
            deleted = sum(len(result.deleted) for result in results)
            kept = sum(len(result.kept) for result in results)
            errors = sum(len(result.errors) for result in results)
            print(
                f"{plural(len(results), 'volume')}: {verb} {plural(deleted, 'archive')}, kept {kept}"
                + (f", {plural(errors, 'error')}" if errors else "")
            )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _print_record_prunes(records: Sequence[RecordPrune], dry_run: bool) -> None:
    """`coord prune`'s lines about run records: each one deleted, each error, and a count per target."""
    verb = "would delete" if dry_run else "deleted"
    for result in records:
        for path in result.deleted:
            print(f"{result.target}:_runs: {verb} {path} (run record older than run_records.keep_days)")
        for error in result.errors:
            print(f"{result.target}:_runs: error: {error}")
        if result.deleted or result.errors:
            print(f"{result.target}:_runs: {verb} {plural(len(result.deleted), 'run record')}, kept {result.kept}")


@app.command()
def report(
    week: Annotated[
        str | None,
        typer.Option(metavar="YYYY-Www", help="ISO week, e.g. 2026-W48 (UTC). Default: the current week."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="DATE", help="From this date (UTC midnight) or date-time until now."),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    policies_dir: CurrentPoliciesDir = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Also write the report as one self-contained HTML page (timelines and charts per volume, last "
            "drill; no network requests) to FILE.",
        ),
    ] = None,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet",
            help="Read what every node published to the targets (--dest, --target, _defaults.yaml `targets:`) "
            "instead of this node's history: per node and volume, runs, ok/warn/failed, success rate, last "
            "success and failure, verdicts, downtime, archives; silent nodes (docs/swarm.md). With --html, as a page.",
        ),
    ] = False,
    target: ReadTargets = None,
    dest: DestOption = None,
    rclone_config: RcloneConfig = None,
    as_json: JsonFlag = False,
) -> None:
    """Per policy and volume over a week: runs, successes, warnings, failures, success rate, mean and max
    downtime, last success, last restore drill; and how many runs ended ok, failed, interrupted or crashed.
    With --fleet: per node and volume, from the run records and manifests every node published to the shared
    targets."""
    from datetime import UTC, datetime

    from coord.history import History
    from coord.report import Report, parse_since, parse_week, render_report, report_for, week_of
    from coord.report_html import html_report_for, write_html

    if fleet:
        policies = policies_dir or Path("policies")
        _fleet_report(
            week, since, lambda: _store_options(policies, dest, target, state_dir, rclone_config), as_json, html
        )
        return

    def work() -> Report:
        if week and since:
            raise UsageError("give --week or --since, not both")
        now = datetime.now(UTC)
        period = parse_week(week) if week else parse_since(since, now) if since else week_of(now)
        policies = current_policy_names(policies_dir)
        history = History(state_dir)
        if html is not None:
            write_html(html, html_report_for(history, period, policies, now))
            print(f"wrote {html}", file=sys.stderr)  # stderr: --json keeps stdout one document
        return report_for(history, period, policies)

    result = _run(as_json, work)
    if as_json:
        print(json.dumps(result.to_json()))
    else:
        print("\n".join(render_report(result)))


def _fleet_report(
    week: str | None, since: str | None, store_options: Callable[[], Any], as_json: bool, html: Path | None
) -> None:
    """`coord report --fleet` over the targets `store_options()` names (it raises UsageError for bad options),
    also as a page when `html` is given: exit 0, or 1 when a target, run record or manifest could not be read
    (the runs' failures do not change it: a report describes, as `coord report` does)."""
    from datetime import UTC, datetime

    from coord.fleet import FleetReport, fleet_report, render_fleet
    from coord.report import parse_since, parse_week, week_of
    from coord.report_html import render_fleet_html, write_html
    from coord.targets.archives import selected_stores

    def work() -> FleetReport:
        if week and since:
            raise UsageError("give --week or --since, not both")
        now = datetime.now(UTC)
        period = parse_week(week) if week else parse_since(since, now) if since else week_of(now)
        result = fleet_report(selected_stores(store_options()), period, now)
        if html is not None:
            write_html(html, render_fleet_html(result, now))
            print(f"wrote {html}", file=sys.stderr)  # stderr: --json keeps stdout one document
        return result

    result = _run(as_json, work)
    print(json.dumps(result.to_json()) if as_json else "\n".join(render_fleet(result)))
    raise typer.Exit(EXIT_FAILED if result.errors else EXIT_OK)


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR, policies_dir: CurrentPoliciesDir = None, as_json: JsonFlag = False
) -> None:
    """The last backup of each volume, one line each, and the latest run when it failed, crashed or is running.
    Volumes no longer backed up (their policy is gone, or a later run of it went without them) are marked GONE."""
    from coord.history import History
    from coord.report import render_status, status_of

    found = _run(as_json, lambda: status_of(History(state_dir), current_policy_names(policies_dir)))
    latest, latest_status, gone = found["last_run"], found["last_run_status"], found["gone"]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "volumes": [
                        {**row.to_json(), "gone": gone.get((row.policy, row.volume))} for row in found["volumes"]
                    ],
                    "last_run": latest.to_json(latest_status) if latest else None,
                }
            )
        )
    else:
        print("\n".join(render_status(latest, latest_status, found["volumes"], gone)))


@app.command()
def health(
    schedule: ScheduleOption = None,
    jitter: Jitter = 0.0,
    grace: Annotated[
        float, typer.Option(help="Seconds a scheduled run may start late (after its jitter) before it is overdue.")
    ] = 300.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: JsonFlag = False,
) -> None:
    """Exit 0 if the last run (scheduled or manual) succeeded and, under a schedule, the next is not overdue;
    else exit 1 with the reason. For a Docker HEALTHCHECK; reads only the history, never contacts Docker.
    Without --schedule, the schedule of the running (or dead) `coord daemon` is used."""
    from datetime import UTC, datetime

    from coord.health import Health, health_of
    from coord.history import History
    from coord.schedule import parse_schedule

    def work() -> Health:
        parsed = parse_schedule(schedule, jitter) if schedule else None
        return health_of(History(state_dir), datetime.now(UTC), parsed, grace)

    verdict = _run(as_json, work)
    if as_json:
        print(json.dumps(verdict.to_json()))
    else:
        print(("healthy: " if verdict.healthy else "unhealthy: ") + verdict.reason)
    raise typer.Exit(EXIT_OK if verdict.healthy else EXIT_FAILED)


@app.command()
def daemon(
    schedule: ScheduleOption = None,
    jitter: Jitter = 0.0,
    log_format: Annotated[str, typer.Option(help="text: one line per event; json: one JSON object per line.")] = "text",
    policy: PolicyNames = None,
    policies_dir: PoliciesDir = Path("policies"),
    dest: Dest = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    lock_timeout: LockTimeout = 3600.0,
    volumes_root: VolumesRoot = None,
    passphrase_file: PassphraseFile = None,
    metrics_file: MetricsFile = None,
    metrics_addr: Annotated[
        str | None,
        typer.Option(
            "--metrics-addr",
            envvar="COORD_METRICS_ADDR",
            metavar="HOST:PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9847; :9847 for every IPv4 "
            "interface). Off by default. Env: COORD_METRICS_ADDR.",
        ),
    ] = None,
    drill_schedule: Annotated[
        str | None,
        typer.Option(
            "--drill-schedule",
            envvar="COORD_DRILL_SCHEDULE",
            help="Cron expression for restore drills of every volume on each of the backups' targets (see `coord "
            "drill`); default: no drills. Env: COORD_DRILL_SCHEDULE.",
        ),
    ] = None,
    gpg_home: GpgHome = None,
    target: TargetNames = None,
    rclone_config: RcloneConfig = None,
) -> None:
    """Run backups on a cron schedule in the foreground, logging one line per event to stdout. Recovers first,
    never runs two backups at once, records every run; SIGTERM puts back any container it changed and exits 0."""
    from coord.daemon import LOG_FORMATS, DaemonExtras, EventLog, ScheduledDrills, run_daemon
    from coord.drill import DrillRequest
    from coord.gateway_client import connect_engine
    from coord.schedule import parse_schedule

    def work() -> int:
        if not schedule:
            raise UsageError("no schedule: pass --schedule 'CRON' or set COORD_SCHEDULE")
        if log_format not in LOG_FORMATS:
            raise UsageError(f"--log-format '{log_format}': expected one of {', '.join(LOG_FORMATS)}")
        parsed = parse_schedule(schedule, jitter)
        request = BackupRequest(
            policies_dir=policies_dir,
            dest=dest,
            policy_names=tuple(policy or ()),
            state_dir=state_dir,
            lock_timeout_s=lock_timeout,
            sources=VolumeSources.detect(volumes_root),
            passphrase_file=passphrase_file,
        )
        request, monitoring = _checked_request(request, target or (), rclone_config, metrics_file)
        drills = None
        if drill_schedule:
            drill_request = DrillRequest(  # the backups' targets: --dest, _defaults.yaml, --target
                dest=request.dest,
                state_dir=state_dir,
                policies_dir=policies_dir,
                sources=request.sources,
                lock_timeout_s=lock_timeout,
                targets=tuple(target or ()),
                rclone_config=rclone_config,
            )
            decryption = _decryption(gpg_home, passphrase_file, state_dir)
            drills = ScheduledDrills(parse_schedule(drill_schedule), drill_request, decryption)
        events = EventLog(sys.stdout, log_format)
        extras = DaemonExtras(metrics_addr=metrics_addr, drills=drills)
        return run_daemon(request, parsed, connect_engine, monitoring, events, extras)

    raise typer.Exit(_run(False, work))


@app.command()
def gateway(
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            envvar="COORD_GATEWAY_TOKEN_FILE",
            help="File holding the shared token (at least 16 characters; a Docker secret in compose/stack.yml). "
            "Env: COORD_GATEWAY_TOKEN_FILE.",
        ),
    ],
    listen: Annotated[
        str,
        typer.Option(
            "--listen",
            envvar="COORD_GATEWAY_LISTEN",
            help="Address to listen on (in the stack: every interface of the gateway's container, reached over "
            "the stack's overlay network; never publish the port). Env: COORD_GATEWAY_LISTEN.",
        ),
    ] = "0.0.0.0",
    port: Annotated[
        int,
        typer.Option("--port", envvar="COORD_GATEWAY_PORT", help="Port (0: any free one, printed at start)."),
    ] = 8733,
) -> None:
    """Serve, from a Swarm manager, the two service calls coord needs on worker nodes.

    Swarm reads and updates services on managers only, and coord needs both for a volume used by a service's task:
    the claim (a coord.claim label written with the version read) and strategy stop (scale a replicated service
    to 0 and back). Run this on a manager beside its engine socket (compose/stack.yml's gateway service does);
    coord on every node then sets COORD_SWARM_GATEWAY=http://gateway:8733 and COORD_SWARM_GATEWAY_TOKEN_FILE.

    It serves GET /v1/services/<id or name> and POST /v1/services/<id>/update {version, replicas?, labels?}, and
    nothing else. Each request must carry `Authorization: Bearer <token>` (401 otherwise) and name its node
    (X-Coord-Node). An update may change only the coord.claim label, and the replica count of a replicated service
    that carries a claim, to 0 or back from 0 (what strategy stop does), at the version read (409 when the service
    changed since); anything else is refused (403) and logged. Every
    update is logged with the node, the service and what changed. Refuses to start unless the engine is a
    Swarm manager. Runs until SIGTERM.
    """
    from coord.docker_ops import DockerControl
    from coord.gateway import GatewayServer, manager_refusal, read_token, serve

    def work() -> None:
        token = read_token(token_file)
        docker = DockerControl.connect()
        refusal = manager_refusal(docker.swarm_role())
        if refusal:
            raise CoordError(refusal)
        serve(GatewayServer((listen, port), docker, token))

    _run(False, work)


@app.command()
def schema(
    defaults: Annotated[
        bool, typer.Option("--defaults", help="The schema of <policies dir>/_defaults.yaml (notify, targets) instead.")
    ] = False,
) -> None:
    """Print the JSON Schema of policy files (for editors: see README, 'Policy files')."""
    if defaults:
        from coord.defaults import render_defaults_schema

        sys.stdout.write(render_defaults_schema())
        return
    sys.stdout.write(render_json_schema())


GLOBAL_FLAGS = ("-v", "--verbose")


def global_flags_first(arguments: list[str]) -> list[str]:
    """Move the global flags given after the subcommand (`coord backup -v`) in front of it, where Click reads
    them; a `--` ends the options, and what follows it is left alone."""
    end = arguments.index("--") if "--" in arguments else len(arguments)
    flags = [argument for argument in arguments[:end] if argument in GLOBAL_FLAGS]
    rest = [argument for argument in arguments[:end] if argument not in GLOBAL_FLAGS]
    return flags + rest + arguments[end:]


def main() -> None:
    app(args=global_flags_first(sys.argv[1:]))
