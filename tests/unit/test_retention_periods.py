"""keep_daily / keep_weekly / keep_monthly (issue 15, for every target): the newest verified archive of each of
the newest N periods that have one, in UTC, as restic's `forget --keep-*` counts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from coord.policy import RetentionSettings, parse_policy
from coord.retention import StoredArchive, plan_retention

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def stored(days_ago: float, status: str) -> StoredArchive:
    started = NOW - timedelta(days=days_ago)
    name = f"v-{started:%Y%m%dT%H%M%S}Z.tar.zst"
    return StoredArchive(Path(name), Path(name + ".manifest.json"), started, status)


def newest_first(*ages: float, status: str = "ok") -> list[StoredArchive]:
    return sorted((stored(age, status) for age in ages), key=lambda item: item.started_at, reverse=True)


def kept_ages(archives: list[StoredArchive], rules: RetentionSettings) -> list[float]:
    plan = plan_retention(archives, rules, NOW)
    assert len(plan.keep) + len(plan.delete) == len(archives)
    return [round((NOW - item.started_at).total_seconds() / 86400, 1) for item, _ in plan.keep]


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days_that_have_one() -> None:
    # NOW is 12:00; ages in days: two today, two yesterday, none 2 days ago, one 3 days ago, one 4 days ago
    archives = newest_first(0.1, 0.2, 1.1, 1.2, 3.1, 4.1)
    assert kept_ages(archives, RetentionSettings(keep_daily=3)) == [0.1, 1.1, 3.1]


def test_an_unverified_archive_does_not_stand_for_its_day() -> None:
    archives = newest_first(0.1, status="failed") + newest_first(0.2, 1.1)
    assert kept_ages(archives, RetentionSettings(keep_daily=1)) == [0.2]


def test_weekly_and_monthly_add_to_the_other_rules() -> None:
    archives = newest_first(*(day + 0.1 for day in range(0, 70, 3)))
    weekly = kept_ages(archives, RetentionSettings(keep_weekly=3))
    assert len(weekly) == 3 and weekly[0] == 0.1 and all(age < 21 for age in weekly)
    monthly = kept_ages(archives, RetentionSettings(keep_monthly=3))
    months = {(NOW - timedelta(days=age)).strftime("%Y-%m") for age in monthly}
    assert len(monthly) == 3 and months == {"2026-06", "2026-05", "2026-04"}
    both = kept_ages(archives, RetentionSettings(keep_last=1, keep_monthly=2))
    assert both == sorted(set(both)) and 0.1 in both and len(both) == 2


def test_retention_needs_some_rule(tmp_path: Path) -> None:
    policy, problems = parse_policy(tmp_path / "p.yaml", "volumes: [v]\nstrategy: live\nretention: {}\n")
    assert policy is None and "give keep_last, keep_days, keep_daily, keep_weekly or keep_monthly" in problems[0]
    policy, problems = parse_policy(tmp_path / "p.yaml", "volumes: [v]\nstrategy: live\nretention: {keep_weekly: 4}\n")
    assert problems == [] and policy is not None and policy.retention == RetentionSettings(keep_weekly=4)
