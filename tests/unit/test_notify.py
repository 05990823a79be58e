"""Notifications: the defaults file's validation, secrets kept out of logs, failed calls never raise."""

import logging
import urllib.error
from pathlib import Path

import pytest

from coord.defaults import load_defaults
from coord.errors import PolicyError
from coord.notify import LogTail, Notifier, Notify, NotifyEvent, Webhook, describe_failure, public_target
from coord.policy import load_policies

SECRET = "https://user:pw@hooks.example.com:8443/services/T0/B0/s3cr3t?token=abc"


def test_defaults_problems_name_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text(
        "notify:\n"
        "  webhooks:\n"
        "    - url: ftp://hooks.example.com/s3cr3t\n"
        "      events: [failure, sucess]\n"
        "      urll: x\n"
        "  log_line: 4\n"
    )
    with pytest.raises(PolicyError) as raised:
        load_defaults(tmp_path)
    path = tmp_path / "_defaults.yaml"
    assert raised.value.problems == [
        f"{path}:3: notify.webhooks[0].url: expected an http:// or https:// URL with a host, got one starting 'ftp:'",
        f"{path}:4: notify.webhooks[0].events[1]: 'sucess' is not one of start, success, failure",
        f"{path}:5: notify.webhooks[0].urll: unknown key 'urll' (did you mean 'url'?); allowed keys: url, events, "
        "timeout_s",
        f"{path}:6: notify.log_line: unknown key 'log_line' (did you mean 'log_lines'?); allowed keys: urls, on, "
        "webhooks, log_lines, attempts",
    ]
    assert "s3cr3t" not in str(raised.value.problems)


def test_defaults_file_is_optional_not_a_policy_and_defaults_to_failure_only(tmp_path: Path) -> None:
    assert load_defaults(tmp_path).notify.webhooks == []
    (tmp_path / "db.yaml").write_text("volumes: [a]\nstrategy: live\n")
    (tmp_path / "_defaults.yaml").write_text("notify:\n  webhooks: [{url: 'http://127.0.0.1:1/x'}]\n")
    assert [p.name for p in load_policies(tmp_path)] == ["db"]
    [hook] = load_defaults(tmp_path).notify.webhooks
    assert hook.events == [NotifyEvent.FAILURE] and hook.timeout_s == 10
    (tmp_path / "_defaults.yaml").write_text("")
    assert load_defaults(tmp_path).notify.log_lines == 50
    (tmp_path / "_defaults.yml").write_text("")
    with pytest.raises(PolicyError, match="keep one file"):
        load_defaults(tmp_path)


def test_only_scheme_and_host_are_shown() -> None:
    assert public_target(SECRET) == "https://hooks.example.com:8443"
    assert public_target("http://[::1]/x") == "http://[::1]"
    error = urllib.error.URLError(f"cannot open {SECRET}")
    assert describe_failure(error, SECRET) == "cannot open https://hooks.example.com:8443"
    assert describe_failure(urllib.error.HTTPError(SECRET, 404, "Not Found", {}, None), SECRET) == (  # type: ignore[arg-type]
        "answered HTTP 404 Not Found"
    )


def test_a_failing_webhook_is_retried_then_reported_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def post(url, body, timeout):
        calls.append((url, body["event"], timeout))
        if "bad" in url:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    settings = Notify(
        webhooks=[
            Webhook(url="http://bad.example/s3cr3t", events=["failure", "start"]),
            Webhook(url="http://good.example/s3cr3t", events=["success", "failure"], timeout_s=2),
        ]
    )
    seen = []
    waits: list[float] = []
    notifier = Notifier(settings, post, on_delivery=seen.append, sleep=waits.append)
    assert notifier.wants(NotifyEvent.START) and not Notifier(Notify(), post).wants(NotifyEvent.FAILURE)
    with caplog.at_level(logging.WARNING, "coord.notify"):
        deliveries = notifier.send(NotifyEvent.FAILURE, {"text": "x"})
    assert [(d.target, d.error) for d in deliveries] == [
        ("http://bad.example", "Connection refused (after 3 attempts)"),
        ("http://good.example", None),
    ]
    assert seen == deliveries
    assert [c[1:] for c in calls] == [("failure", 10)] * 3 + [("failure", 2)]
    assert waits == [2, 4]  # the backoff between the three attempts
    assert "s3cr3t" not in caplog.text and "http://bad.example failed: Connection refused" in caplog.text


def test_log_tail_keeps_the_last_lines_at_info_without_changing_other_handlers() -> None:
    logger = logging.getLogger("coord.test-tail")
    tail = LogTail(3)
    with tail.capturing():
        for number in range(5):
            logger.info("line %d", number)
    logger.info("after")
    assert [line.rsplit(": ", 1)[1] for line in tail.lines] == ["line 2", "line 3", "line 4"]
    assert logging.getLogger("coord").level == logging.NOTSET
