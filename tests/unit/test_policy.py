"""Policy files: the malformed-policy matrix with its exact messages, the schema, the shipped policies."""

import json
from pathlib import Path

import pytest

from coord.errors import PolicyError, UsageError
from coord.policy import ConsistencyRule, Strategy, load_policies, parse_policy, render_json_schema

REPO = Path(__file__).resolve().parents[2]


def problems_of(text: str, name: str = "policies/clickhouse.yaml") -> list[str]:
    policy, problems = parse_policy(Path(name), text)
    assert policy is None
    return problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "volumes: [a]\nstrategy: puase\n",
            ["policies/clickhouse.yaml:2: strategy: 'puase' is not one of live, pause, stop, exclude, snapshot, auto"],
            id="bad-strategy",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\nexlude: [tmp]\n",
            [
                "policies/clickhouse.yaml:3: exlude: unknown key 'exlude' (did you mean 'exclude'?); allowed keys: "
                "description, volumes, strategy, exclude, compression, on_at_risk, consistency, escalate_to, "
                "max_vanished, compression_level, compression_threads, containers, stop_timeout, stop_order, "
                "max_downtime_s, hooks, encrypt, retention, restore, notify, ping, expect, anomaly, targets"
            ],
            id="unknown-key",
        ),
        pytest.param(
            "volumes: []\nstrategy: live\n",
            ["policies/clickhouse.yaml:1: volumes: must not be empty: list at least one entry"],
            id="empty-volume-list",
        ),
        pytest.param(
            "volumes: clickhouse\nstrategy: live\n",
            ["policies/clickhouse.yaml:1: volumes: expected a list, got a string 'clickhouse'"],
            id="wrong-type-list",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\nexclude:\n  - tmp\n  - 5\n",
            ["policies/clickhouse.yaml:5: exclude[1]: expected a string, got a number 5"],
            id="wrong-type-item",
        ),
        pytest.param(
            "volumes: [a\nstrategy: live\n",
            ["policies/clickhouse.yaml:2:9: YAML syntax error: expected ',' or ']', but got ':'"],
            id="syntax-error",
        ),
        pytest.param(
            "strategy: live\n",
            ["policies/clickhouse.yaml:1: volumes: is required"],
            id="missing-key",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\nvolumes: [b]\n",
            ["policies/clickhouse.yaml:3:1: YAML syntax error: key 'volumes' appears twice (first on line 1)"],
            id="duplicate-key",
        ),
        pytest.param(
            "",
            ["policies/clickhouse.yaml: the file is empty; a policy needs at least 'volumes' and 'strategy'"],
            id="empty-file",
        ),
        pytest.param(
            "- live\n",
            ["policies/clickhouse.yaml:1: expected a mapping of keys (volumes, strategy, ...), got a list"],
            id="not-a-mapping",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\nexclude: [/store/**]\n",
            [
                "policies/clickhouse.yaml:3: exclude[0]: '/store/**': '**' is not supported. '*' matches within one "
                "directory level; a pattern without '/' matches that name at any depth"
            ],
            id="double-star",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\nexclude: [../etc]\n",
            [
                "policies/clickhouse.yaml:3: exclude[0]: '../etc' contains '.', '..' or empty components: patterns "
                "are relative to the volume root"
            ],
            id="dotdot",
        ),
        pytest.param(
            "volumes: [data/x]\nstrategy: live\n",
            [
                "policies/clickhouse.yaml:1: volumes[0]: 'data/x' contains '/': volume names never do (give the name, "
                "not a path)"
            ],
            id="path-as-volume",
        ),
        pytest.param(
            "volumes: [a, a]\nstrategy: live\n",
            ["policies/clickhouse.yaml:1: volumes: listed more than once: a"],
            id="duplicate-volume",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\non_at_risk: ignore\ncompression: xz\n",
            [
                "policies/clickhouse.yaml:4: compression: 'xz' is not one of zstd, gzip, none",
                "policies/clickhouse.yaml:3: on_at_risk: 'ignore' is not one of warn, fail",
            ],
            id="every-problem-at-once",
        ),
        pytest.param(
            "volumes: [a]\nstrategy: live\nconsistency: clickhuose\n",
            ["policies/clickhouse.yaml:3: consistency: 'clickhuose' is not one of generic, clickhouse"],
            id="bad-consistency",
        ),
    ],
)
def test_malformed_policy_messages(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_a_directory_reports_every_file_and_cross_file_problems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("volumes: [shared]\nstrategy: live\n")
    (tmp_path / "b.yaml").write_text("volumes: [shared]\nstrategy: pause\n")
    (tmp_path / "c.yaml").write_text("volumes: [c]\nstrategy: nope\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    assert caught.value.problems == [
        f"{tmp_path}/c.yaml:2: strategy: 'nope' is not one of live, pause, stop, exclude, snapshot, auto",
        f"{tmp_path}/b.yaml: volumes: 'shared' is also selected by {tmp_path}/a.yaml; a volume belongs to one policy",
    ]
    assert caught.value.exit_code == 2


def test_unknown_policy_name_lists_the_available_ones(tmp_path: Path) -> None:
    (tmp_path / "clickhouse.yaml").write_text("volumes: [a]\nstrategy: live\n")
    with pytest.raises(UsageError, match=r"no policy named 'clikhouse' .* \(available: clickhouse\)"):
        load_policies(tmp_path, ["clikhouse"])


def test_shipped_policies_are_valid() -> None:
    loaded = {item.name: item.policy for item in load_policies(REPO / "policies")}
    assert loaded["clickhouse"].strategy is Strategy.SNAPSHOT
    assert loaded["clickhouse"].consistency is ConsistencyRule.CLICKHOUSE
    assert "clickhouse" in loaded and len(loaded) >= 2


def test_committed_schema_is_current_and_documents_every_key() -> None:
    committed = (REPO / "schema" / "policy.schema.json").read_text()
    assert committed == render_json_schema(), "run: coord schema > schema/policy.schema.json"
    schema = json.loads(committed)
    assert schema["additionalProperties"] is False
    for name, spec in schema["properties"].items():
        assert spec.get("description"), f"{name} has no description"
        assert spec.get("examples"), f"{name} has no example"
    assert set(schema["required"]) == {"volumes", "strategy"}


def test_shipped_policies_point_editors_at_the_schema() -> None:
    for path in (REPO / "policies").glob("*.yaml"):
        assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=../schema/policy.schema.json"
