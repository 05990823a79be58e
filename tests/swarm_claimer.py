"""A coord process that claims a Swarm service with coord's own claim code (coord.swarm.take_claim), for the
claim tests of tests/e2e/test_swarm.py. Run as `python tests/swarm_claimer.py SERVICE NODE STATE_DIR BARRIER HOLD`.

- It reads the service, then, before its update, creates BARRIER/<pid>.ready and waits for BARRIER/go: two
  claimers started together have then both read the same version before either writes, which is the race
  Swarm's optimistic concurrency must settle (exactly one update gets through).
- It prints one JSON line: {"won": true, "claim": ...} or {"won": false, "error": ...}.
- A winner then waits for HOLD to exist (the test's cue) and releases the claim, or is killed holding it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from coord import swarm
from coord.docker_ops import DockerControl, ServiceInfo
from coord.journal import Journal

WAIT_S = 120.0


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.02)


def main() -> None:
    service_id, node, state_dir, barrier, hold = sys.argv[1:6]
    docker = DockerControl.connect()
    original = DockerControl.update_service
    first = [True]

    def update_after_the_barrier(
        self: DockerControl, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        if first[0]:
            first[0] = False
            (Path(barrier) / f"{os.getpid()}.ready").touch()
            wait_for_file(Path(barrier) / "go")
        original(self, service, replicas, labels)

    DockerControl.update_service = update_after_the_barrier
    journal = Journal(Path(state_dir))
    try:
        claim, entry = swarm.take_claim(docker, journal, service_id, node, swarm.new_run_id())
    except swarm.ClaimTaken as error:
        print(json.dumps({"won": False, "error": error.message}), flush=True)
        return
    print(json.dumps({"won": True, "claim": claim.to_label()}), flush=True)
    wait_for_file(Path(hold))
    error = swarm.release_claim(docker, service_id, claim)
    if error is None:
        journal.clear(entry)
    print(json.dumps({"released": error is None, "error": error}), flush=True)


if __name__ == "__main__":
    main()
