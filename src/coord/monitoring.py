"""What the world outside hears about a run: dead-man pings, notifications and the metrics file.

    run starts -> Healthchecks /start for the whole run and for each policy in it that has pings
    run ends   -> metrics file rewritten from the history
               -> per scope (the whole run, each policy with `notify:`/`ping:`): its outcome (failure, warning,
                  success) -> success or fail pings -> notifications when `on` lists the outcome

A scope is what a ping or notification is about: `_defaults.yaml` configures the whole run (every volume, and
the run's own problems); a policy's own `notify:`/`ping:` are about its volumes (and the run's own problems,
such as a container not put back, which concern every policy). An interrupted run gets fail pings (the backup
did not happen) but no notification (someone asked for the stop). Nothing here raises for a failed delivery:
each is logged and returned as a Delivery.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from coord import __version__
from coord.backup.context import BackupRequest
from coord.delivery import Delivery
from coord.errors import CoordError
from coord.history import History
from coord.metrics import write_metrics_file
from coord.notify import Message, Notifier, Notify, NotifyEvent, Outcome, PolicyNotify
from coord.pings import Pinger, Pings
from coord.policy import load_policies
from coord.render import notification_text, notification_title, run_line
from coord.results import RunResult, VolumeStatus
from coord.timestamps import utc_iso

log = logging.getLogger("coord.monitoring")

ALL_POLICIES = "all policies"


@dataclass(frozen=True)
class Scope:
    """What a set of pings and notifications is about: the whole run (`policy` None) or one policy's volumes."""

    label: str  # `all policies` or `policy pg`: in titles
    policy: str | None
    notify: PolicyNotify | None
    ping: Pings
    where: str  # where the settings are written, for logs: `notify.urls` or `policy pg: notify.urls`


@dataclass(frozen=True)
class Ending:
    """How a recorded run ended, as monitoring needs it."""

    run_id: int
    status: str  # the history's: ok, failed, interrupted
    result: RunResult | None
    error: str | None
    started: datetime
    log_tail: list[str] = field(default_factory=list)


def scoped(result: RunResult, policy: str | None) -> RunResult:
    """`result` with only `policy`'s volumes (all of them for None); the run's own problems are kept."""
    if policy is None:
        return result
    return RunResult([v for v in result.volumes if v.policy == policy], list(result.errors), [])


def outcome_of(result: RunResult | None) -> Outcome:
    """failure when there is no result (the run could not be done), a volume failed or could not be pruned, or
    the run has problems of its own; warning when a volume is `warning`; success otherwise."""
    if result is None or not result.ok:
        return Outcome.FAILURE
    if any(volume.status is VolumeStatus.WARNING for volume in result.volumes):
        return Outcome.WARNING
    return Outcome.SUCCESS


class Monitoring:
    """The run-level settings (`_defaults.yaml` and the command line) and what sends: a Notifier, a Pinger."""

    def __init__(
        self,
        notify: Notify | None = None,
        ping: Pings | None = None,
        metrics_file: Path | None = None,
        notifier: Notifier | None = None,
        pinger: Pinger | None = None,
    ) -> None:
        self.notifier = notifier or Notifier(notify or Notify())
        self.ping = ping or Pings()
        self.metrics_file = metrics_file
        self.pinger = pinger or Pinger()
        self.host = socket.gethostname()

    def on_delivery(self, callback: Callable[[Delivery], None]) -> None:
        """Call `callback` with every delivery, as it is made (the daemon logs each as an event)."""
        self.notifier.on_delivery = callback
        self.pinger.on_delivery = callback

    def scopes(self, request: BackupRequest) -> list[Scope]:
        """The whole run's scope and one per selected policy with `notify:` or `ping:`. Policies that cannot be
        loaded give no scope (the run itself fails on them, and the whole run's scope says so)."""
        settings = self.notifier.settings
        scopes = [Scope(ALL_POLICIES, None, settings if settings.urls else None, self.ping, "notify.urls")]
        try:
            loaded = load_policies(request.policies_dir, request.policy_names or None)
        except CoordError as error:
            log.warning("policy notifications and pings skipped: %s", error.message)
            return scopes
        for item in loaded:
            if request.policy_names and item.name not in request.policy_names:
                continue
            if item.policy.notify is not None or item.policy.ping is not None:
                label = f"policy {item.name}"
                ping = item.policy.ping or Pings()
                scopes.append(Scope(label, item.name, item.policy.notify, ping, f"{label}: notify.urls"))
        return scopes

    def started(self, scopes: list[Scope]) -> list[Delivery]:
        """The start pings of every scope."""
        return [delivery for scope in scopes for delivery in self.pinger.started(scope.ping)]

    def finished(self, scopes: list[Scope], ending: Ending, request: BackupRequest, history: History) -> list[Delivery]:
        """Rewrite the metrics file, then each scope's end pings and notifications."""
        deliveries = self.write_metrics(history, request.policies_dir)
        for scope in scopes:
            result = scoped(ending.result, scope.policy) if ending.result is not None else None
            outcome = Outcome.FAILURE if ending.status == "interrupted" else outcome_of(result)
            text = notification_text(self.host, ending.run_id, result, ending.error)
            title = notification_title(self.host, outcome.value, scope.label, result)
            deliveries += self.pinger.finished(scope.ping, outcome is not Outcome.FAILURE, title, text)
            if scope.notify is not None and ending.status != "interrupted":
                document = notification_body(outcome.value, ending, result, request)
                deliveries += self.notifier.announce(scope.notify, scope.where, Message(outcome, title, text, document))
        return deliveries

    def write_metrics(self, history: History, policies_dir: Path) -> list[Delivery]:
        """Rewrite the metrics file (when one is configured); a failure is logged and returned, never raised."""
        if self.metrics_file is None:
            return []
        target = str(self.metrics_file)
        try:
            write_metrics_file(self.metrics_file, history, policies_dir)
        except CoordError as error:
            problem = error.message
        except OSError as error:
            problem = f"{error.filename or target}: {error.strerror or error}"
        else:
            log.info("metrics written to %s", target)
            return [self._reported(Delivery(target, "write", None, kind="metrics"))]
        log.warning("metrics file not written: %s (the backup is not affected)", problem)
        return [self._reported(Delivery(target, "write", problem, kind="metrics"))]

    def _reported(self, delivery: Delivery) -> Delivery:
        if self.notifier.on_delivery:
            self.notifier.on_delivery(delivery)
        return delivery


def notification_body(event: str, ending: Ending, result: RunResult | None, request: BackupRequest) -> dict[str, Any]:
    """The JSON a webhook receives (besides `event`): a one-line `text` for chat tools, the run, its result."""
    host = socket.gethostname()
    run_id = ending.run_id
    status = "running" if event == NotifyEvent.START else ending.status
    if event == NotifyEvent.START:
        text = f"coord on {host}: backup run {run_id} started"
    elif result is not None:
        text = f"coord on {host}: backup {run_line(run_id, status, result)}"
    else:
        text = f"coord on {host}: backup run {run_id} could not be done: {ending.error}"
    return {
        "text": text,
        "tool": "coord",
        "tool_version": __version__,
        "host": host,
        "run": {
            "id": run_id,
            "status": status,
            "started_at": utc_iso(ending.started),
            "policies": list(request.policy_names),
            "error": ending.error,
        },
        "result": result.to_json() if result is not None else None,
        "log_tail": list(ending.log_tail),
    }
