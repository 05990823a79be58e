"""Which policy owns which volume."""

from pathlib import Path

import pytest

from coord.errors import PolicyError
from coord.plan import engine_problems, uncovered_volumes
from coord.policy import LoadedPolicy, parse_policy
from coord.runner import plan_volumes


def policy(name: str, text: str) -> LoadedPolicy:
    parsed, problems = parse_policy(Path(f"{name}.yaml"), text)
    assert parsed is not None, problems
    return LoadedPolicy(name, Path(f"{name}.yaml"), parsed)


def summary(plans) -> list[tuple[str, str, str | None]]:
    return [(p.volume, p.policy.name, p.error) for p in plans]


def test_globs_and_exact_names() -> None:
    policies = [
        policy("clickhouse", "volumes: ['*clickhouse*']\nstrategy: live\n"),
        policy("special", "volumes: [old_clickhouse]\nstrategy: stop\n"),
    ]
    plans = plan_volumes(policies, ["a_clickhouse", "old_clickhouse", "postgres"])
    assert summary(plans) == [("a_clickhouse", "clickhouse", None), ("old_clickhouse", "special", None)]


def test_selecting_one_policy_never_takes_a_volume_another_names_exactly() -> None:
    policies = [
        policy("clickhouse", "volumes: ['*clickhouse*']\nstrategy: live\n"),
        policy("special", "volumes: [old_clickhouse]\nstrategy: stop\n"),
    ]
    plans = plan_volumes(policies, ["a_clickhouse", "old_clickhouse"], ["clickhouse"])
    assert summary(plans) == [("a_clickhouse", "clickhouse", None)]


def test_missing_volumes_fail_loudly_but_exclude_policies_may_match_nothing() -> None:
    policies = [
        policy("a", "volumes: [gone, 'nothing*']\nstrategy: live\n"),
        policy("caches", "volumes: ['*cache*']\nstrategy: exclude\n"),
    ]
    assert summary(plan_volumes(policies, ["other"])) == [
        ("gone", "a", "volume 'gone' does not exist (docker volume ls)"),
        ("nothing*", "a", "pattern 'nothing*' matches no volume (docker volume ls)"),
    ]


def test_two_globs_claiming_one_volume_is_a_policy_error() -> None:
    policies = [
        policy("a", "volumes: ['*data*']\nstrategy: live\n"),
        policy("b", "volumes: ['pg*']\nstrategy: pause\n"),
    ]
    with pytest.raises(PolicyError, match="'pg_data' is matched by policy 'a' and by 'b'"):
        plan_volumes(policies, ["pg_data"])


def test_volumes_no_policy_covers_are_listed_and_exclude_counts_as_covered() -> None:
    policies = [
        policy("db", "volumes: [pg_data]\nstrategy: pause\n"),
        policy("caches", "volumes: ['*cache*']\nstrategy: exclude\n"),
    ]
    assert uncovered_volumes(policies, ["pg_data", "app_cache", "uploads", "redis"]) == ["uploads", "redis"]


def loaded_from_file(directory: Path, name: str, text: str) -> LoadedPolicy:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    parsed, problems = parse_policy(path, text)
    assert parsed is not None, problems
    return LoadedPolicy(name, path, parsed)


def test_engine_problems_name_file_line_and_pattern(tmp_path: Path) -> None:
    policies = [
        loaded_from_file(tmp_path, "a", "strategy: live\nvolumes:\n  - present\n  - gone\n  - 'nothing*'\n"),
        loaded_from_file(tmp_path, "b", "strategy: exclude\nvolumes: ['optional*']\n"),
    ]
    assert engine_problems(policies, ["present"]) == [
        f"{tmp_path}/a.yaml:4: volumes: volume 'gone' does not exist (docker volume ls)",
        f"{tmp_path}/a.yaml:5: volumes: pattern 'nothing*' matches no volume (docker volume ls)",
    ]
    assert engine_problems(policies[:1], ["present", "gone", "nothing-else"]) == []


def test_engine_problems_report_two_globs_claiming_a_volume_with_the_line(tmp_path: Path) -> None:
    policies = [
        loaded_from_file(tmp_path, "a", "strategy: live\nvolumes:\n  - '*data*'\n"),
        loaded_from_file(tmp_path, "b", "strategy: pause\nvolumes:\n  - other\n  - 'pg*'\n"),
    ]
    assert engine_problems(policies, ["pg_data", "other"]) == [
        f"{tmp_path}/b.yaml:4: volumes: 'pg_data' is matched by policy 'a' and by 'b'; "
        "name it exactly in the one that should own it"
    ]
