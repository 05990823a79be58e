"""`coord gateway`: the Swarm calls coord needs from a manager, served to coord on worker nodes (docs/swarm.md).

Swarm answers service inspections and updates on managers only, and coord needs both on every node: the claim
(a `coord.claim` label written with the version read) and `stop` (scale a replicated service to 0 and back). The
gateway runs on a manager beside its engine socket and exposes exactly that, nothing more:

    GET  /v1/services/<id or name>   -> {"id", "name", "replicas" (null: global), "version", "labels"}; 404: gone
    POST /v1/services/<id>/update    <- {"version", "replicas"?, "labels"?}; applied with the version, 409 when the
                                        service changed since (Swarm's optimistic concurrency, as on a manager)

A worker's containers share the worker's network, so the gateway must not become a way to change the fleet:
every request carries the shared token (`Authorization: Bearer`, compared in constant time; 401 without it) and
names its node (`X-Coord-Node`, logged), and an update may change only the `coord.claim` label and the replica
count of a replicated service that carries a claim, to 0 or back from 0 (any other key, any other label, a global
service's mode, scaling an unclaimed service or from one running count to another: 403 with the reason). The
rest of the spec is read from the engine and sent back as it is (DockerControl.update_service), never taken
from the request. Every update and every refusal is logged with the node, the service and what changed.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from coord.docker_ops import Engine, ServiceChanged, ServiceInfo
from coord.errors import CoordError, UsageError
from coord.swarm import CLAIM_LABEL, Claim

log = logging.getLogger("coord.gateway")

DEFAULT_PORT = 8733
NODE_HEADER = "X-Coord-Node"
MAX_BODY_BYTES = 64 * 1024  # a claim and a few labels; anything larger is not coord talking
MIN_TOKEN_CHARS = 16
UPDATE_KEYS = frozenset({"version", "replicas", "labels"})
# A service id or name as Swarm makes them: nothing that could turn the engine URL built from it into another path.
SERVICE_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class Refused(Exception):
    """A request the gateway answers with an error status and an operator message (never applied)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UpdateRequest:
    """What a worker may ask for: the version it read, and a new replica count and/or label set."""

    version: int
    replicas: int | None
    labels: dict[str, str] | None


def read_token(path: Path) -> str:
    """The shared token: the file's content without surrounding whitespace.

    Raises UsageError when the file cannot be read or holds fewer than MIN_TOKEN_CHARS characters.
    """
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"token file {path}: cannot read it ({error})") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"token file {path}: the token has {len(token)} characters, at least {MIN_TOKEN_CHARS} are needed "
            "(make one with: openssl rand -hex 32)"
        )
    return token


def service_json(service: ServiceInfo) -> dict[str, Any]:
    return asdict(service)


def parse_update(body: object) -> UpdateRequest:
    """The update a request body asks for. Raises Refused: 403 for a key other than version, replicas and labels
    (nothing else of a service's spec can be sent), 400 for a body that is not that shape."""
    if not isinstance(body, dict):
        raise Refused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object {version, replicas?, labels?}")
    others = sorted(set(body) - UPDATE_KEYS)
    if others:
        raise Refused(
            HTTPStatus.FORBIDDEN,
            f"the gateway changes only a service's replica count and its {CLAIM_LABEL} label; refused: "
            f"{', '.join(others)} (change anything else on a manager with docker service update)",
        )
    version, replicas, labels = body.get("version"), body.get("replicas"), body.get("labels")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise Refused(HTTPStatus.BAD_REQUEST, "version: the service version read (a whole number) is required")
    if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0):
        raise Refused(HTTPStatus.BAD_REQUEST, "replicas: a whole number >= 0")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    ):
        raise Refused(HTTPStatus.BAD_REQUEST, "labels: an object of strings")
    return UpdateRequest(version, replicas, None if labels is None else dict(labels))


