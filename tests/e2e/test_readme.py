"""The README's walkthrough ("Back up your own stack") runs as written: every block marked `<!-- runnable -->`, in
order, in bash, against the real engine. Only the names an operator would choose are made unique to this test:
the compose project (coord-example), the destination (/srv/backups) and the policies directory (my-policies)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO

pytestmark = pytest.mark.docker
MARKER = "<!-- runnable -->"


def runnable_blocks(markdown: str) -> list[str]:
    """The fenced sh blocks that directly follow a runnable marker, in document order."""
    return [
        match.group(1) for match in re.finditer(re.escape(MARKER) + r"\n```sh\n(.*?)\n```", markdown, flags=re.DOTALL)
    ]


def test_the_runnable_blocks_are_found() -> None:
    blocks = runnable_blocks((REPO / "README.md").read_text())
    assert len(blocks) == 5
    assert (REPO / "README.md").read_text().count(MARKER) == len(blocks)  # no marker without its block


def test_readme_walkthrough_from_policy_to_restore(tmp_path: Path, unique, docker_client) -> None:
    project = unique("example")
    names = {
        "coord-example": project,
        "/srv/backups": str(tmp_path / "backups"),
        "my-policies": str(tmp_path / "my-policies"),
    }
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COORD_EXAMPLE": project,  # the example's compose file names its volumes after it
    }
    outputs = []
    try:
        for block in runnable_blocks((REPO / "README.md").read_text()):
            for operator_name, test_name in names.items():
                block = block.replace(operator_name, test_name)
            ran = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=REPO,
                env=environment,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert ran.returncode == 0, (
                f"README block failed:\n{block}\n--- stdout\n{ran.stdout}\n--- stderr\n{ran.stderr}"
            )
            outputs.append(ran.stdout)
    finally:
        subprocess.run(
            ["docker", "compose", "-f", str(REPO / "compose/docker-compose.yml"), "-p", project, "down", "-v"],
            env=environment,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(["docker", "volume", "rm", "-f", f"{project}_restore-check"], capture_output=True, timeout=60)

    listing, checks, backup, restore, sidecar = outputs
    volume = f"{project}_clickhouse-data"
    assert volume in listing
    assert "1 policy valid against the engine" in checks and f"snapshot: {volume} (policy clickhouse)" in checks
    assert f"OK   {volume} (policy clickhouse, snapshot)" in backup and "1 volume, 0 failed" in backup
    assert re.search(rf"^OK {re.escape(str(tmp_path / 'backups' / volume))}/.*\.tar\.zst", backup, re.MULTILINE)
    assert "dry run:" in restore and "would be created" in restore
    assert f"into volume {project}_restore-check (created)" in restore
    assert f"into volume {volume} (replaced its content)" in restore
    assert "coord runs as a sidecar" in sidecar and "1 volume, 0 failed" in sidecar
    assert [
        container.attrs["State"]["Status"]
        for container in docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
    ] == []  # the example is gone again
