"""Which engine coord talks to, and the worker's side of `coord gateway` (docs/swarm.md).

`connect_engine()` is the one place that decides, for every command that needs the engine (backup, daemon,
recover, plan, restore, drill, validate):

- `COORD_SWARM_GATEWAY` set (the gateway's URL, with `COORD_SWARM_GATEWAY_TOKEN_FILE`): the local engine for
  everything, except Swarm services, which are read and updated through the gateway on a manager;
- a Swarm worker without a gateway: the local engine, but reading or updating a service fails with a message that
  says what to set (a volume used by a task fails, in the plan too, rather than being backed up unclaimed);
- otherwise (a manager, or no swarm): the local engine.

swarm.py talks only to the Engine protocol (`service`, `update_service`), so claims, scaling to 0 and back, and
`coord recover` work through the gateway unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from coord.docker_ops import DockerControl, ServiceChanged, ServiceInfo, with_retries
from coord.errors import DockerError, UsageError
from coord.gateway import NODE_HEADER, read_token
from coord.node import this_node

GATEWAY_ENV = "COORD_SWARM_GATEWAY"
GATEWAY_TOKEN_FILE_ENV = "COORD_SWARM_GATEWAY_TOKEN_FILE"
READ_TIMEOUT_S = 15.0
# Per address the gateway's name resolves to (compose/stack.yml runs a gateway on every manager, `dnsrr`: one
# address each): a manager that is down answers nothing, and the next address is tried once this has passed.
CONNECT_TIMEOUT_S = 5.0
# The gateway's own engine call retries for up to a minute (docker_ops.RESTORE_DEADLINE_S, plus one call's 60 s).
UPDATE_TIMEOUT_S = 150.0
# Connection errors are retried for up to two minutes (backoff 0.25 s doubling to 8 s): a gateway task being
# rescheduled, or the name `gateway` not yet known on a node that just joined the stack's network (seen in the
# multi-node runs: "Failed to resolve 'gateway'" on the worker for 45 s, and 56 s, after the deploy). Nothing is
# paused or stopped while the claim waits: it is taken before the first change.
ATTEMPTS = 20
DEADLINE_S = 120.0


class GatewayClient:
    """Swarm service calls over the gateway's HTTP API. Connection errors and timeouts are retried (as the Docker
    calls are); an answer is never retried: 409 becomes ServiceChanged, any other error a DockerError carrying
    the gateway's message."""

    def __init__(
        self, url: str, token: str, node: str, session: requests.Session | None = None, attempts: int = ATTEMPTS
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.attempts = attempts
        self.headers = {"Authorization": f"Bearer {token}", NODE_HEADER: node}

    @classmethod
    def from_environment(cls, url: str, token_file: str | None) -> GatewayClient:
        """The client for `url`, its token read from `token_file`. Raises UsageError when the URL is not http(s)
        or the token file is not given or cannot be read."""
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"{GATEWAY_ENV}={url}: give the gateway's URL, e.g. http://gateway:8733")
        if not token_file:
            raise UsageError(
                f"{GATEWAY_ENV} is set but {GATEWAY_TOKEN_FILE_ENV} is not: name the file holding the gateway's "
                "token (in compose/stack.yml, the Docker secret /run/secrets/coord-gateway-token)"
            )
        return cls(url, read_token(Path(token_file)), this_node())

    def service(self, identifier: str) -> ServiceInfo | None:
        """The service (by id or name) as the manager sees it, or None when it no longer exists. Raises
        DockerError."""
        what = f"inspect service {identifier}"
        response = self._send(what, "GET", f"/v1/services/{quote(identifier, safe='')}", None, READ_TIMEOUT_S)
        if response.status_code == 404:
            return None
        data = self._answer(what, response)
        try:
            replicas = data["replicas"]
            return ServiceInfo(
                id=str(data["id"]),
                name=str(data["name"]),
                replicas=None if replicas is None else int(replicas),
                version=int(data["version"]),
                labels={str(key): str(value) for key, value in dict(data["labels"]).items()},
            )
        except (KeyError, TypeError, ValueError):
            raise DockerError(f"{what} through the Swarm gateway {self.url}: an answer coord cannot read") from None

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """Ask the gateway to update the service's replica count and/or labels at `service.version`. Raises
        ServiceChanged when the service changed since (nothing updated), DockerError for a refusal or failure."""
        what = f"update service {service.name}"
        body: dict[str, Any] = {"version": service.version}
        if replicas is not None:
            body["replicas"] = replicas
        if labels is not None:
            body["labels"] = labels
        path = f"/v1/services/{quote(service.id, safe='')}/update"
        response = self._send(what, "POST", path, body, UPDATE_TIMEOUT_S)
        if response.status_code == 409:
            raise ServiceChanged(f"service {service.name} changed since coord read it: {self._message(response)}")
        self._answer(what, response)

    def _send(
        self, what: str, method: str, path: str, body: dict[str, Any] | None, timeout_s: float
    ) -> requests.Response:
        def swarm_gateway_request() -> requests.Response:  # the name the retry log shows
            return self.session.request(
                method, self.url + path, json=body, headers=self.headers, timeout=(CONNECT_TIMEOUT_S, timeout_s)
            )

        try:
            return with_retries(swarm_gateway_request, self.attempts, deadline_s=DEADLINE_S)
        except requests.RequestException as error:
            raise DockerError(
                f"{what}: cannot reach the Swarm gateway at {self.url} ({GATEWAY_ENV}): {error}. Is the stack's "
                "gateway service running on a manager, and is this node's coord on its network?"
            ) from None

    def _answer(self, what: str, response: requests.Response) -> dict[str, Any]:
        if response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict):
                return data
            raise DockerError(f"{what} through the Swarm gateway {self.url}: an answer coord cannot read")
        message = self._message(response)
        if response.status_code == 401:
            message += f"; check that {GATEWAY_TOKEN_FILE_ENV} holds the gateway's token"
        raise DockerError(f"{what}: the Swarm gateway {self.url} answered {response.status_code}: {message}")

    @staticmethod
    def _message(response: requests.Response) -> str:
        try:
            return str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            return response.text[:300] or response.reason or "no message"


