"""`coord plan` and `coord validate --docker` against the real engine: what would fail, what is not backed up."""

from __future__ import annotations

import pytest
from tests.conftest import run_coord, write_policy

pytestmark = pytest.mark.docker


def test_plan_exits_1_when_a_volume_would_fail_and_lists_volumes_no_policy_covers(make_volume, tmp_path) -> None:
    covered = make_volume("covered")
    forgotten = make_volume("forgotten")
    policies = tmp_path / "policies"
    write_policy(policies, "app", f"volumes: [{covered}]\nstrategy: live\n")
    good = run_coord("plan", "--policies-dir", str(policies), "--json")
    assert good.returncode == 0, good.stderr
    assert good.json["ok"] is True
    assert forgotten in good.json["uncovered"] and covered not in good.json["uncovered"]
    text = run_coord("plan", "--policies-dir", str(policies))
    assert text.returncode == 0, text.stderr
    assert "not backed up, no policy covers them:" in text.stdout and forgotten in text.stdout

    write_policy(policies, "app", f"volumes: [{covered}, {covered}-gone]\nstrategy: live\n")
    failing = run_coord("plan", "--policies-dir", str(policies))
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert f"{covered}-gone: FAILS: volume '{covered}-gone' does not exist" in failing.stdout
    assert f"1 volume would fail: {covered}-gone" in failing.stdout
    as_json = run_coord("plan", "--policies-dir", str(policies), "--json")
    assert as_json.returncode == 1
    assert as_json.json["ok"] is False


def test_validate_with_docker_reports_missing_volumes_and_overlapping_globs(make_volume, tmp_path) -> None:
    shared = make_volume("shared-data")
    stem = shared.rsplit("-", 1)[0]
    policies = tmp_path / "policies"
    write_policy(policies, "a", f"strategy: live\nvolumes:\n  - '{stem}*'\n")
    write_policy(policies, "b", f"strategy: pause\nvolumes:\n  - '*{shared[10:]}'\n  - {shared}-nowhere\n")

    offline = run_coord("validate", "--policies-dir", str(policies))
    assert offline.returncode == 0, offline.stderr  # the files alone are fine

    checked = run_coord("validate", "--docker", "--policies-dir", str(policies))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert f"b.yaml:3: volumes: '{shared}' is matched by policy 'a' and by 'b'" in checked.stderr

    write_policy(policies, "a", f"strategy: live\nvolumes:\n  - {shared}\n")
    checked = run_coord("validate", "--docker", "--policies-dir", str(policies), "--json")
    assert checked.returncode == 2
    assert checked.json["errors"] == [
        f"{policies}/b.yaml:4: volumes: volume '{shared}-nowhere' does not exist (docker volume ls)"
    ]

    write_policy(policies, "b", f"strategy: pause\nvolumes:\n  - '{shared}*'\n")
    clean = run_coord("validate", "--docker", "--policies-dir", str(policies))
    assert clean.returncode == 0, clean.stderr
    assert "2 policies valid against the engine" in clean.stdout
