"""Dead-man pings: tell a monitoring service that a backup started and how it ended, so that a backup that never
ran (the host down, the daemon dead, the schedule wrong) raises an alarm there, where coord cannot.

Two styles, configured under `ping:` in `_defaults.yaml` (the whole run) and in a policy (its volumes):

- Healthchecks (healthchecks.io, and the self-hosted server, or anything that speaks its protocol): a POST to
  `<url>/start` when the run starts, then to `<url>` when it succeeded (ok or warning) or `<url>/fail` when it
  failed or was interrupted, with the run's summary as the body (Healthchecks shows it);
- Uptime Kuma push monitors: a GET of `<url>?status=up|down&msg=<one line>&ping=` when the run ends (a push
  monitor has no "started"). The URL may be pasted as Kuma shows it, with its `?status=up&msg=OK&ping=`.

The service alarms when the success ping does not come in time: configure its period and grace there. A ping
that fails is retried (coord.delivery), then logged; it never changes the backup's outcome. Ping URLs hold their
secret (check UUID, push token) in the path, so only their scheme and host are logged.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from coord import __version__
from coord.delivery import Delivery, DeliveryError, deliver, scrub
from coord.notify import check_webhook_url, describe_failure, public_target

log = logging.getLogger("coord.pings")

MAX_BODY_BYTES = 100_000  # Healthchecks keeps the first 100 kB of a ping's body
MAX_KUMA_MESSAGE = 200  # characters of the one-line message in a push URL's query


class PingEvent(StrEnum):
    START = "start"
    SUCCESS = "success"
    FAIL = "fail"


PingUrl = Annotated[str, AfterValidator(check_webhook_url), Field(examples=["https://hc-ping.com/<check uuid>"])]


class Pings(BaseModel):
    """Dead-man pings around each run that backs up these volumes (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ping")

    healthchecks: list[PingUrl] = Field(
        default_factory=list,
        description=(
            "Healthchecks-style ping URLs: POST <url>/start when the run starts, <url> when it succeeded (ok or "
            "warning), <url>/fail when it failed or was interrupted; the body is the run's summary."
        ),
        examples=[["https://hc-ping.com/0f1e2d3c-0000-4000-8000-000000000000"]],
    )
    uptime_kuma: list[PingUrl] = Field(
        default_factory=list,
        description=(
            "Uptime Kuma push URLs: GET <url>?status=up (succeeded) or status=down (failed or interrupted) with a "
            "one-line msg when the run ends. Its own ?status=up&msg=OK&ping= may be left on: coord replaces it."
        ),
        examples=[["https://kuma.example.com/api/push/AbCdEf1234"]],
    )
    timeout_s: float = Field(default=10, gt=0, le=120, description="Seconds before one ping attempt is given up.")
    attempts: int = Field(
        default=3, ge=1, le=10, description="Tries per ping before it is given up and logged; 2 s, then 4 s... between."
    )

    @property
    def empty(self) -> bool:
        return not self.healthchecks and not self.uptime_kuma


def healthchecks_url(url: str, event: PingEvent) -> str:
    """`<url>/start`, `<url>` or `<url>/fail`, the query kept."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    suffix = {PingEvent.START: "/start", PingEvent.SUCCESS: "", PingEvent.FAIL: "/fail"}[event]
    return urlunsplit(parts._replace(path=path + suffix))


def uptime_kuma_url(url: str, event: PingEvent, message: str) -> str:
    """The push URL with status, msg and ping set (replacing those the URL carries), its other parameters kept."""
    parts = urlsplit(url)
    kept = [pair for pair in parse_qsl(parts.query, keep_blank_values=True) if pair[0] not in ("status", "msg", "ping")]
    status = "up" if event is PingEvent.SUCCESS else "down"
    query = urlencode([*kept, ("status", status), ("msg", message[:MAX_KUMA_MESSAGE]), ("ping", "")])
    return urlunsplit(parts._replace(query=query))


def http_ping(url: str, body: bytes | None, timeout_s: float) -> None:
    """POST `body` (GET when None) to `url`; raises OSError (URLError, HTTPError, timeouts) unless answered 2xx."""
    request = urllib.request.Request(
        url,
        data=body,
        headers={"User-Agent": f"coord/{__version__}", "Content-Type": "text/plain; charset=utf-8"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read(65536)


class Pinger:
    """Sends the pings of one set of settings; never raises for a failed ping."""

    def __init__(
        self,
        request: Callable[[str, bytes | None, float], None] = http_ping,
        on_delivery: Callable[[Delivery], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._request = request
        self._sleep = sleep
        self.on_delivery = on_delivery

    def started(self, settings: Pings) -> list[Delivery]:
        """`/start` to each Healthchecks URL (Uptime Kuma push monitors have no start)."""
        return [
            self._ping(url, healthchecks_url(url, PingEvent.START), PingEvent.START, b"", settings)
            for url in settings.healthchecks
        ]

    def finished(self, settings: Pings, succeeded: bool, line: str, text: str) -> list[Delivery]:
        """Success or fail to every URL: `line` (one line) for Uptime Kuma, `text` (the summary) as the body of
        Healthchecks pings."""
        event = PingEvent.SUCCESS if succeeded else PingEvent.FAIL
        body = text.encode()[:MAX_BODY_BYTES]
        deliveries = [
            self._ping(url, healthchecks_url(url, event), event, body, settings) for url in settings.healthchecks
        ]
        deliveries += [
            self._ping(url, uptime_kuma_url(url, event, line), event, None, settings) for url in settings.uptime_kuma
        ]
        return deliveries

    def _ping(self, url: str, address: str, event: PingEvent, body: bytes | None, settings: Pings) -> Delivery:
        def call() -> None:
            try:
                self._request(address, body, settings.timeout_s)
            except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
                raise DeliveryError(describe_failure(error, address)) from None

        error = deliver(call, settings.attempts, sleep=self._sleep)
        target = public_target(url)
        delivery = Delivery(target, event.value, None if error is None else scrub(error, url), kind="ping")
        if delivery.error is None:
            log.info("pinged %s: %s", target, event.value)
        else:
            log.warning("ping %s to %s failed: %s (the backup is not affected)", event.value, target, delivery.error)
        if self.on_delivery:
            self.on_delivery(delivery)
        return delivery
