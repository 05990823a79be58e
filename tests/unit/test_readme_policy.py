"""README.md's policy section tells the truth: every strategy, every key, the validation example as printed."""

import re
import subprocess
import sys
from pathlib import Path

from coord.policy import Policy, Strategy

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
POLICY_SECTION = README.split("\n## Policy files\n", 1)[1].split("\n### Exclude patterns\n", 1)[0]


def test_the_policy_example_and_the_key_table_list_every_strategy() -> None:
    example = re.search(r"^strategy: \w+ +# (.+)$", POLICY_SECTION, re.MULTILINE)
    assert example is not None
    assert sorted(example[1].split(" | ")) == sorted(Strategy)
    row = next(line for line in POLICY_SECTION.splitlines() if line.startswith("| `strategy` |"))
    assert sorted(re.findall(r"`(\w+)`", row.split("|")[3])) == sorted(Strategy)


def test_the_key_table_names_every_policy_key() -> None:
    rows = [line for line in POLICY_SECTION.splitlines() if line.startswith("| `")]
    documented = {key for row in rows for key in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert documented == set(Policy.model_fields)


def test_the_validation_example_is_what_coord_prints(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "clickhouse.yaml").write_text('volumes: ["*clickhouse*"]\nstrategy: puase\nexlude: [/tmp]\n')
    (policies / "redis.yaml").write_text("volumes: redis\nstrategy: live\n")
    shown = POLICY_SECTION.split("\ncoord: error:", 1)[1].split("\n```", 1)[0]
    run = subprocess.run(
        [sys.executable, "-m", "coord", "validate", "--policies-dir", "policies"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == ("coord: error:" + shown).strip()
