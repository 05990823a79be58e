"""The coord image as a compose sidecar: built offline, brought up with Compose v2 (`docker compose`, the default
today) and v1 (`docker-compose`), backing up on schedule."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from tests.conftest import REPO, container_state, wait_for, write_policy

pytestmark = pytest.mark.docker
COMPOSE = REPO / "compose" / "docker-compose.yml"


# How each Compose generation is invoked, and how it names a service's first container.
COMPOSE_COMMANDS = {"v2": ["docker", "compose"], "v1": ["docker-compose"]}
CONTAINER_NAME = {"v2": "{project}-{service}-1", "v1": "{project}_{service}_1"}


def compose(version: str, project: str, env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMPOSE_COMMANDS[version], "-f", str(COMPOSE), "-p", project, *arguments],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


FAIL_THEN_HEALTH = (
    "coord backup --dest /policies/not-writable --lock-timeout 60 >/dev/null 2>&1; echo backup=$?; "
    "coord health; echo health=$?"
)


def coord_in(container: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "exec", container, "coord", *arguments], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(params=["v2", "v1"])
def example_stack(request, docker_client, unique, tmp_path):
    subprocess.run([str(REPO / "scripts" / "build-coord-image.sh")], check=True, stdout=subprocess.DEVNULL)
    project = unique("stack")
    volume = f"{project}_clickhouse-data"
    policy = (REPO / "compose" / "policies" / "clickhouse.yaml").read_text()
    write_policy(tmp_path / "policies", "clickhouse", policy.replace("coord-example_clickhouse-data", volume))
    env = {"COORD_EXAMPLE": project, "COORD_POLICIES": str(tmp_path / "policies"), "COORD_SCHEDULE": "*/5 * * * * *"}
    version = request.param
    try:
        up = compose(version, project, env, "up", "-d")
        assert up.returncode == 0, up.stderr
        assert "obsolete" not in up.stderr  # v2 warns about a `version:` key; the example has none
        yield project, volume, version
    finally:
        compose(version, project, env, "down", "-v", "--timeout", "2")


def test_sidecar_backs_up_on_schedule_and_reports(example_stack, docker_client) -> None:
    project, volume, version = example_stack
    coord, writer = (CONTAINER_NAME[version].format(project=project, service=s) for s in ("coord", "clickhouse"))
    backups = Path(docker_client.volumes.get(f"{project}_backups").attrs["Mountpoint"])

    # the off-host target's rclone configuration arrives as a compose secret file (RCLONE_CONFIG)
    remotes = subprocess.run(["docker", "exec", coord, "rclone", "listremotes"], capture_output=True, text=True)
    assert remotes.stdout.split() == ["offsite:"], remotes.stderr

    # The plan lists the running containers it would pause; the daemon's own backups (every 5 s, snapshot) pause
    # the writer for a moment, and a plan made in that moment finds nothing running to pause: plan again then.
    for _ in range(10):
        plan = coord_in(coord, "plan")
        assert plan.returncode == 0, plan.stderr
        assert "coord runs as a sidecar: volume <name> is read at /volumes/<name>" in plan.stdout
        assert coord not in plan.stdout, plan.stdout  # never its own container
        if "nothing (no running container)" not in plan.stdout:
            break
        time.sleep(1)
    assert f"pause {writer}, in this order" in plan.stdout, plan.stdout

    # the schedule fires every 5 s: wait for a scheduled backup to land in the backups volume
    wait_for(lambda: any(backups.glob(f"{volume}/*.manifest.json")), timeout=90, what="a scheduled backup")

    manual = coord_in(coord, "backup", "--json", "--lock-timeout", "60")
    assert manual.returncode == 0, manual.stderr
    [entry] = json.loads(manual.stdout)["volumes"]
    assert (entry["status"], entry["verdict"], entry["strategy"]) == ("ok", "consistent", "snapshot")
    assert [(a["container"], a["action"], a["restored"]) for a in entry["containers"]] == [(writer, "paused", True)]
    # the daemon's next scheduled run may be pausing it for its snapshot right now: it must come back
    wait_for(
        lambda: container_state(docker_client, docker_client.containers.get(writer)) == "running",
        timeout=30,
        what="the writer to run",
    )
    assert container_state(docker_client, docker_client.containers.get(coord)) == "running"
    # stop_grace_period: 2m reached the engine: docker stop gives coord that long to put containers back
    assert docker_client.containers.get(coord).attrs["Config"]["StopTimeout"] == 120

    report = coord_in(coord, "report", "--json")
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)
    assert "runs" in json.dumps(rows)
    status = coord_in(coord, "status")
    assert status.returncode == 0 and volume in status.stdout

    assert coord_in(coord, "health").returncode == 0
    # a failing run (the policies mount is read-only) turns health red, the next scheduled success green again.
    # The schedule fires every 5 s, so a scheduled success can land between the failure and `coord health`
    # (health is then rightly green): the pair runs in one exec, and again if that happened.
    for _ in range(3):
        pair = subprocess.run(
            ["docker", "exec", coord, "sh", "-c", FAIL_THEN_HEALTH], capture_output=True, text=True, timeout=120
        )
        assert "backup=1" in pair.stdout, pair.stdout + pair.stderr
        if "health=1" in pair.stdout:
            break
    assert "health=1" in pair.stdout, "health stayed green right after a failed run, three times"
    deadline = time.monotonic() + 60
    while coord_in(coord, "health").returncode != 0:
        assert time.monotonic() < deadline, "health stayed red after the failure"
        time.sleep(1)

    # Restore inside the sidecar (issue 11, finding 12): on the image's Debian python3, into the volume as the
    # sidecar sees it at /volumes/<name>; the writer is stopped and started again, coord itself is left alone.
    mountpoint = Path(docker_client.volumes.get(volume).attrs["Mountpoint"])
    (mountpoint / "planted-after-the-backup").write_text("a restore replaces the whole content\n")
    archive = sorted(backups.glob(f"{volume}/*.tar.zst"))[-1]
    inside = f"/backups/{volume}/{archive.name}"
    restored = coord_in(coord, "restore", inside, "--volume", volume, "--force", "--json", "--lock-timeout", "60")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    result = json.loads(restored.stdout)
    assert [(c["container"], c["action"], c["restored"]) for c in result["containers"]] == [(writer, "stopped", True)]
    assert not (mountpoint / "planted-after-the-backup").exists()
    assert not [p.name for p in mountpoint.iterdir() if p.name.startswith(".coord-restore")]
    assert container_state(docker_client, docker_client.containers.get(writer)) == "running"
