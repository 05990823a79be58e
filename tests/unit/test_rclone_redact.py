"""redact(): every message about a remote loses the credentials it may carry; rclone's error text is shortened."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coord.targets.rclone import Rclone, _classify, _last_lines, parse_modified, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://alice:s3cr3t@host/bucket failed", "GET https://***@host/bucket failed"),
        ("dial sftp://bob@host:22", "dial sftp://***@host:22"),
        ("pass=hunter2 user=x", "pass=*** user=x"),
        ("password: 'hunter2' next", "password: '***' next"),
        ("?X-Amz-Signature=abc123&X-Amz-Credential=AKIA/2026", "?X-Amz-Signature=***&X-Amz-Credential=***"),
        ("access_token=tok1 refresh", "access_token=*** refresh"),
        ("secret_access_key = verysecret", "secret_access_key = ***"),
        ("nothing to hide here", "nothing to hide here"),
    ],
)
def test_credentials_in_text_are_replaced(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_values_of_secret_rclone_environment_variables_are_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RCLONE_CONFIG_OFFSITE_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    monkeypatch.setenv("RCLONE_CONFIG_OFFSITE_PASS", "obscured-xyz")
    monkeypatch.setenv("RCLONE_CONFIG_PASS", "config-password")
    monkeypatch.setenv("RCLONE_CONFIG_OFFSITE_TYPE", "s3")  # not a secret: stays
    text = "signing with wJalrXUtnFEMI, obscured-xyz and config-password for s3"
    assert redact(text) == "signing with ***, *** and *** for s3"


def test_extra_secrets_are_replaced() -> None:
    assert redact("token abcdef leaked", ["abcdef"]) == "token *** leaked"


def test_rclone_reason_is_its_last_error_line_without_the_log_prefix() -> None:
    stderr = (
        "2026/12/01 03:40:07 NOTICE: Loaded 0 authorized keys\n"
        "2026/12/01 03:40:08 ERROR : a.txt: Failed to copy: 401 Unauthorized\n"
        "2026/12/01 03:40:08 CRITICAL: Failed to create file system: 401 Unauthorized\n"
    )
    assert _last_lines(stderr) == "Failed to create file system: 401 Unauthorized"
    assert _last_lines("") == "no message"


@pytest.mark.parametrize(
    ("exit_code", "stderr", "transient"),
    [
        (5, "anything", True),
        (2, "dial tcp 127.0.0.1:9: connect: connection refused", True),
        (2, "read: connection reset by peer", True),
        (2, "SignatureDoesNotMatch: 403", False),
        (7, "connection refused", False),  # fatal: rclone says a retry will not help
        (3, "directory not found", False),
    ],
)
def test_transient_failures_are_told_from_lasting_ones(exit_code: int, stderr: str, transient: bool) -> None:
    assert _classify(exit_code, stderr) is transient


@pytest.mark.parametrize(
    "text",
    ["2026-12-01T03:40:05.099617123Z", "2026-12-01T04:40:05.099617+01:00", "2026-12-01T03:40:05.0996170Z"],
)
def test_rclone_times_become_aware_utc(text: str) -> None:
    assert parse_modified(text) == datetime(2026, 12, 1, 3, 40, 5, 99617, tzinfo=UTC)


def test_whole_second_times_parse() -> None:
    assert parse_modified("2026-12-01T03:40:14Z") == datetime(2026, 12, 1, 3, 40, 14, tzinfo=UTC)


def test_secret_values_of_the_rclone_config_file_are_replaced(tmp_path: Path) -> None:
    config = tmp_path / "rclone.conf"
    config.write_text("[offsite]\ntype = s3\nsecret_access_key = wJalrXUtnFEMI\npass = obscuredXYZ\nregion = eu\n")
    rclone = Rclone("offsite", config_file=config)
    assert rclone.redact("used wJalrXUtnFEMI and obscuredXYZ in eu with s3") == "used *** and *** in eu with s3"
