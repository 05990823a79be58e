"""Webhook notifications: a JSON POST when a run starts, succeeds or fails, with the tail of its log.

A notification never changes a backup's outcome: a webhook that times out, refuses the connection or answers
an error is logged (and shown by the daemon) and that is all. Webhook URLs often carry a secret in their path
or query (Slack, Discord, ntfy tokens), so only their scheme and host are ever logged.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from coord import __version__

log = logging.getLogger("coord.notify")


class NotifyEvent(StrEnum):
    START = "start"
    SUCCESS = "success"
    FAILURE = "failure"


def public_target(url: str) -> str:
    """scheme://host[:port] of a URL: what may be logged (no user info, path or query, where secrets live)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # never echo the URL: it may hold a token
        raise ValueError(f"expected an http:// or https:// URL with a host, got one starting '{parts.scheme}:'")
    return url


WebhookUrl = Annotated[
    str, AfterValidator(check_webhook_url), Field(examples=["https://hooks.example.com/services/T000/B000/XXXX"])
]


class Webhook(BaseModel):
    """A URL that receives a JSON POST on the chosen events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: WebhookUrl = Field(description="http(s) URL to POST to. Only its scheme and host are ever logged.")
    events: list[NotifyEvent] = Field(
        default_factory=lambda: [NotifyEvent.FAILURE],
        min_length=1,
        description=(
            "When to call it: failure (a volume failed, a container was not put back, or the run could not be "
            "done), success (every volume ok, warning or excluded), start. Default: [failure]."
        ),
        examples=[["failure"], ["failure", "success"]],
    )
    timeout_s: float = Field(default=10, gt=0, le=120, description="Seconds before the call is given up.")

    @field_validator("events")
    @classmethod
    def _unique_events(cls, value: list[NotifyEvent]) -> list[NotifyEvent]:
        if len(set(value)) != len(value):
            raise ValueError("an event is listed more than once")
        return value


class Notify(BaseModel):
    """Notifications sent around every backup run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[Webhook] = Field(default_factory=list, description="Webhooks to call.")
    log_lines: int = Field(default=50, ge=0, le=1000, description="How many of the run's last log lines to send.")


@dataclass(frozen=True)
class Delivery:
    """How one webhook call went. `target` is scheme://host only."""

    target: str
    event: str
    error: str | None = None


def post_json(url: str, body: dict[str, Any], timeout_s: float) -> None:
    """POST `body` as JSON; raises OSError (URLError, HTTPError, timeouts) when it does not get a 2xx answer."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": f"coord/{__version__}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read(65536)


def describe_failure(error: BaseException, url: str) -> str:
    """A message for a failed call that never contains the URL."""
    if isinstance(error, urllib.error.HTTPError):
        text = f"answered HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        reason = error.reason
        text = str(reason.strerror or reason) if isinstance(reason, OSError) else str(reason)
    elif isinstance(error, TimeoutError):
        text = "timed out"
    else:
        text = str(error) or type(error).__name__
    return text.replace(url, public_target(url))


class Notifier:
    """Calls the configured webhooks; never raises for a failed call."""

    def __init__(
        self,
        settings: Notify,
        post: Callable[[str, dict[str, Any], float], None] = post_json,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.settings = settings
        self._post = post
        self.on_delivery = on_delivery  # the daemon logs each call as an event

    def wants(self, event: NotifyEvent) -> bool:
        return any(event in hook.events for hook in self.settings.webhooks)

    def send(self, event: NotifyEvent, body: dict[str, Any]) -> list[Delivery]:
        deliveries = []
        for hook in self.settings.webhooks:
            if event not in hook.events:
                continue
            target = public_target(hook.url)
            try:
                self._post(hook.url, {"event": event.value, **body}, hook.timeout_s)
                delivery = Delivery(target, event.value)
                log.info("notified %s of %s", target, event.value)
            except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
                delivery = Delivery(target, event.value, describe_failure(error, hook.url))
                log.warning(
                    "notification of %s to %s failed: %s (the backup is not affected)", event, target, delivery.error
                )
            deliveries.append(delivery)
            if self.on_delivery:
                self.on_delivery(delivery)
        return deliveries


class LogTail(logging.Handler):
    """The last `size` log lines of coord's loggers, INFO and up, kept while `capturing()`."""

    def __init__(self, size: int) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line that cannot be formatted must not break a backup
            self.handleError(record)

    @contextmanager
    def capturing(self, logger_name: str = "coord") -> Iterator[LogTail]:
        """Attach to `logger_name` and let its INFO records through (stderr handlers keep their own level)."""
        logger = logging.getLogger(logger_name)
        previous = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(previous)
