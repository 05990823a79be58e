"""Which policy owns which volume."""

from pathlib import Path

import pytest

from coord.errors import PolicyError
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
