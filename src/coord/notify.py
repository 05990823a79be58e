"""Notifications: where operators already are (Apprise URLs), and coord's own JSON webhooks.

Two kinds of URL, configured under `notify:` in `_defaults.yaml` (the whole run) and in a policy (its volumes):

- an Apprise URL (`ntfy://`, `gotify://`, `slack://`, `matrix://`, `tgram://`, `mailto://`, `json://`, `form://`,
  ...: https://github.com/caronc/apprise/wiki): a title and the run's summary text, sent on the outcomes listed
  in `on` (failure, warning, success);
- a plain `http(s)://` URL: coord's JSON webhook, a POST of the run's whole result as JSON (`webhooks:` keeps
  the older form with its own `events`, start included).

A notification never changes a backup's outcome: one that times out, is refused or answers an error is retried
(coord.delivery), then logged (and shown by the daemon) and that is all. URLs carry secrets in every part, so
they are never logged: a webhook shows its scheme and host, an Apprise URL its scheme and where it is configured.
"""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from coord import __version__
from coord.delivery import Delivery, DeliveryError, deliver, described_url, scrub

log = logging.getLogger("coord.notify")


class NotifyEvent(StrEnum):
    START = "start"
    SUCCESS = "success"
    FAILURE = "failure"


class Outcome(StrEnum):
    """How a run (or one policy's part of it) ended, for notifications: every volume ok or excluded (success),
    some volume warning and none failed (warning), or a volume failed or the run could not be done (failure)."""

    FAILURE = "failure"
    WARNING = "warning"
    SUCCESS = "success"


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


WEBHOOK_SCHEMES = ("http", "https")
APPRISE_WIKI = "https://github.com/caronc/apprise/wiki"


def check_notify_url(url: str) -> str:
    """An Apprise URL Apprise can send to, or an http(s):// webhook URL; raises ValueError (never quoting the URL,
    which may hold a token) for anything else."""
    parts = urlsplit(url)
    if parts.scheme in WEBHOOK_SCHEMES:
        return check_webhook_url(url)
    if not parts.scheme or "://" not in url:
        raise ValueError(
            "expected a URL: an Apprise URL (ntfy://, gotify://, slack://, tgram://, mailto://, json://, ...) or an "
            "http(s):// webhook"
        )
    if not apprise_accepts(url):
        raise ValueError(
            f"'{parts.scheme}://...' is not a notification URL Apprise can use (unknown service, or a part of the "
            f"URL is missing or wrong): see {APPRISE_WIKI}"
        )
    return url


NotifyUrl = Annotated[
    str,
    AfterValidator(check_notify_url),
    Field(examples=["ntfy://ntfy.example.com/backups", "https://hooks.example.com/coord"]),
]


class PolicyNotify(BaseModel):
    """Notifications about this policy's volumes, after each run that backs them up."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="notify")

    urls: list[NotifyUrl] = Field(
        min_length=1,
        description=(
            "Where to send: Apprise URLs (ntfy://, gotify://, slack://, matrix://, tgram://, mailto://, json://, "
            f"form://, ...; {APPRISE_WIKI}) get a title and the run's summary text; a plain http(s):// URL gets "
            "coord's JSON webhook POST. URLs are never logged (they hold tokens): only their scheme."
        ),
        examples=[["ntfy://ntfy.example.com/backups", "mailto://user:password@example.com"]],
    )
    on: list[Outcome] = Field(
        default_factory=lambda: [Outcome.FAILURE, Outcome.WARNING],
        min_length=1,
        description=(
            "Which outcomes to send: failure (a volume failed, a container was not put back, or the run could not "
            "be done), warning (every volume kept, some with warnings), success (every volume ok or excluded). "
            "Default: [failure, warning]."
        ),
        examples=[["failure"], ["failure", "warning", "success"]],
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads an unquoted `on:` key as the boolean true: give it back its name.
        if isinstance(data, dict) and any(key is True for key in data) and "on" not in data:
            return {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("on")
    @classmethod
    def _unique_outcomes(cls, value: list[Outcome]) -> list[Outcome]:
        if len(set(value)) != len(value):
            raise ValueError("an outcome is listed more than once")
        return value


class Notify(PolicyNotify):
    """Notifications about every backup run."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="notify")

    urls: list[NotifyUrl] = Field(
        default_factory=list,
        description=PolicyNotify.model_fields["urls"].description,
        examples=PolicyNotify.model_fields["urls"].examples,
    )
    webhooks: list[Webhook] = Field(
        default_factory=list,
        description="JSON webhooks with their own events (start too); a plain http(s):// URL in urls is the same.",
    )
    log_lines: int = Field(default=50, ge=0, le=1000, description="How many of the run's last log lines to send.")
    attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description=(
            "Tries per notification (of the defaults and of every policy) before it is given up and logged; "
            "2 s between the first two, doubling after."
        ),
    )


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


