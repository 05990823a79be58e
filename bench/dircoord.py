#!/usr/bin/env python3
"""`coord backup --json` of one directory with no Docker engine: tests/fakes.py's engine stands in for Docker (the
volume has no container, the strategy is `live`), tar and the compressors are the real ones. bench/dirbench.py
times it as a subprocess, as bench/run.py times the real CLI.

    python3 bench/dircoord.py --volumes-root DIR --volume NAME --policies-dir P --dest D --state-dir S

Which coord runs is whichever `import coord` finds first: PYTHONPATH=OTHER/src runs another version (coord-before).
Prints coord's JSON; exits with coord's exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # tests.fakes; after PYTHONPATH, so another coord's src/ still wins for `coord`
sys.path.append(str(REPO / "src"))

from tests.fakes import FakeEngine  # noqa: E402

from coord.docker_ops import DockerControl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--volumes-root", type=Path, required=True)
    parser.add_argument("--volume", required=True)
    parser.add_argument("--policies-dir", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    options = parser.parse_args()
    engine = FakeEngine(options.volumes_root)
    engine.volumes[options.volume] = options.volumes_root / options.volume
    DockerControl.connect = classmethod(lambda cls: engine)  # type: ignore[method-assign,assignment]
    from typer.testing import CliRunner

    from coord.cli import app

    arguments = ["backup", "--json", "--policies-dir", str(options.policies_dir), "--dest", str(options.dest)]
    arguments += ["--state-dir", str(options.state_dir), "--volumes-root", str(options.volumes_root)]
    result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    sys.stdout.write(result.stdout)
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
