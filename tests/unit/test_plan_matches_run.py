"""`coord plan` and a run agree step by step, for every strategy: the steps a run executes (recorded in its
RunContext) are the steps `coord.backup.steps.group_steps` lists, which `coord plan` prints.

Driven through the public `run_backup(request, docker)` on real files, real tar and zstd, with a minimal
in-memory engine (tests/fakes.py): volumes are directories under a volumes root (sidecar mode), and the fake
records every engine call.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fakes import FakeEngine

from coord.backup.context import BackupRequest
from coord.backup.plan import describe_group
from coord.backup.run import run_backup
from coord.backup.steps import Step, StepKind, group_steps
from coord.plan import group_volumes, plan_volumes
from coord.policy import load_policies
from coord.results import RunResult, VolumeStatus
from coord.sources import VolumeSources


class RenameDuringLiveRead:
    """A Progress that, at the end of the first (live) read of each volume, renames a file in a directory: the
    directory lost an entry and gained one during the read, so the live verdict is at-risk and auto escalates."""

    def __init__(self, root: Path) -> None:
        self.root, self.volume, self.done = root, "", set[str]()

    def begin(self, volume: str) -> None:
        self.volume = volume

    def update(self, entries: int, written_bytes: int) -> None:
        if self.volume and self.volume not in self.done:
            self.done.add(self.volume)
            (self.root / self.volume / "dir" / "a").rename(self.root / self.volume / "dir" / "b")

    def end(self) -> None:
        self.volume = ""


HOOKS = "hooks:\n  before: [{container: app, exec: [sync]}]\n  after: [{container: app, exec: [echo, done]}]\n"


def setup(tmp_path: Path, strategy: str, extra: str = "") -> tuple[BackupRequest, FakeEngine, Path]:
    """Two running containers, `app` mounting volume `data` and `side` mounting `other`, on the fake engine."""
    root = tmp_path / "volumes"
    engine = FakeEngine(root)
    for volume in ("data", "other"):
        engine.add_volume(volume, {"dir/a": f"{volume} a\n", "top": f"{volume} top\n"})
    engine.add_container("app", ("data",))
    engine.add_container("side", ("other",))
    policies = tmp_path / "policies"
    policies.mkdir()
    text = f"volumes: [data, other]\nstrategy: {strategy}\ncontainers: [side]\n{HOOKS}{extra}"
    (policies / "p.yaml").write_text(text)
    request = BackupRequest(
        policies_dir=policies, dest=tmp_path / "dest", state_dir=tmp_path / "state", sources=VolumeSources(root)
    )
    return request, engine, root


def planned(request: BackupRequest, docker: FakeEngine) -> tuple[list[Step], list[str]]:
    policies = load_policies(request.policies_dir)
    plans = plan_volumes(policies, docker.volume_names())
    steps: list[Step] = []
    lines: list[str] = []
    for group in group_volumes(plans, docker):
        steps += group_steps(group, [plan for plan in group.volumes if not plan.error])
        lines += describe_group(group)
    return steps, lines


def keys(steps: list[Step]) -> list[tuple[str, str | None, str | None]]:
    return [step.key for step in steps]


def run(request: BackupRequest, docker: FakeEngine, progress: object = None) -> tuple[RunResult, list[Step]]:
    steps: list[Step] = []
    result = run_backup(request, docker, progress, steps)
    return result, steps


@pytest.mark.parametrize("strategy", ["live", "pause", "stop", "snapshot", "exclude"])
def test_the_run_executes_the_planned_steps(tmp_path: Path, strategy: str) -> None:
    request, docker, _ = setup(tmp_path, strategy)
    plan, _ = planned(request, docker)
    result, executed = run(request, docker)
    assert keys(executed) == keys(plan)
    wanted = VolumeStatus.EXCLUDED if strategy == "exclude" else VolumeStatus.OK
    assert [v.status for v in result.volumes] == [wanted, wanted], result.to_json()
    assert {container.state for container in docker.containers.values()} == {"running"}  # every one given back
    quiesced = [call for call in docker.calls if call.method in ("pause", "stop")]
    assert bool(quiesced) == (strategy in ("pause", "stop", "snapshot"))


def test_auto_that_keeps_the_live_read_executes_the_planned_steps_before_the_escalation(tmp_path: Path) -> None:
    request, docker, _ = setup(tmp_path, "auto")
    plan, _ = planned(request, docker)
    result, executed = run(request, docker)
    assert keys(executed) == keys([step for step in plan if not step.escalated])
    assert any(step.escalated for step in plan)  # the plan shows what an escalation would do
    assert [v.status for v in result.volumes] == [VolumeStatus.OK, VolumeStatus.OK], result.to_json()
    assert not [call for call in docker.calls if call.method in ("pause", "stop")]


@pytest.mark.parametrize("escalate_to", ["pause", "stop", "snapshot"])
def test_auto_that_escalates_executes_every_planned_step(tmp_path: Path, escalate_to: str) -> None:
    request, docker, root = setup(tmp_path, "auto", f"escalate_to: {escalate_to}\n")
    plan, lines = planned(request, docker)
    result, executed = run(request, docker, RenameDuringLiveRead(root))
    assert keys(executed) == keys(plan)
    assert f"   otherwise, once, with strategy {escalate_to}:" in lines
    for volume in result.volumes:
        assert [attempt.strategy.value for attempt in volume.attempts] == ["live", escalate_to], volume.to_json()
        assert volume.attempts[0].escalated and volume.attempts[0].escalated.startswith("verdict at-risk")
    assert {container.state for container in docker.containers.values()} == {"running"}


def test_plan_text_numbers_every_step_and_no_longer_promises_a_read_back(tmp_path: Path) -> None:
    request, docker, _ = setup(tmp_path, "snapshot")
    plan, lines = planned(request, docker)
    numbered = [line for line in lines if line[0].isdigit()]
    assert len(numbered) == len(plan)  # one group: app and side are paused once for both volumes
    assert not any("read each archive back" in line or "sha256" in line for line in lines)
    kinds = [step.kind for step in plan]
    assert kinds.index(StepKind.LINK_SNAPSHOT) < kinds.index(StepKind.QUIESCE) < kinds.index(StepKind.RESUME)


@pytest.mark.parametrize(
    ("strategy", "spooled_by"),
    [("live", None), ("snapshot", None), ("pause", "pause"), ("stop", "stop"), ("auto", "stop"), ("auto", None)],
)
def test_a_volume_with_only_remote_targets_is_spooled_only_when_read_while_the_containers_wait(
    tmp_path: Path, strategy: str, spooled_by: str | None
) -> None:
    escalation = f"escalate_to: {spooled_by or 'snapshot'}\n" if strategy == "auto" else ""
    request, docker, _ = setup(tmp_path, strategy, escalation)
    group = group_volumes(plan_volumes(load_policies(request.policies_dir), docker.volume_names()), docker)[0]
    steps = group_steps(group, group.volumes, remote_only={"data"})
    spooling = [step for step in steps if step.kind in (StepKind.SPOOL, StepKind.UPLOAD)]
    expected = [("spool", "data", spooled_by), ("upload", "data", spooled_by)] if spooled_by else []
    assert [step.key for step in spooling] == expected
    assert all(step.escalated is (strategy == "auto") for step in spooling)  # auto: only once it escalates
    if spooled_by:  # the upload comes after the containers are back, right after the volume's check
        kinds = [step.kind for step in steps]
        assert kinds.index(StepKind.RESUME) < kinds.index(StepKind.UPLOAD) == kinds.index(StepKind.PUBLISH) + 1
    lines = describe_group(group, {"data"})
    assert any("archive data" in line and "local spool file" in line for line in lines) is bool(spooled_by)
    assert any("upload the spooled archive of data" in line for line in lines) is bool(spooled_by)
    assert not any("archive other" in line and "spool" in line for line in lines)  # it has a local target