def check_update(current: ServiceInfo, request: UpdateRequest) -> None:
    """The gateway's rules, against the service as it is now. Raises Refused: 409 when the service is no longer
    at the version the request carries, 403 when it would change more than the claim label and a replicated
    service's replica count."""
    if request.version != current.version:
        raise Refused(
            HTTPStatus.CONFLICT,
            f"service {current.name} changed since it was read (version {request.version}, now {current.version})",
        )
    if request.replicas is not None and current.replicas is None:
        raise Refused(
            HTTPStatus.FORBIDDEN,
            f"service {current.name} is global: it has no replica count, and the gateway never changes a "
            "service's mode",
        )
    if request.replicas is not None and request.replicas != current.replicas:
        _check_scaling(current, request.replicas)
    if request.labels is not None:
        keys = set(request.labels) | set(current.labels)
        changed = sorted(k for k in keys - {CLAIM_LABEL} if request.labels.get(k) != current.labels.get(k))
        if changed:
            raise Refused(
                HTTPStatus.FORBIDDEN,
                f"service {current.name}: only the {CLAIM_LABEL} label may change through the gateway; refused "
                f"changes to {', '.join(changed)} (change them on a manager with docker service update)",
            )
        claim = request.labels.get(CLAIM_LABEL)
        if claim is not None and Claim.from_label(claim) is None:
            raise Refused(
                HTTPStatus.FORBIDDEN,
                f"service {current.name}: {CLAIM_LABEL} must be a claim as coord writes it "
                "({node, run, pid, deadline})",
            )


def _check_scaling(current: ServiceInfo, replicas: int) -> None:
    """What coord's own `stop` does, and nothing more: a claimed service scaled to 0, or back from 0 (coord claims a
    service before it scales it, and keeps the claim until it is back: swarm.py, recovery.py). So the token cannot
    scale an unclaimed service, nor move a running service to another count. Raises Refused (403)."""
    if Claim.from_label(current.labels.get(CLAIM_LABEL)) is None:
        raise Refused(
            HTTPStatus.FORBIDDEN,
            f"service {current.name} carries no {CLAIM_LABEL}: the gateway scales only a claimed service (coord "
            "claims it first)",
        )
    if current.replicas != 0 and replicas != 0:
        raise Refused(
            HTTPStatus.FORBIDDEN,
            f"service {current.name}: the gateway scales a service to 0 or back from 0 only, not from "
            f"{current.replicas} to {replicas} (docker service scale on a manager does that)",
        )


def describe_update(current: ServiceInfo, request: UpdateRequest) -> str:
    """What an accepted update changes, for the gateway's log: 'replicas 2 -> 0; coord.claim set (...)'."""
    changes = []
    if request.replicas is not None and request.replicas != current.replicas:
        changes.append(f"replicas {current.replicas} -> {request.replicas}")
    if request.labels is not None:
        before, after = current.labels.get(CLAIM_LABEL), request.labels.get(CLAIM_LABEL)
        if before != after:
            claim = Claim.from_label(after)
            if claim is not None:
                changes.append(f"{CLAIM_LABEL} set (node {claim.node}, run {claim.run}, pid {claim.pid})")
            else:
                changes.append(f"{CLAIM_LABEL} removed")
    return "; ".join(changes) or "nothing changed"


