"""Sending something to a service outside coord (a notification, a dead-man ping), with retries, without secrets.

A delivery is tried `ATTEMPTS` times with an exponential backoff (2 s, then 4 s): a chat service that answers 502
for a moment, or a monitoring host that is restarting, still hears about the run. What finally fails is returned
as text, never raised: a backup's outcome never depends on whether anyone could be told about it.

Notification and ping URLs carry their secrets in every part (Telegram's bot token is the "host", ntfy and
Healthchecks tokens sit in the path, webhook passwords in the user info), so error texts are scrubbed of every
part of the URL before they are logged (`scrub`), and a URL itself is only ever shown as `described_url`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("coord.delivery")

ATTEMPTS = 3
FIRST_BACKOFF_S = 2.0
MIN_SECRET_LENGTH = 3  # shorter URL parts ("x", "80") are not worth hiding and would scrub every message


class DeliveryError(Exception):
    """One failed attempt; the message must already be free of secrets (see `scrub`)."""


@dataclass(frozen=True)
class Delivery:
    """How one call to an outside service went. `target` is what may be shown of the URL; `kind` is notify,
    ping or metrics; `event` what was sent (failure, start, ...); `error` None when it was delivered."""

    target: str
    event: str
    error: str | None = None
    kind: str = "notify"


def scrub(text: str, url: str) -> str:
    """`text` with every part of `url` except its scheme (user, password, host, port, path segments, query values)
    replaced by `***`, the URL itself first. Parts shorter than MIN_SECRET_LENGTH are kept."""
    parts = urlsplit(url)
    text = text.replace(url, f"{parts.scheme}://***")
    pieces = {unquote(piece) for piece in re.split(r"[/:@?&=#,;+]+", url.removeprefix(f"{parts.scheme}://"))}
    for piece in sorted(pieces, key=len, reverse=True):  # longest first: a token containing a shorter one
        if len(piece) >= MIN_SECRET_LENGTH:
            text = text.replace(piece, "***")
    return text


def described_url(url: str, where: str) -> str:
    """How a secret-bearing URL is named in logs and events: its scheme and where it is configured,
    `ntfy:// (notify.urls[0])`."""
    return f"{urlsplit(url).scheme}:// ({where})"


def deliver(
    send: Callable[[], None],
    attempts: int = ATTEMPTS,
    first_backoff_s: float = FIRST_BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Call `send` until it returns, at most `attempts` times, waiting first_backoff_s, then twice that, ...
    between tries. Returns None when delivered, else the last DeliveryError's message. Only DeliveryError is
    retried: anything else is a bug and propagates."""
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=first_backoff_s, min=first_backoff_s),
        retry=retry_if_exception_type(DeliveryError),
        sleep=sleep,
        reraise=True,
    )
    try:
        retrying(send)
    except DeliveryError as error:
        return f"{error} (after {attempts} attempts)" if attempts > 1 else str(error)
    return None
