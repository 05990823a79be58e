"""Dead-man ping URLs, the retry loop and what may be shown of a URL: pure functions."""

from __future__ import annotations

import pytest

from coord.delivery import DeliveryError, deliver, described_url, scrub
from coord.monitoring import outcome_of
from coord.pings import PingEvent, healthchecks_url, uptime_kuma_url
from coord.policy import Strategy
from coord.results import RunResult, VolumeResult, VolumeStatus


def test_healthchecks_urls_keep_their_query() -> None:
    url = "https://hc.example.com/ping/0f1e/?create=1"
    assert healthchecks_url(url, PingEvent.START) == "https://hc.example.com/ping/0f1e/start?create=1"
    assert healthchecks_url(url, PingEvent.SUCCESS) == "https://hc.example.com/ping/0f1e?create=1"
    assert healthchecks_url(url, PingEvent.FAIL) == "https://hc.example.com/ping/0f1e/fail?create=1"


def test_uptime_kuma_urls_replace_the_status_the_pasted_url_carries() -> None:
    pasted = "https://kuma.example.com/api/push/t0k?status=up&msg=OK&ping=&extra=1"
    assert uptime_kuma_url(pasted, PingEvent.FAIL, "backup FAILED: 1 volume, 1 failed") == (
        "https://kuma.example.com/api/push/t0k?extra=1&status=down&msg=backup+FAILED%3A+1+volume%2C+1+failed&ping="
    )
    assert "status=up" in uptime_kuma_url(pasted, PingEvent.SUCCESS, "x" * 500)
    assert len(uptime_kuma_url(pasted, PingEvent.SUCCESS, "x" * 500)) < 300  # the message is cut


def test_scrub_hides_every_part_of_a_url_but_its_scheme() -> None:
    url = "tgram://123456:AAbbCCdd/-100200300?silent=yes"
    text = f"Failed to send to {url}; chat -100200300 with bot 123456 (AAbbCCdd) x"
    assert scrub(text, url) == "Failed to send to tgram://***; chat *** with bot *** (***) x"
    assert described_url(url, "notify.urls[3]") == "tgram:// (notify.urls[3])"


def test_deliver_retries_only_delivery_errors_with_a_doubling_backoff() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise DeliveryError("answered HTTP 502 Bad Gateway")

    assert deliver(flaky, 3, sleep=waits.append) is None and waits == [2, 4]
    calls.clear()
    assert deliver(flaky, 2, sleep=waits.append) == "answered HTTP 502 Bad Gateway (after 2 attempts)"

    def bug() -> None:
        raise KeyError("a bug is not a delivery failure")

    with pytest.raises(KeyError):
        deliver(bug, 3, sleep=waits.append)


def volume(status: VolumeStatus, retention_errors: list[str] | None = None) -> VolumeResult:
    return VolumeResult("v", "p", Strategy.LIVE, status, retention_errors=retention_errors or [])


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (None, "failure"),
        (RunResult([volume(VolumeStatus.OK), volume(VolumeStatus.EXCLUDED)]), "success"),
        (RunResult([volume(VolumeStatus.OK), volume(VolumeStatus.WARNING)]), "warning"),
        (RunResult([volume(VolumeStatus.WARNING), volume(VolumeStatus.FAILED)]), "failure"),
        (RunResult([volume(VolumeStatus.OK, ["cannot delete x: EACCES"])]), "failure"),
        (RunResult([volume(VolumeStatus.OK)], errors=["container db was not put back"]), "failure"),
    ],
)
def test_the_outcome_of_a_run(result: RunResult | None, outcome: str) -> None:
    assert outcome_of(result) == outcome
