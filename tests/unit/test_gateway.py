"""`coord gateway` (coord/gateway.py) and its client (coord/gateway_client.py) over real HTTP on localhost, against
the in-memory engine of tests/fakes.py as the manager's engine (Swarm's versioning included). The rules a worker
cannot get past, the token, and the worker's side: claims, scaling and the scale back through the gateway.
tests/e2e/test_swarm.py runs the gateway against the real engine."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.fakes import FakeEngine
from typer.testing import CliRunner

from coord import swarm
from coord.cli import app
from coord.docker_ops import SWARM_SERVICE_ID, DockerControl, ServiceChanged, ServiceInfo
from coord.errors import DockerError, UsageError
from coord.gateway import GatewayServer, check_update, manager_refusal, read_token
from coord.gateway_client import (
    GATEWAY_ENV,
    GATEWAY_TOKEN_FILE_ENV,
    GatewayClient,
    ThroughGateway,
    WorkerWithoutGateway,
    engine_for,
    worker_refusal,
)
from coord.journal import Journal
from coord.plan import group_volumes, plan_volumes
from coord.policy import load_policies

TOKEN = "a-test-token-of-32-characters-xx"


@pytest.fixture
def manager(tmp_path: Path) -> FakeEngine:
    engine = FakeEngine(tmp_path / "volumes")
    engine.add_service("db", replicas=2, labels={"app": "db"})
    engine.add_service("agent", replicas=None, labels={"app": "agent"})
    return engine


@pytest.fixture
def gateway(manager: FakeEngine) -> Iterator[GatewayServer]:
    server = GatewayServer(("127.0.0.1", 0), manager, TOKEN)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(server: GatewayServer, token: str = TOKEN, node: str = "worker-1") -> GatewayClient:
    return GatewayClient(server.url, token, node)


def post(server: GatewayServer, service_id: str, body: dict[str, Any], token: str = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Coord-Node": "worker-1"}
    return requests.post(f"{server.url}/v1/services/{service_id}/update", json=body, headers=headers, timeout=10)


def service(engine: FakeEngine, name: str) -> ServiceInfo:
    return next(s for s in engine.services.values() if s.name == name)


def test_a_worker_claims_scales_to_0_and_back_and_releases_through_the_gateway_and_each_update_is_logged(
    gateway: GatewayServer, manager: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = client(gateway)
    db = service(manager, "db")
    assert worker.service("db") == db and worker.service(db.id) == db  # by name and by id, as the manager has it
    caplog.set_level(logging.INFO, logger="coord.gateway")

    claim, _ = swarm.take_claim(worker, Journal(tmp_path / "state"), db.id, "worker-1", "run1")
    assert swarm.Claim.from_label(service(manager, "db").labels[swarm.CLAIM_LABEL]) == claim
    worker.update_service(service(manager, "db"), replicas=0)
    assert service(manager, "db").replicas == 0
    assert swarm.scale_back(worker, db.id, "db", 2) is None
    assert swarm.release_claim(worker, db.id, claim) is None
    assert service(manager, "db").replicas == 2 and service(manager, "db").labels == {"app": "db"}

    logged = [r.getMessage() for r in caplog.records if r.name == "coord.gateway"]
    assert logged == [
        f"node 'worker-1' (127.0.0.1): updated service db ({db.id[:12]}): coord.claim set (node worker-1, run run1, "
        f"pid {claim.pid})",
        f"node 'worker-1' (127.0.0.1): updated service db ({db.id[:12]}): replicas 2 -> 0",
        f"node 'worker-1' (127.0.0.1): updated service db ({db.id[:12]}): replicas 0 -> 2",
        f"node 'worker-1' (127.0.0.1): updated service db ({db.id[:12]}): coord.claim removed",
    ]


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"labels": {"app": "evil"}}, "refused changes to app"),
        ({"labels": {}}, "refused changes to app"),  # dropping a label is a change too
        ({"labels": {"app": "db", "com.example.extra": "1"}}, "refused changes to com.example.extra"),
        ({"labels": {"app": "db", swarm.CLAIM_LABEL: "anything"}}, "must be a claim as coord writes it"),
        ({"TaskTemplate": {"ContainerSpec": {"Image": "evil:latest"}}}, "refused: TaskTemplate"),
        ({"image": "evil:latest", "replicas": 0}, "refused: image"),
    ],
)
def test_an_update_changing_anything_but_the_claim_and_the_replica_count_is_refused_403_and_nothing_changes(
    gateway: GatewayServer,
    manager: FakeEngine,
    change: dict[str, Any],
    refused: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = service(manager, "db")
    answer = post(gateway, db.id, {"version": db.version, **change})
    assert answer.status_code == 403 and refused in answer.json()["error"], answer.text
    [logged] = [r.getMessage() for r in caplog.records if r.name == "coord.gateway"]  # and logged, with the caller
    assert logged.startswith(f"node 'worker-1' (127.0.0.1): refused POST /v1/services/{db.id}/update: ")
    assert service(manager, "db") == db  # same version: nothing was sent to the engine
    assert not [call for call in manager.calls if call.method == "update_service"]


def test_a_global_service_s_replica_count_cannot_be_set_and_the_client_reports_the_refusal(
    gateway: GatewayServer, manager: FakeEngine
) -> None:
    agent = service(manager, "agent")
    with pytest.raises(DockerError, match=r"answered 403: service agent is global: it has no replica count"):
        client(gateway).update_service(agent, replicas=0)
    assert service(manager, "agent") == agent


def test_without_the_token_or_with_a_wrong_one_every_request_is_refused_401(
    gateway: GatewayServer, manager: FakeEngine
) -> None:
    db = service(manager, "db")
    url = f"{gateway.url}/v1/services/{db.id}"
    node = {"X-Coord-Node": "worker-1"}
    assert requests.get(url, headers=node, timeout=10).status_code == 401
    assert requests.get(url, headers={**node, "Authorization": TOKEN}, timeout=10).status_code == 401  # no scheme
    assert post(gateway, db.id, {"version": db.version, "replicas": 0}, token="x" * 32).status_code == 401
    with pytest.raises(DockerError, match=f"answered 401: no valid token.*check that {GATEWAY_TOKEN_FILE_ENV}"):
        client(gateway, token="wrong-token-of-enough-characters").update_service(db, replicas=0)
    assert service(manager, "db") == db
    good = requests.get(url, headers={**node, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert good.status_code == 200 and good.json()["name"] == "db"
    nameless = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)  # the node is required
    assert nameless.status_code == 400 and "X-Coord-Node" in nameless.json()["error"]


def test_a_stale_version_is_409_and_the_client_raises_service_changed(
    gateway: GatewayServer, manager: FakeEngine
) -> None:
    stale = service(manager, "db")
    claim = swarm.Claim("worker-2", "run2", 1, time.time() + 60).to_label()
    client(gateway, node="worker-2").update_service(stale, labels={**stale.labels, swarm.CLAIM_LABEL: claim})
    with pytest.raises(ServiceChanged, match="changed since"):  # worker-2 got in first
        client(gateway).update_service(stale, replicas=0)
    assert service(manager, "db").replicas == 2


def test_a_missing_service_is_none_and_other_paths_are_404(gateway: GatewayServer) -> None:
    assert client(gateway).service("no-such-service") is None
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Coord-Node": "worker-1"}
    for path in ("/v1/services", "/v1/services/db/tasks", "/v1/nodes/x", "/", "/v1/services/..", "/v1/services/%2e%2e"):
        assert requests.get(gateway.url + path, headers=headers, timeout=10).status_code == 404, path
    answer = requests.post(f"{gateway.url}/v1/services/nope/update", json={"version": 1}, headers=headers, timeout=10)
    assert answer.status_code == 404


def test_the_rules_are_checked_against_the_service_as_it_is_now() -> None:
    from coord.gateway import UpdateRequest

    claim = swarm.Claim("n", "r", 1, time.time() + 60).to_label()
    current = ServiceInfo("id1", "db", 2, 7, {"app": "db", swarm.CLAIM_LABEL: claim})
    check_update(current, UpdateRequest(7, 0, None))
    check_update(current, UpdateRequest(7, None, {"app": "db", swarm.CLAIM_LABEL: claim}))
    check_update(current, UpdateRequest(7, None, {"app": "db"}))  # the claim released
    with pytest.raises(Exception, match=r"changed since it was read \(version 6, now 7\)"):
        check_update(current, UpdateRequest(6, 0, None))


@pytest.mark.parametrize(
    ("replicas_now", "labels", "asked", "refused"),
    [
        (2, {"app": "db"}, 0, "carries no coord.claim: the gateway scales only a claimed service"),
        (0, {"app": "db"}, 2, "carries no coord.claim"),
        (2, "claimed", 5, "scales a service to 0 or back from 0 only, not from 2 to 5"),
        (2, "claimed", 1, "not from 2 to 1"),
    ],
)
def test_the_gateway_scales_only_a_claimed_service_and_only_to_0_or_back_from_0(
    replicas_now: int, labels: dict[str, str] | str, asked: int, refused: str
) -> None:
    from coord.gateway import Refused, UpdateRequest

    claim = swarm.Claim("n", "r", 1, time.time() + 60).to_label()
    current = ServiceInfo("id1", "db", replicas_now, 7, {"app": "db", swarm.CLAIM_LABEL: claim})
    check_update(current, UpdateRequest(7, 0 if replicas_now else 3, None))  # claimed: to 0, or back from 0
    if labels != "claimed":
        current = ServiceInfo("id1", "db", replicas_now, 7, dict(labels))
    with pytest.raises(Refused, match=re.escape(refused)) as refusal:
        check_update(current, UpdateRequest(7, asked, None))
    assert refusal.value.status == 403


def test_an_unreachable_gateway_is_a_docker_error_naming_it_and_what_to_check() -> None:
    unreachable = GatewayClient("http://127.0.0.1:9", TOKEN, "worker-1", attempts=2)  # nothing listens on 9
    with pytest.raises(DockerError, match=f"cannot reach the Swarm gateway at http://127.0.0.1:9 \\({GATEWAY_ENV}\\)"):
        unreachable.service("db")


def test_a_name_resolving_to_several_gateways_is_served_by_the_first_that_accepts_within_one_attempt(
    gateway: GatewayServer, manager: FakeEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # compose/stack.yml runs a gateway on every manager and `gateway` resolves (dnsrr) to each: a manager that is
    # down must cost a refused connection, not the claim. The name's first address has nothing listening.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refusing = closed.getsockname()
    serving = gateway.server_address[:2]
    resolve = socket.getaddrinfo

    def gateways(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "gateway":
            return resolve(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in (refusing, serving)]

    monkeypatch.setattr(socket, "getaddrinfo", gateways)
    one_attempt = GatewayClient("http://gateway:8733", TOKEN, "worker-1", attempts=1)
    db = one_attempt.service("db")
    assert db is not None and db.replicas == 2
    claim, _ = swarm.take_claim(one_attempt, Journal(tmp_path / "state"), db.id, "worker-1", "run-1")
    assert service(manager, "db").labels[swarm.CLAIM_LABEL] == claim.to_label()


def test_the_token_must_be_readable_and_long_enough(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("secret\n")
    (tmp_path / "good").write_text(f"{TOKEN}\n")
    with pytest.raises(UsageError, match="at least 16 are needed"):
        read_token(tmp_path / "short")
    with pytest.raises(UsageError, match="cannot read it"):
        read_token(tmp_path / "missing")
    assert read_token(tmp_path / "good") == TOKEN


class _Info:
    """Just the engine's `docker info` answer, for the choice of engine (no other call is made there)."""

    def __init__(self, role: str | None) -> None:
        self.role = role

    def info(self) -> dict[str, Any]:
        if self.role is None:
            return {"Swarm": {"LocalNodeState": "inactive"}}
        return {"Swarm": {"LocalNodeState": "active", "NodeID": "n1", "ControlAvailable": self.role == "manager"}}


