"""The backup orchestration without Docker: coord.runner.run_backup driven against the in-memory engine of
tests/fakes.py. Real GNU tar and zstd read real files in temporary directories; only the engine is faked.

What a live read "sees change" is arranged with `ReadChanges`: it changes the volume after tar has read it and
before coord compares the tree with what tar archived (coord.archive's call of assess_consistency), which is
exactly what a writer racing tar leaves behind, without the race.
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import FakeEngine

import coord.archive
from coord.archive import ArchiveOutcome
from coord.consistency import ArchivedTree, Verdict
from coord.docker_ops import DockerControl, Engine
from coord.errors import DockerError
from coord.journal import CONTAINER, PAUSED, Journal
from coord.plan import group_volumes, plan_volumes
from coord.policy import OnAtRisk, load_policies
from coord.problems import EntryProblem, ProblemKind, classify_tar_line
from coord.results import RunResult, VolumeStatus
from coord.runner import BackupRequest, Progress, decide_status, run_backup
from coord.signals import Interrupted

FILES = {"old.txt": "old\n", "keep.txt": "kept\n", "sub/deep.txt": "deep\n"}


@dataclass
class Scene:
    """One backup setting: the fake engine, a policies directory, a destination and a state directory."""

    engine: FakeEngine
    root: Path

    def policy(self, name: str, text: str) -> None:
        directory = self.root / "policies"
        directory.mkdir(exist_ok=True)
        (directory / f"{name}.yaml").write_text(text)

    def request(self, *policy_names: str) -> BackupRequest:
        return BackupRequest(
            policies_dir=self.root / "policies",
            dest=self.root / "dest",
            policy_names=policy_names,
            state_dir=self.root / "state",
        )

    def run(self, *policy_names: str, progress: Progress | None = None) -> RunResult:
        # The ignore goes once run_backup is annotated with docker_ops.Engine (the fake has its methods, tested
        # below), not with the concrete DockerControl.
        return run_backup(self.request(*policy_names), self.engine, progress)

    def journal(self) -> Journal:
        return Journal(self.root / "state")

    def files_in_dest(self) -> list[str]:
        dest = self.root / "dest"
        return sorted(str(path.relative_to(dest)) for path in dest.rglob("*") if path.is_file())


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    return Scene(FakeEngine(tmp_path / "engine"), tmp_path)


class ReadChanges:
    """Changes to a volume "during" a read: each registered change runs once, on the Nth read of that source."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pending: dict[Path, list[Callable[[Path, list[EntryProblem]], None] | None]] = {}
        real = coord.archive.assess_consistency

        def assess(root: str, tree: ArchivedTree, problems: list[EntryProblem], *args: Any, **kwargs: Any) -> Any:
            queue = self.pending.get(Path(root))
            change = queue.pop(0) if queue else None
            if change is not None:
                change(Path(root), problems)
            return real(root, tree, problems, *args, **kwargs)

        monkeypatch.setattr(coord.archive, "assess_consistency", assess)

    def on_reads(self, source: Path, *changes: Callable[[Path, list[EntryProblem]], None] | None) -> None:
        """The first read of `source` gets changes[0], the second changes[1] (None: no change), ..."""
        self.pending[source] = list(changes)


def replace_entry(root: Path, problems: list[EntryProblem]) -> None:
    """An archived file deleted and a new one created beside it: the directory lost and gained entries (at-risk)."""
    (root / "old.txt").unlink()
    (root / "new.txt").write_text("new\n")


def vanish_entry(root: Path, problems: list[EntryProblem]) -> None:
    """A file deleted while tar read the tree, reported as tar reports it."""
    (root / "old.txt").unlink()
    problem = classify_tar_line("tar: ./old.txt: File removed before we read it")
    assert problem is not None and problem.kind is ProblemKind.VANISHED
    problems.append(problem)


@pytest.fixture
def read_changes(monkeypatch: pytest.MonkeyPatch) -> ReadChanges:
    return ReadChanges(monkeypatch)


def send_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