@dataclass(frozen=True)
class Message:
    """One notification, in both forms: `title` and `text` (the run's summary) for Apprise, `document` (coord's
    JSON body, without `event`) for webhooks."""

    outcome: Outcome
    title: str
    text: str
    document: dict[str, Any]


@contextmanager
def quiet_apprise() -> Iterator[io.StringIO]:
    """Apprise's log lines (WARNING and up) collected instead of printed: they may name a URL's parts."""
    import apprise

    logger = logging.getLogger(apprise.LOGGER_NAME)
    propagate = logger.propagate
    logger.propagate = False
    try:
        capture = apprise.LogCapture(level=logging.WARNING, fmt="%(message)s")  # type: ignore[no-untyped-call]  # apprise leaves LogCapture unannotated
        with capture as captured:
            yield captured
    finally:
        logger.propagate = propagate


def apprise_accepts(url: str) -> bool:
    """Whether Apprise knows the URL's service and can parse it (nothing is sent)."""
    import apprise  # imported when a URL is given: ~0.2 s that `coord plan` without notifications never pays

    with quiet_apprise():
        return apprise.Apprise.instantiate(url) is not None


def send_apprise(url: str, title: str, text: str, outcome: Outcome) -> None:
    """Send one notification through Apprise. Raises DeliveryError with Apprise's reason, scrubbed of the URL."""
    import apprise

    kinds = {
        Outcome.FAILURE: apprise.NotifyType.FAILURE,
        Outcome.WARNING: apprise.NotifyType.WARNING,
        Outcome.SUCCESS: apprise.NotifyType.SUCCESS,
    }
    sender = apprise.Apprise()
    with quiet_apprise() as captured:
        if not sender.add(url):
            raise DeliveryError("Apprise could not read this URL")
        sent = sender.notify(body=text, title=title, notify_type=kinds[outcome], body_format=apprise.NotifyFormat.TEXT)
    if not sent:
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        raise DeliveryError(scrub(lines[-1], url) if lines else "the service did not accept the notification")


class Notifier:
    """Sends notifications: coord's JSON webhooks and Apprise URLs, each retried (coord.delivery); never raises
    for a failed call."""

    def __init__(
        self,
        settings: Notify,
        post: Callable[[str, dict[str, Any], float], None] = post_json,
        on_delivery: Callable[[Delivery], None] | None = None,
        apprise_send: Callable[[str, str, str, Outcome], None] = send_apprise,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._post = post
        self._apprise_send = apprise_send
        self._sleep = sleep
        self.on_delivery = on_delivery  # the daemon logs each call as an event

    def wants(self, event: NotifyEvent) -> bool:
        return any(event in hook.events for hook in self.settings.webhooks)

    def send(self, event: NotifyEvent, body: dict[str, Any]) -> list[Delivery]:
        """Call the `webhooks:` that want `event` with `body` (and `event`)."""
        return [
            self._deliver(
                hook.url, public_target(hook.url), event.value, self._webhook_call(hook.url, body, event, hook)
            )
            for hook in self.settings.webhooks
            if event in hook.events
        ]

    def announce(self, settings: PolicyNotify, where: str, message: Message) -> list[Delivery]:
        """Send `message` to each of `settings.urls` when its outcome is in `settings.on`; `where` names the
        settings in logs (`notify.urls` of the defaults, `policy pg: notify.urls`)."""
        if message.outcome not in settings.on:
            return []
        deliveries = []
        for index, url in enumerate(settings.urls):
            if urlsplit(url).scheme in WEBHOOK_SCHEMES:
                target = public_target(url)
                hook = Webhook(url=url)
                call = self._webhook_call(url, message.document, message.outcome, hook)
            else:
                target = described_url(url, f"{where}[{index}]")
                call = self._apprise_call(url, message)
            deliveries.append(self._deliver(url, target, message.outcome.value, call))
        return deliveries

    def _webhook_call(self, url: str, body: dict[str, Any], event: str, hook: Webhook) -> Callable[[], None]:
        def call() -> None:
            try:
                self._post(url, {"event": str(event), **body}, hook.timeout_s)
            except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
                raise DeliveryError(describe_failure(error, url)) from None

        return call

    def _apprise_call(self, url: str, message: Message) -> Callable[[], None]:
        return lambda: self._apprise_send(url, message.title, message.text, message.outcome)

    def _deliver(self, url: str, target: str, event: str, call: Callable[[], None]) -> Delivery:
        error = deliver(call, self.settings.attempts, sleep=self._sleep)
        delivery = Delivery(target, event, None if error is None else scrub(error, url))
        if delivery.error is None:
            log.info("notified %s of %s", target, event)
        else:
            log.warning(
                "notification of %s to %s failed: %s (the backup is not affected)", event, target, delivery.error
            )
        if self.on_delivery:
            self.on_delivery(delivery)
        return delivery


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