class ThroughGateway(DockerControl):
    """This node's engine for everything, except Swarm services: read and updated through the gateway."""

    def __init__(self, local: DockerControl, gateway: GatewayClient) -> None:
        super().__init__(local.client)
        self.gateway = gateway

    def service(self, identifier: str) -> ServiceInfo | None:
        return self.gateway.service(identifier)

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        self.gateway.update_service(service, replicas=replicas, labels=labels)


def worker_refusal(service: str) -> str:
    return (
        f"service {service}: this node is a Swarm worker, and Swarm reads and updates services on managers only, "
        f"so coord cannot claim or scale it from here. Run `coord gateway` on a manager (the gateway service of "
        f"compose/stack.yml) and set {GATEWAY_ENV}=http://<gateway>:8733 and {GATEWAY_TOKEN_FILE_ENV}=<the file "
        "holding its token> for coord on this node (docs/swarm.md)"
    )


class WorkerWithoutGateway(DockerControl):
    """A Swarm worker's engine with no gateway configured: reading or updating a service fails with what to set."""

    def service(self, identifier: str) -> ServiceInfo | None:
        raise DockerError(worker_refusal(identifier[:25]))

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        raise DockerError(worker_refusal(service.name))


def engine_for(local: DockerControl, environment: dict[str, str] | os._Environ[str]) -> DockerControl:
    """The engine coord uses, given the local one and the environment (the decision of the module docstring).
    Raises UsageError for an unusable gateway setting, DockerError when the engine's info cannot be read."""
    url = environment.get(GATEWAY_ENV)
    if url:
        return ThroughGateway(local, GatewayClient.from_environment(url, environment.get(GATEWAY_TOKEN_FILE_ENV)))
    if local.swarm_role() == "worker":
        return WorkerWithoutGateway(local.client)
    return local


def connect_engine() -> DockerControl:
    """Connect to the local engine (DOCKER_HOST) and choose how Swarm services are reached. Raises DockerError,
    UsageError."""
    return engine_for(DockerControl.connect(), os.environ)