def local_engine(role: str | None) -> DockerControl:
    return DockerControl(_Info(role))  # type: ignore[arg-type]


def test_one_place_decides_the_engine_gateway_when_configured_a_refusal_on_a_bare_worker_else_the_local_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    for role in ("manager", None):
        local = local_engine(role)
        assert engine_for(local, {}) is local
    bare_worker = engine_for(local_engine("worker"), {})
    assert isinstance(bare_worker, WorkerWithoutGateway)
    with pytest.raises(DockerError) as refused:
        bare_worker.service("svc-id")
    assert f"set {GATEWAY_ENV}=http://<gateway>:8733 and {GATEWAY_TOKEN_FILE_ENV}=" in refused.value.message

    configured = {GATEWAY_ENV: "http://gateway:8733", GATEWAY_TOKEN_FILE_ENV: str(tmp_path / "token")}
    through = engine_for(local_engine("worker"), configured)
    assert isinstance(through, ThroughGateway) and through.gateway.url == "http://gateway:8733"
    with pytest.raises(UsageError, match=f"{GATEWAY_TOKEN_FILE_ENV} is not"):
        engine_for(local_engine("worker"), {GATEWAY_ENV: "http://gateway:8733"})
    with pytest.raises(UsageError, match="give the gateway's URL"):
        engine_for(local_engine("worker"), {**configured, GATEWAY_ENV: "gateway:8733"})


