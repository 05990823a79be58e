"""render.py and timestamps.py: each line shape and time format is built once, here is what it looks like."""

from datetime import UTC, datetime, timedelta, timezone

from coord.render import archived_line, human_size, short_time
from coord.timestamps import utc_iso, utc_iso_or_none

MOMENT = datetime(2026, 11, 27, 4, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))


def test_sizes_in_decimal_units() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1_500_000, 2_000_000_000_000, 5e15)] == [
        "0 B",
        "999 B",
        "1.0 KB",
        "1.5 MB",
        "2.0 TB",
        "5000.0 TB",
    ]


def test_times_are_utc_with_a_z() -> None:
    assert utc_iso(MOMENT) == "2026-11-27T03:00:00.123456Z"
    assert utc_iso(MOMENT, "seconds") == "2026-11-27T03:00:00Z"
    assert utc_iso(MOMENT, "milliseconds") == "2026-11-27T03:00:00.123Z"
    assert utc_iso_or_none(MOMENT.astimezone(UTC)) == "2026-11-27T03:00:00.123456Z"
    assert utc_iso_or_none(None) is None
    assert (short_time(MOMENT), short_time(None)) == ("2026-11-27 03:00:00Z", "never")


def test_an_archived_volume_in_one_line() -> None:
    assert archived_line(1_500_000, "consistent", 0.0, "/b/v.tar.zst") == "1.5 MB, verdict consistent -> /b/v.tar.zst"
    assert archived_line(10, "fuzzy", 0.4151, "/b/v.tar.zst") == "10 B, verdict fuzzy, downtime 0.42s -> /b/v.tar.zst"


def test_the_summary_names_the_targets_holding_the_archive() -> None:
    from coord.policy import Strategy
    from coord.render import run_summary
    from coord.results import RunResult, TargetResult, TargetStatus, VolumeResult, VolumeStatus

    volume = VolumeResult("v", "p", Strategy.LIVE, VolumeStatus.FAILED, archive="/b/v/v-1.tar.zst", entries=3)
    volume.targets = [
        TargetResult("local", TargetStatus.OK, "local:v/v-1.tar.zst"),
        TargetResult("offsite", TargetStatus.FAILED, error="target offsite: upload of ...: 403"),
    ]
    volume.errors = ["target offsite: upload of ...: 403"]
    lines = run_summary(RunResult(volumes=[volume]))
    assert "     -> /b/v/v-1.tar.zst" in lines
    assert "     targets: local ok, offsite failed" in lines
    assert "     error: target offsite: upload of ...: 403" in lines


def test_a_volume_whose_only_target_failed_and_the_titles_name_the_failed_target() -> None:
    from coord.policy import Strategy
    from coord.render import notification_title, run_line, run_summary
    from coord.results import RunResult, TargetResult, TargetStatus, VolumeResult, VolumeStatus

    error = "target offsite: writing offsite:b/v/x.partial: connection refused"
    only = VolumeResult("v", "p", Strategy.LIVE, VolumeStatus.FAILED, errors=[error])
    only.targets = [TargetResult("offsite", TargetStatus.FAILED, error=error)]
    other = VolumeResult("w", "p", Strategy.LIVE, VolumeStatus.FAILED, errors=["volume 'w' does not exist"])
    other.targets = [TargetResult("offsite", TargetStatus.SKIPPED)]  # not tried: the volume failed first
    result = RunResult(volumes=[only, other])
    assert run_summary(result)[:3] == [
        "FAIL v (policy p, live)",
        "     targets: offsite failed",
        f"     error: {error}",
    ]
    assert "targets" not in run_summary(result)[3]  # one skipped target: nothing to say about targets
    assert notification_title("h", "failure", "all policies", result) == (
        "coord on h: backup FAILED (all policies): 2 volumes, 2 failed (v: target offsite failed, w)"
    )
    assert run_line(4, "failed", result) == "run 4 failed: 2 volumes, 2 failed (v: target offsite failed, w)"