# The engine interface ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", [DockerControl, FakeEngine])
def test_the_real_engine_and_the_fake_have_the_engine_interface(implementation: type) -> None:
    members = [name for name in vars(Engine) if not name.startswith("_")]
    assert members, "Engine lists no methods"
    for name in members:
        expected = inspect.signature(getattr(Engine, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_the_fake_engine_changes_state_as_the_real_one_answers(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path)
    db = engine.add_container("db")
    engine.pause(db.id)
    engine.pause(db.id)  # already paused: done (DockerControl.pause)
    with pytest.raises(DockerError, match="409: cannot start a paused container"):
        engine.start(db.id)
    with pytest.raises(DockerError, match=r"409: .* is paused"):
        engine.exec(db.id, ["true"], 1)
    engine.stop(db.id, 10)  # stop works on a paused container
    assert engine.state_of("db") == "exited"
    engine.unpause(db.id)  # not paused: nothing happens (DockerControl.unpause)
    with pytest.raises(DockerError, match=r"409: .* is not running"):
        engine.pause(db.id)
    engine.start(db.id)
    engine.remove_container("db")
    assert engine.container_state(db.id) is None
    engine.fail_at(nth=2)
    engine.volume_names()
    with pytest.raises(DockerError, match="500: injected failure"):
        engine.volume_names()
    assert [call.method for call in engine.calls][-2:] == ["volume_names", "volume_names"]


# The status table -------------------------------------------------------------------------------------------------


def outcome_with(*kinds: ProblemKind) -> ArchiveOutcome:
    problems = [EntryProblem(kind, f"f{index}", "tar said so") for index, kind in enumerate(kinds)]
    return ArchiveOutcome(Path("v.tar.zst.partial"), problems=problems)


K = ProblemKind


@pytest.mark.parametrize(
    ("kinds", "verdict", "on_at_risk", "expected"),
    [
        ((), Verdict.CONSISTENT, OnAtRisk.WARN, VolumeStatus.OK),
        ((K.SKIPPED,), Verdict.CONSISTENT, OnAtRisk.WARN, VolumeStatus.OK),  # a socket: not archivable by design
        ((K.VANISHED,), Verdict.CONSISTENT, OnAtRisk.WARN, VolumeStatus.WARNING),
        ((K.CHANGED,), Verdict.CONSISTENT, OnAtRisk.FAIL, VolumeStatus.WARNING),
        ((K.SHRANK,), Verdict.CONSISTENT, OnAtRisk.WARN, VolumeStatus.WARNING),
        ((), Verdict.FUZZY, OnAtRisk.FAIL, VolumeStatus.WARNING),
        ((), Verdict.AT_RISK, OnAtRisk.WARN, VolumeStatus.WARNING),
        ((), Verdict.AT_RISK, OnAtRisk.FAIL, VolumeStatus.FAILED),
        ((), None, OnAtRisk.WARN, VolumeStatus.WARNING),  # no verdict: nothing says the read was consistent
        ((K.CRITICAL,), Verdict.CONSISTENT, OnAtRisk.WARN, VolumeStatus.FAILED),
        ((K.VANISHED, K.CRITICAL), Verdict.AT_RISK, OnAtRisk.FAIL, VolumeStatus.FAILED),
    ],
)
def test_decide_status(
    kinds: tuple[ProblemKind, ...], verdict: Verdict | None, on_at_risk: OnAtRisk, expected: VolumeStatus
) -> None:
    outcome = outcome_with(*kinds)
    status, errors = decide_status(outcome, verdict, ["dir lost and gained entries"], on_at_risk)
    assert status is expected
    if outcome.critical:
        assert errors == [problem.describe() for problem in outcome.critical]  # the critical problems, not the verdict
    elif status is VolumeStatus.FAILED:
        assert errors == ["verdict at-risk and the policy says on_at_risk: fail: dir lost and gained entries"]
    else:
        assert errors == []


def live_scene(scene: Scene, policy_text: str) -> Path:
    scene.policy("data", "volumes: [v]\nstrategy: live\n" + policy_text)
    source = scene.engine.add_volume("v", FILES)
    scene.engine.add_container("app", volumes=("v",))
    return source


def test_a_clean_live_read_is_ok_and_published(scene: Scene) -> None:
    live_scene(scene, "")
    volume = scene.run().volumes[0]
    assert (volume.status, volume.verdict, volume.errors) == (VolumeStatus.OK, "consistent", [])
    assert volume.archive and Path(volume.archive).is_file() and volume.manifest and Path(volume.manifest).is_file()
    assert scene.engine.changes() == []  # live: no container touched
    assert not any(name.endswith(".partial") for name in scene.files_in_dest())


@pytest.mark.parametrize(
    ("on_at_risk", "expected", "kept"), [("warn", VolumeStatus.WARNING, True), ("fail", VolumeStatus.FAILED, False)]
)
def test_an_at_risk_read_warns_or_fails_as_the_policy_says(
    scene: Scene, read_changes: ReadChanges, on_at_risk: str, expected: VolumeStatus, kept: bool
) -> None:
    source = live_scene(scene, f"on_at_risk: {on_at_risk}\n")
    read_changes.on_reads(source, replace_entry)
    result = scene.run()
    volume = result.volumes[0]
    assert (volume.status, volume.verdict) == (expected, "at-risk")
    assert bool(volume.archive) is kept
    assert bool(scene.files_in_dest()) is kept  # a failed volume leaves nothing, not even a .partial
    assert result.ok is kept
    assert scene.journal().entries() == []


def test_a_vanished_file_is_a_warning(scene: Scene, read_changes: ReadChanges) -> None:
    source = live_scene(scene, "")
    read_changes.on_reads(source, vanish_entry)
    volume = scene.run().volumes[0]
    assert (volume.status, volume.warnings["vanished"], volume.verdict) == (VolumeStatus.WARNING, 1, "fuzzy")
    assert volume.archive


# Auto escalation --------------------------------------------------------------------------------------------------


def auto_scene(scene: Scene, policy_text: str) -> Path:
    scene.policy("data", "volumes: [v]\nstrategy: auto\n" + policy_text)
    source = scene.engine.add_volume("v", FILES)
    scene.engine.add_container("db", volumes=("v",))
    return source


@pytest.mark.parametrize(
    ("escalate_to", "window"),
    [("pause", ["pause", "unpause"]), ("stop", ["stop", "start"]), ("snapshot", ["pause", "unpause"])],
)
def test_an_at_risk_live_read_escalates_to_the_policys_escalate_to(
    scene: Scene, read_changes: ReadChanges, escalate_to: str, window: list[str]
) -> None:
    source = auto_scene(scene, f"escalate_to: {escalate_to}\n")
    read_changes.on_reads(source, replace_entry)
    volume = scene.run().volumes[0]
    assert [(a.strategy, a.escalated) for a in volume.attempts] == [
        ("live", f"verdict at-risk: retried with {escalate_to}"),
        (escalate_to, None),
    ]
    assert (volume.strategy, volume.status, volume.verdict) == ("auto", VolumeStatus.OK, "consistent")
    assert [method for method, _ in scene.engine.changes()] == window
    assert scene.engine.state_of("db") == "running"
    assert len([name for name in scene.files_in_dest() if not name.endswith(".manifest.json")]) == 1  # no live copy


def test_more_vanished_entries_than_max_vanished_escalate(scene: Scene, read_changes: ReadChanges) -> None:
    source = auto_scene(scene, "max_vanished: 0\n")
    read_changes.on_reads(source, vanish_entry)
    volume = scene.run().volumes[0]
    assert volume.attempts[0].escalated == "1 entries vanished, more than max_vanished 0: retried with pause"
    assert [a.strategy for a in volume.attempts] == ["live", "pause"]
    assert scene.engine.changes() == [("pause", "db"), ("unpause", "db")]


def test_vanished_entries_within_max_vanished_keep_the_live_read(scene: Scene, read_changes: ReadChanges) -> None:
    source = auto_scene(scene, "max_vanished: 3\n")
    read_changes.on_reads(source, vanish_entry)
    volume = scene.run().volumes[0]
    assert [(a.strategy, a.escalated) for a in volume.attempts] == [("live", None)]
    assert (volume.status, volume.warnings["vanished"]) == (VolumeStatus.WARNING, 1)
    assert scene.engine.changes() == []


# Item: a second auto policy sharing a container runs its own escalate_to ------------------------------------------


def two_auto_policies(scene: Scene, first: str, second: str) -> tuple[Path, Path]:
    scene.policy("a", f"volumes: [va]\nstrategy: auto\nescalate_to: {first}\n")
    scene.policy("b", f"volumes: [vb]\nstrategy: auto\nescalate_to: {second}\n")
    sources = scene.engine.add_volume("va", FILES), scene.engine.add_volume("vb", FILES)
    scene.engine.add_container("db", volumes=("va", "vb"))
    return sources


def test_auto_volumes_sharing_a_container_are_grouped_only_when_they_escalate_alike(scene: Scene) -> None:
    two_auto_policies(scene, "pause", "stop")
    policies = load_policies(scene.root / "policies")
    plans = plan_volumes(policies, scene.engine.volume_names())
    groups = group_volumes(plans, scene.engine)
    assert [[plan.volume for plan in group.volumes] for group in groups] == [["va"], ["vb"]]

    (scene.root / "policies" / "b.yaml").write_text("volumes: [vb]\nstrategy: auto\nescalate_to: pause\n")
    policies = load_policies(scene.root / "policies")
    plans = plan_volumes(policies, scene.engine.volume_names())
    groups = group_volumes(plans, scene.engine)
    assert [[plan.volume for plan in group.volumes] for group in groups] == [["va", "vb"]]


def test_each_auto_policy_sharing_a_container_escalates_to_its_own_escalate_to(
    scene: Scene, read_changes: ReadChanges
) -> None:
    first, second = two_auto_policies(scene, "pause", "stop")
    read_changes.on_reads(first, replace_entry)
    read_changes.on_reads(second, replace_entry)
    result = scene.run()
    used = {volume.volume: volume.attempts[-1].strategy for volume in result.volumes}
    assert used == {"va": "pause", "vb": "stop"}
    assert scene.engine.changes() == [("pause", "db"), ("unpause", "db"), ("stop", "db"), ("start", "db")]
    assert result.ok


# Quiescing that fails halfway -------------------------------------------------------------------------------------


def test_a_pause_failing_on_the_second_of_three_containers_puts_the_first_back_and_never_touches_the_third(
    scene: Scene,
) -> None:
    scene.policy("data", "volumes: [v]\nstrategy: pause\n")
    scene.engine.add_volume("v", FILES)
    for name in ("a", "b", "c"):
        scene.engine.add_container(name, volumes=("v",))
    scene.engine.fail_at("pause", "b")
    result = scene.run()
    volume = result.volumes[0]
    second = scene.engine.named("b").id
    assert volume.status is VolumeStatus.FAILED
    assert volume.errors == [f"could not pause containers: pause {second}: the engine answered 500: injected failure"]
    assert scene.engine.changes() == [("pause", "a"), ("pause", "b"), ("unpause", "a")]
    assert scene.engine.touched("c") == []
    assert [scene.engine.state_of(name) for name in ("a", "b", "c")] == ["running"] * 3
    assert [(c.container, c.action, c.restored) for c in volume.containers] == [
        ("a", "paused", True),
        ("b", "failed", True),
    ]
    assert volume.containers[1].error and "injected failure" in volume.containers[1].error
    assert scene.journal().entries() == []
    assert scene.files_in_dest() == []
    assert not result.ok and result.errors == []  # every container is back: nothing for the operator to repair


def test_a_container_that_cannot_be_put_back_is_a_run_error_and_stays_journaled(scene: Scene) -> None:
    scene.policy("data", "volumes: [v]\nstrategy: pause\n")
    scene.engine.add_volume("v", FILES)
    scene.engine.add_container("db", volumes=("v",))
    scene.engine.fail_at("unpause", "db", message="engine hung")  # after docker_ops' retries gave up
    result = scene.run()
    assert not result.ok
    assert len(result.errors) == 1 and result.errors[0].startswith("container db: could not put db back")
    assert [entry.name for entry in scene.journal().entries()] == ["db"]  # for `coord recover`
    assert scene.engine.state_of("db") == "paused"
    # The next run puts it back first (recovery from the journal), then backs up as usual.
    again = scene.run()
    assert again.recovered and again.recovered[0].startswith("unpaused db")
    assert again.ok and scene.engine.state_of("db") == "running"
    assert scene.journal().entries() == []


def test_recovery_puts_back_a_container_a_dead_run_left_paused(scene: Scene) -> None:
    live_scene(scene, "")
    dead = scene.engine.add_container("db")
    scene.engine.pause(dead.id)
    scene.journal().record(CONTAINER, dead.id, PAUSED, "db")
    result = scene.run()
    assert result.recovered and result.recovered[0].startswith("unpaused db (left paused by coord pid")
    assert scene.engine.state_of("db") == "running"
    assert scene.journal().entries() == []


# Hooks ------------------------------------------------------------------------------------------------------------

HOOKED = """volumes: [v]
strategy: pause
hooks:
  before: [{container: app, exec: [freeze]}]
  after: [{container: app, exec: [thaw]}]
"""


def test_after_hooks_run_when_archiving_fails(scene: Scene) -> None:
    scene.policy("data", HOOKED)
    source = scene.engine.add_volume("v", FILES)
    scene.engine.add_container("db", volumes=("v",))
    scene.engine.add_container("app")

    def freeze_then_lose_the_volume(argv: list[str]) -> tuple[int | None, str]:
        if argv == ["freeze"]:
            shutil.rmtree(source)  # the archive step then finds no volume root: a critical problem
        return 0, ""

    scene.engine.on_exec("app", freeze_then_lose_the_volume)
    result = scene.run()
    volume = result.volumes[0]
    assert volume.status is VolumeStatus.FAILED
    assert any("is missing or not a directory" in error for error in volume.errors)
    assert scene.engine.changes() == [("exec", "app"), ("pause", "db"), ("unpause", "db"), ("exec", "app")]
    assert [(hook.phase, hook.command, hook.error) for hook in volume.hooks] == [
        ("before", ["freeze"], None),
        ("after", ["thaw"], None),
    ]
    assert scene.files_in_dest() == [] and scene.journal().entries() == []


def test_after_hooks_run_when_quiescing_fails_and_a_failing_after_hook_fails_the_run(scene: Scene) -> None:
    scene.policy("data", HOOKED)
    scene.engine.add_volume("v", FILES)
    scene.engine.add_container("db", volumes=("v",))
    scene.engine.add_container("app")
    scene.engine.fail_at("pause", "db")
    scene.engine.on_exec("app", lambda argv: (1, "cannot thaw\n") if argv == ["thaw"] else (0, ""))
    result = scene.run()
    assert scene.engine.changes() == [("exec", "app"), ("pause", "db"), ("exec", "app")]
    assert result.errors == ["policy data: after hook in app exited 1: thaw: cannot thaw"]
    assert result.volumes[0].status is VolumeStatus.FAILED


# Signals ----------------------------------------------------------------------------------------------------------


def paused_pair(scene: Scene) -> None:
    scene.policy("data", HOOKED)
    scene.engine.add_volume("v", FILES)
    for name in ("a", "b"):
        scene.engine.add_container(name, volumes=("v",))
    scene.engine.add_container("app")


def assert_everything_put_back(scene: Scene) -> None:
    assert [scene.engine.state_of(name) for name in ("a", "b", "app")] == ["running"] * 3
    assert scene.journal().entries() == []
    assert scene.files_in_dest() == []  # no archive, no .partial


@pytest.mark.usefixtures("sigterm_guard")
def test_sigterm_while_pausing_puts_every_container_back_and_raises_interrupted(scene: Scene) -> None:
    paused_pair(scene)
    scene.engine.after("pause", "b", send_sigterm)  # held while b changes state, raised right after
    with pytest.raises(Interrupted) as raised:
        scene.run()
    assert raised.value.signum == signal.SIGTERM
    assert scene.engine.changes() == [
        ("exec", "app"),
        ("pause", "a"),
        ("pause", "b"),
        ("unpause", "b"),
        ("unpause", "a"),
        ("exec", "app"),  # the after hook runs on the way out
    ]
    assert_everything_put_back(scene)


class SignalWhileArchiving:
    """A progress display whose first volume sends SIGTERM as its archive begins (all containers paused)."""

    def begin(self, volume: str) -> None:
        send_sigterm()

    def update(self, entries: int, written_bytes: int) -> None:
        pass

    def end(self) -> None:
        pass


@pytest.mark.usefixtures("sigterm_guard")
def test_sigterm_while_archiving_puts_every_container_back_and_raises_interrupted(scene: Scene) -> None:
    paused_pair(scene)
    with pytest.raises(Interrupted):
        scene.run(progress=SignalWhileArchiving())
    assert scene.engine.changes() == [
        ("exec", "app"),
        ("pause", "a"),
        ("pause", "b"),
        ("unpause", "b"),
        ("unpause", "a"),
        ("exec", "app"),
    ]
    assert_everything_put_back(scene)