class GatewayServer(ThreadingHTTPServer):
    """The HTTP server: one engine (a manager's), one token. Engine calls are made one at a time: the rules are
    checked against the service read just before the update is sent, and the traffic is a few calls per run."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, token: str) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.token = token.encode("utf-8")
        self.engine_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: GatewayServer
    server_version = "coord-gateway"
    sys_version = ""
    timeout = 30  # seconds a connection may sit idle or half-sent: a silent client does not hold a thread forever

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # Requests ---------------------------------------------------------------------------------------------------

    def _answer(self, handle: Any) -> None:
        try:
            self._authorize()
            status, body = handle()
        except Refused as refusal:
            if refusal.status == HTTPStatus.FORBIDDEN:  # a caller with the token asked for more than coord needs
                log.warning("%s: refused %s %s: %s", self._caller(), self.command, self.path[:200], refusal.message)
            status, body = refusal.status, {"error": refusal.message}
        except ServiceChanged as changed:
            status, body = HTTPStatus.CONFLICT, {"error": changed.message}
        except CoordError as error:  # the manager's engine failed (after its retries): the caller reports it
            log.error("%s: %s", self._caller(), error.message)
            status, body = HTTPStatus.BAD_GATEWAY, {"error": error.message}
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorize(self) -> None:
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), self.server.token):
            log.warning("%s: refused, no valid token (401)", self._caller())
            raise Refused(
                HTTPStatus.UNAUTHORIZED,
                "no valid token: send Authorization: Bearer <the gateway's token> (COORD_SWARM_GATEWAY_TOKEN_FILE)",
            )
        node = self.headers.get(NODE_HEADER, "")
        if not node or len(node) > 253 or not node.isprintable():
            raise Refused(HTTPStatus.BAD_REQUEST, f"the {NODE_HEADER} header must name the calling node")

    def _caller(self) -> str:
        node = self.headers.get(NODE_HEADER) or "?"
        return f"node {node[:253]!r} ({self.client_address[0]})"

    def _route(self) -> tuple[str, str]:
        """(service reference, action) from /v1/services/<ref>[/update]; Refused 404 for any other path."""
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) in (4, 5) and parts[:3] == ["", "v1", "services"] and parts[3]:
            action = parts[4] if len(parts) == 5 else ""
            reference = unquote(parts[3])
            if action in ("", "update") and SERVICE_REFERENCE.fullmatch(reference):
                return reference, action
        raise Refused(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.command} {self.path[:200]}")

    def _get(self) -> tuple[HTTPStatus, dict[str, Any]]:
        reference, action = self._route()
        if action:
            raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, "an update is a POST")
        with self.server.engine_lock:
            service = self.server.engine.service(reference)
        if service is None:
            raise Refused(HTTPStatus.NOT_FOUND, f"service {reference} does not exist")
        return HTTPStatus.OK, service_json(service)

    def _post(self) -> tuple[HTTPStatus, dict[str, Any]]:
        reference, action = self._route()
        if action != "update":
            raise Refused(HTTPStatus.METHOD_NOT_ALLOWED, "only /v1/services/<id>/update takes a POST")
        request = parse_update(self._body())
        engine = self.server.engine
        with self.server.engine_lock:
            current = engine.service(reference)
            if current is None:
                raise Refused(HTTPStatus.NOT_FOUND, f"service {reference} does not exist")
            check_update(current, request)
            change = describe_update(current, request)
            read = ServiceInfo(current.id, current.name, current.replicas, request.version, current.labels)
            engine.update_service(read, replicas=request.replicas, labels=request.labels)
        log.info("%s: updated service %s (%s): %s", self._caller(), current.name, current.id[:12], change)
        return HTTPStatus.OK, {"updated": current.id}

    def _body(self) -> object:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of at most {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None


def manager_refusal(role: str | None) -> str | None:
    """Why the gateway cannot serve on an engine whose Swarm role is `role` ('manager', 'worker', None), or None."""
    if role == "manager":
        return None
    where = "a Swarm worker" if role == "worker" else "not part of a swarm"
    return (
        f"coord gateway needs a Swarm manager's engine (service inspections and updates are manager-only), and "
        f"this engine is {where}: run it on a manager (compose/stack.yml places it with node.role == manager)"
    )


class _GatewayLog(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed: no parameter at run time
    """The gateway's own log on stderr (added once however often serve() runs in a process)."""


def serve(server: GatewayServer) -> None:
    """Serve until SIGTERM or SIGINT (a `docker stop` of the task), logging to stderr: the address once, then
    every update (node, service, what changed) and every refusal. Returns when stopped; raises nothing else."""
    from coord.signals import Interrupted, termination_raises

    if not any(isinstance(handler, _GatewayLog) for handler in log.handlers):
        handler = _GatewayLog()
        handler.setFormatter(logging.Formatter("coord gateway: %(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # the CLI's root handler shows warnings only; every update must be in this log
    log.info("listening on %s (GET /v1/services/<service>, POST /v1/services/<id>/update)", server.url)
    try:
        with termination_raises():
            server.serve_forever()
    except Interrupted as interruption:
        log.info("stopped by %s", interruption)
    finally:
        server.server_close()