class _BareWorker(FakeEngine):
    """A worker's engine with no gateway: services cannot be read (as WorkerWithoutGateway answers)."""

    def service(self, identifier: str) -> ServiceInfo | None:
        raise DockerError(worker_refusal(identifier))


def test_on_a_worker_without_a_gateway_the_plan_fails_a_volume_used_by_a_task_saying_what_to_set(
    tmp_path: Path,
) -> None:
    engine = _BareWorker(tmp_path / "volumes")
    engine.add_volume("data")
    engine.add_volume("plain")
    task = engine.add_container("db.1.abc", volumes=("data",))
    task.labels[SWARM_SERVICE_ID] = "svc-db"
    engine.add_container("app", volumes=("plain",))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "db.yaml").write_text("volumes: [data, plain]\nstrategy: pause\n")
    loaded = load_policies(tmp_path / "p")
    groups = group_volumes(plan_volumes(loaded, engine.volume_names()), engine)
    errors = {volume: error for group in groups for volume, error in group.errors.items()}
    assert list(errors) == ["data"]  # the plain container's volume is planned as always
    assert "this node is a Swarm worker" in errors["data"] and f"set {GATEWAY_ENV}=" in errors["data"]


def test_the_gateway_refuses_to_start_unless_the_engine_is_a_swarm_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text(TOKEN)
    worker = FakeEngine(tmp_path / "volumes")
    worker.swarm = "worker"
    monkeypatch.setattr(DockerControl, "connect", classmethod(lambda cls: worker))
    result = CliRunner().invoke(app, ["gateway", "--token-file", str(tmp_path / "token"), "--port", "0"])
    assert result.exit_code == 1
    assert "needs a Swarm manager's engine" in result.stderr and "this engine is a Swarm worker" in result.stderr
    assert manager_refusal(None) is not None and "not part of a swarm" in str(manager_refusal(None))
    assert manager_refusal("manager") is None


def test_a_workers_503_for_a_service_call_is_not_retried_as_transient() -> None:
    import docker.errors

    from coord.docker_ops import is_transient

    answer = requests.Response()
    answer.status_code = 503
    not_manager = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state."
    assert not is_transient(docker.errors.APIError("503", response=answer, explanation=not_manager))
    assert is_transient(docker.errors.APIError("503", response=answer, explanation="engine busy"))
