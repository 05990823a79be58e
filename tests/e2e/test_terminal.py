"""What an operator sees on a terminal while a backup runs: each container's pause and return as it happens."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, write_policy

pytestmark = pytest.mark.docker


def run_on_a_terminal(*arguments: str) -> tuple[int, str, str]:
    """Run the coord CLI with its stderr on a pseudo-terminal; (exit code, stdout, what the terminal showed)."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "coord", *arguments], stdout=subprocess.PIPE, stderr=secondary, cwd=REPO
    )
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the last holder of the terminal closed it
            break
        if not chunk:
            break
        screen += chunk
    stdout = process.stdout.read().decode() if process.stdout else ""
    os.close(primary)
    return process.wait(timeout=120), stdout, screen.decode(errors="replace")


def test_pausing_and_putting_back_are_shown_as_they_happen(make_volume, make_container, tmp_path: Path) -> None:
    volume = make_volume("terminal")
    container = make_container("terminal", ["sleep", "600"], {volume: "/data"})
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: pause\n")
    code, stdout, screen = run_on_a_terminal("backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path))
    assert code == 0, stdout + screen
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen).replace("\r", "\n")  # the bar's cursor moves
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("coord: ")]
    assert lines[0] == f"coord: pausing {container.name}"
    assert lines[1].startswith(f"coord: {container.name} paused in ")
    assert lines[2] == f"coord: unpausing {container.name}"
    assert lines[3].startswith(f"coord: {container.name} back after ") and lines[3].endswith(" s paused")
    assert f"paused {container.name} for" in stdout  # the summary still goes to stdout


def test_a_restore_says_which_container_it_stops_and_for_how_long_at_most(
    make_volume, make_container, tmp_path: Path
) -> None:
    volume = make_volume("terminal-restore")
    container = make_container("terminal-restore", ["sleep", "600"], {volume: "/data"})
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: live\n")
    code, stdout, _ = run_on_a_terminal("backup", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path))
    assert code == 0, stdout
    [archive] = (tmp_path / volume).glob("*.tar.zst")
    code, stdout, screen = run_on_a_terminal(
        "restore", str(archive), "--volume", volume, "--force", "--stop-timeout", "2", "--policies-dir", "/nowhere"
    )
    assert code == 0, stdout + screen
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert f"coord: stopping {container.name} (up to 2s, then it is killed)" in text
    assert f"coord: starting {container.name}" in text
