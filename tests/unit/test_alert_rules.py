"""docs/alerts.yml: valid YAML in Prometheus's rule-file shape, naming only metrics (and labels and label values)
that coord exports."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from coord.history import DrillRow, VolumeRow
from coord.metrics import (
    RUN_STATUSES,
    VERDICTS,
    VOLUME_STATUSES,
    CoordState,
    TargetOutcome,
    VolumeState,
    metric_families,
)

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"
METRIC = re.compile(r"\bcoord_[a-z_]+")
SELECTOR = re.compile(r"\b(coord_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def exported() -> dict[str, set[str]]:
    """Every metric coord exports, with its label names, from a state where every family has samples."""
    now = datetime.now(UTC)
    row = VolumeRow(1, now, "v", "p", "live", "ok", "consistent", {"vanished": 1}, 0.5, 10, 1.0, "/a", None, 3)
    drill = DrillRow(1, now, now, "v", "a.tar.zst", "failed", "manual", 3, 1, 10, 0.1, ["entry count mismatch"], "t")
    state = CoordState([VolumeState(row, row, (TargetOutcome("offsite", "ok"),))], now, "ok", now, drills=[drill])
    families = metric_families(state)
    assert all(family.samples for family in families)
    return {family.name: {label for sample in family.samples for label in sample.labels} for family in families}


def test_every_rule_names_metrics_and_labels_that_exist() -> None:
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert len(rules) >= 5
    metrics = exported()
    values = {"status": {*VOLUME_STATUSES, *RUN_STATUSES}, "verdict": set(VERDICTS)}
    named: set[str] = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        expression = str(rule["expr"])
        found = set(METRIC.findall(expression))
        assert found, f"{rule['alert']} names no coord metric"
        assert found <= set(metrics), f"{rule['alert']}: unknown {found - set(metrics)}"
        named |= found
        for metric, matchers in SELECTOR.findall(expression):
            for label, value in MATCHER.findall(matchers):
                assert label in metrics[metric], f"{rule['alert']}: {metric} has no label {label}"
                assert value in values.get(label, {value}), f"{rule['alert']}: {label}={value!r} never occurs"
    # the three the issue asks for: no success in 26 h, downtime above a limit, at-risk
    assert {"coord_volume_last_success_timestamp_seconds", "coord_volume_last_run_downtime_seconds"} <= named
    assert any('verdict="at-risk"' in str(rule["expr"]) for rule in rules)


def test_the_checker_sees_a_wrong_metric() -> None:
    assert "coord_volume_last_sucess_timestamp_seconds" not in exported()
    assert exported()["coord_volume_last_run_status"] == {"node", "volume", "policy", "status"}
