"""coord on a single-node Docker Swarm (issue 18): the test engine joins a swarm of its own for this module and
leaves it afterwards, also when a test fails.

Other test sessions share the engine: swarm mode does not change plain containers (`docker run`) or volumes,
so they go on as before; this module creates services only with its own label and removes them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import REPO, SESSION, TEST_IMAGE, TEST_LABEL, run_coord, volume_path, wait_for, write_policy

pytestmark = pytest.mark.docker

SERVICE_ID = "com.docker.swarm.service.id"
CLAIM_LABEL = "coord.claim"


@pytest.fixture(scope="module")
def swarm(docker_client) -> Iterator[str]:
    """A single-node swarm on the test engine for the module; left (`docker swarm leave --force`) however the
    module ends. An engine already in a swarm (someone else's) is used as it is and never left."""
    state = docker_client.info()["Swarm"]["LocalNodeState"]
    joined_here = state == "inactive"
    had_gateway_bridge = bool(docker_client.networks.list(names=["docker_gwbridge"]))
    if joined_here:
        subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True, timeout=60
        )
    try:
        yield docker_client.info()["Swarm"]["NodeID"]
    finally:
        if joined_here:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60)
            if not had_gateway_bridge:  # made by `swarm init`, left behind by `leave`
                subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True, timeout=60)


@pytest.fixture(autouse=True)
def swarm_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """This module's coord runs see the engine as the Swarm node it is (tests/conftest.py keeps the other modules
    on the flat layout while the engine is in swarm mode)."""
    monkeypatch.setenv("COORD_NODE_LAYOUT", "auto")


def tasks_of(docker_client, service_id: str, running_only: bool = True) -> list[str]:
    """The ids of the service's task containers here (running ones only, or all). From the listing alone: a task
    container Swarm removes meanwhile must not make an inspect fail."""
    listed = docker_client.api.containers(all=True, filters={"label": f"{SERVICE_ID}={service_id}"})
    return sorted(c["Id"] for c in listed if not running_only or c["State"] == "running")


def replicas_of(docker_client, service_id: str) -> int:
    spec = docker_client.api.inspect_service(service_id)["Spec"]
    return int(spec["Mode"]["Replicated"]["Replicas"])


def labels_of(docker_client, service_id: str) -> dict[str, str]:
    return dict(docker_client.api.inspect_service(service_id)["Spec"].get("Labels") or {})


@pytest.fixture
def make_service(swarm, docker_client, unique) -> Iterator[Callable[..., str]]:
    """Create a service of the test image mounting `volume` at /data (replicated with `replicas`, or global when
    replicas is None), wait until its tasks run here; returns its id. Removed, tasks gone, at the end."""
    created: list[str] = []

    def make(stem: str, volume: str, replicas: int | None = 1) -> str:
        mode = ["--mode", "global"] if replicas is None else ["--replicas", str(replicas)]
        completed = subprocess.run(
            ["docker", "service", "create", "--detach", "--name", unique(stem), *mode,
             "--label", f"{TEST_LABEL}={SESSION}", "--container-label", f"{TEST_LABEL}={SESSION}",
             "--stop-grace-period", "2s", "--mount", f"type=volume,source={volume},target=/data",
             TEST_IMAGE, "sh", "-c", "hostname >> /data/tasks.log; exec sleep 3600"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        service_id = completed.stdout.strip().splitlines()[-1]
        created.append(service_id)
        wait_for(lambda: len(tasks_of(docker_client, service_id)) == (replicas or 1), what=f"{stem}'s tasks")
        return service_id

    yield make
    for service_id in created:
        subprocess.run(["docker", "service", "rm", service_id], capture_output=True, timeout=60)
        wait_for(lambda sid=service_id: not tasks_of(docker_client, sid, running_only=False), what="the tasks to go")


def backup(policies: Path, dest: Path, *extra: str, **options):
    return run_coord("backup", "--policies-dir", str(policies), "--dest", str(dest), "--json", *extra, **options)


def test_outside_a_swarm_the_layout_stays_flat(docker_client, make_volume, tmp_path, isolated_state_dir):
    """First in the module, before its `swarm` fixture makes the engine a Swarm node: under the default layout
    (auto) an engine outside a swarm keeps `<target>/<volume>/`, with two-segment refs. (An engine that was
    already someone's Swarm node before this module must give the node's namespace instead.)"""
    in_swarm = docker_client.info()["Swarm"]["LocalNodeState"] == "active"
    volume = make_volume("data")
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: live\n")
    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stdout + run.stderr
    archive = Path(run.json["volumes"][0]["archive"])
    if in_swarm:
        node = docker_client.info()["Name"]
        assert archive.parent == tmp_path / "b" / "_nodes" / node / volume
        return
    assert archive.parent == tmp_path / "b" / volume
    assert run.json["volumes"][0]["targets"][0]["ref"] == f"local:{volume}/{archive.name}"
    assert not (tmp_path / "b" / "_nodes").exists()
    listed = run_coord("list", "--dest", str(tmp_path / "b"), "--policies-dir", str(tmp_path / "p"), "--json")
    assert [item["ref"] for item in listed.json["targets"][0]["archives"]] == [f"local:{volume}/{archive.name}"]


def test_stop_scales_a_replicated_service_to_0_and_back_and_plan_names_node_service_and_task(
    swarm, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    volume = make_volume("data")
    service = make_service("db", volume, replicas=2)
    before = set(tasks_of(docker_client, service))
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: stop\nstop_timeout: 5\n")

    plan = run_coord("plan", "--policies-dir", str(tmp_path / "p"), "--dest", str(tmp_path / "b"), "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    [group] = plan.json["groups"]
    assert {c["node"] for c in group["containers"]} == {swarm}
    assert {c["service"] for c in group["containers"]} == {docker_client.services.get(service).name}
    assert all(c["task"].startswith(c["service"] + ".") for c in group["containers"])
    assert any("scale service" in step and "to 0" in step and "tasks here:" in step for step in group["steps"])

    run = backup(tmp_path / "p", tmp_path / "b")
    assert run.returncode == 0, run.stdout + run.stderr
    [entry] = run.json["volumes"]
    assert entry["status"] == "ok", entry
    [action] = entry["containers"]
    assert (action["action"], action["prior_state"], action["restored"]) == ("stopped", "2 replicas", True)
    # back to two replicas, run by new tasks: the old ones were really stopped (scaled away), not left running
    assert replicas_of(docker_client, service) == 2
    wait_for(lambda: len(tasks_of(docker_client, service)) == 2, what="two tasks again")
    assert not before & set(tasks_of(docker_client, service))
    assert CLAIM_LABEL not in labels_of(docker_client, service)  # the claim was released
    assert not list((isolated_state_dir / "journal").glob("*.json"))
    assert len((volume_path(docker_client, volume) / "tasks.log").read_text().split()) == 4  # 2 tasks, twice


KILL_AFTER_SCALING = """
import os, signal, sys
import coord.swarm as swarm
scale_to_zero = swarm.scale_to_zero
def scale_then_die(*arguments, **options):
    scale_to_zero(*arguments, **options)
    os.kill(os.getpid(), signal.SIGKILL)
swarm.scale_to_zero = scale_then_die
from coord.cli import main
sys.argv[0] = "coord"
main()
"""


def test_the_replica_count_is_put_back_by_recover_after_sigkill(
    swarm, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    volume = make_volume("data")
    service = make_service("db", volume, replicas=2)
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: stop\nstop_timeout: 5\n")
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SCALING, "backup", "--policies-dir", str(tmp_path / "p"),
         "--dest", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ),
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert replicas_of(docker_client, service) == 0  # left at 0 by the dead run
    assert json.loads(labels_of(docker_client, service)[CLAIM_LABEL])["pid"] > 0  # and still claimed
    kinds = sorted(json.loads(p.read_text())["kind"] for p in (isolated_state_dir / "journal").glob("*.json"))
    assert kinds == ["claim", "service"]

    recovered = run_coord("recover", "--json")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    name = docker_client.services.get(service).name
    assert f"scaled service {name} back to 2 (left at 0 by coord pid" in " ".join(recovered.json["restored"])
    assert replicas_of(docker_client, service) == 2
    assert CLAIM_LABEL not in labels_of(docker_client, service)
    assert not list((isolated_state_dir / "journal").glob("*.json"))
    wait_for(lambda: len(tasks_of(docker_client, service)) == 2, what="two tasks again")

    again = run_coord("recover", "--json")  # nothing left to do, and a later backup works
    assert again.returncode == 0 and again.json["restored"] == [], again.stdout
    assert backup(tmp_path / "p", tmp_path / "b").returncode == 0


def test_a_global_service_is_refused_under_stop_and_paused_under_pause(
    swarm, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    volume = make_volume("data")
    service = make_service("agent", volume, replicas=None)
    [task] = [docker_client.containers.get(identifier) for identifier in tasks_of(docker_client, service)]
    write_policy(tmp_path / "stop", "agent", f"volumes: [{volume}]\nstrategy: stop\n")

    plan = run_coord("plan", "--policies-dir", str(tmp_path / "stop"), "--dest", str(tmp_path / "b"), "--json")
    assert plan.returncode == 1 and plan.json["ok"] is False, plan.stdout
    [planned] = plan.json["groups"][0]["volumes"]
    assert "is global" in planned["error"] and "use strategy pause or snapshot" in planned["error"], planned

    run = backup(tmp_path / "stop", tmp_path / "b")
    assert run.returncode == 1, run.stdout + run.stderr
    [entry] = run.json["volumes"]
    assert entry["status"] == "failed" and entry["containers"] == [], entry
    assert "use strategy pause or snapshot" in " ".join(entry["errors"]), entry
    task.reload()
    assert task.status == "running" and tasks_of(docker_client, service) == [task.id]  # untouched
    assert CLAIM_LABEL not in labels_of(docker_client, service)

    write_policy(tmp_path / "pause", "agent", f"volumes: [{volume}]\nstrategy: pause\n")
    paused = backup(tmp_path / "pause", tmp_path / "b")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    [action] = paused.json["volumes"][0]["containers"]
    assert (action["action"], action["id"], action["restored"]) == ("paused", task.id[:12], True)
    task.reload()
    assert task.status == "running" and CLAIM_LABEL not in labels_of(docker_client, service)


def start_claimer(service: str, node: str, state_dir: Path, barrier: Path, hold: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "swarm_claimer.py"), service, node, str(state_dir), str(barrier),
         str(hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_claim_contention_between_two_coord_processes_exactly_one_wins_and_a_backup_waits_its_turn(
    swarm, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    volume = make_volume("data")
    service = make_service("db", volume, replicas=1)
    barrier, hold = tmp_path / "barrier", tmp_path / "hold"
    barrier.mkdir()
    # Both read the service (the same version), then both update at once: Swarm lets exactly one through.
    claimers = [
        start_claimer(service, node, tmp_path / f"state-{node}", barrier, hold) for node in ("node-a", "node-b")
    ]
    try:
        wait_for(lambda: len(list(barrier.glob("*.ready"))) == 2, timeout=60, what="both claimers to read")
        (barrier / "go").touch()
        answers = {}
        for node, claimer in zip(("node-a", "node-b"), claimers, strict=True):
            line = claimer.stdout.readline() if claimer.stdout else ""
            assert line, claimer.stderr.read() if claimer.stderr else ""
            answers[node] = json.loads(line)
        [winner] = [node for node, answer in answers.items() if answer["won"]]
        [loser] = [node for node, answer in answers.items() if not answer["won"]]
        print(f"claim contention: {winner} won; {loser}: {answers[loser]['error']}")
        assert f"claimed at the same moment by node {winner}" in answers[loser]["error"]
        assert json.loads(labels_of(docker_client, service)[CLAIM_LABEL])["node"] == winner

        # A backup on this node while the winner holds the claim: refused before any task is touched.
        [task] = tasks_of(docker_client, service)
        write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: stop\nstop_timeout: 5\n")
        refused = backup(tmp_path / "p", tmp_path / "b")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"is claimed by node {winner}" in " ".join(refused.json["volumes"][0]["errors"]), refused.stdout
        assert tasks_of(docker_client, service) == [task]
        assert replicas_of(docker_client, service) == 1
        assert not list((isolated_state_dir / "journal").glob("*.json"))

        hold.touch()  # the winner releases; now the backup gets its turn
        for claimer in claimers:
            claimer.wait(timeout=60)
        assert CLAIM_LABEL not in labels_of(docker_client, service)
        run = backup(tmp_path / "p", tmp_path / "b")
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.json["volumes"][0]["containers"][0]["prior_state"] == "1 replicas"
    finally:
        hold.touch()
        for claimer in claimers:
            if claimer.poll() is None:
                claimer.kill()
                claimer.wait()


def test_the_fleet_report_counts_what_each_node_published_to_the_shared_target(
    swarm, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    shared = tmp_path / "shared-target"
    published, services = {}, {}
    for node, strategy in (("node-a", "stop"), ("node-b", "pause")):  # one node's stack each, one shared target
        volume = make_volume(f"data-{node}")
        services[node] = docker_client.services.get(make_service(f"db-{node}", volume, replicas=1)).name
        write_policy(tmp_path / node, "db", f"volumes: [{volume}]\nstrategy: {strategy}\nstop_timeout: 5\n")
        run = backup(tmp_path / node, shared, env={"COORD_NODE": node})
        assert run.returncode == 0, run.stdout + run.stderr
        published[node] = volume
        assert json.loads(Path(run.json["volumes"][0]["manifest"]).read_text())["node"] == node

    report = run_coord("report", "--fleet", "--dest", str(shared), "--json")
    assert report.returncode == 0, report.stdout + report.stderr
    assert report.json["nodes"] == ["node-a", "node-b"] and report.json["errors"] == []
    rows = {row["node"]: row for row in report.json["rows"]}
    for node, volume in published.items():
        row = rows[node]
        assert (row["volume"], row["archives"], row["statuses"]) == (volume, 1, {"ok": 1}), row
        assert (row["runs"], row["ok"], row["success_rate"]) == (1, 1, 1.0), row  # from its run record
        assert row["last_success"] is not None and row["targets"] == ["local"]
        # the service by name, from its tasks' labels: scaled to 0 and back (node-a), its task paused (node-b)
        assert row["services"] == [services[node]], row
    text = run_coord("report", "--fleet", "--dest", str(shared))
    assert text.returncode == 0, text.stdout + text.stderr
    assert "2 node(s), 2 run(s) recorded (2 ok), 2 archive(s) published" in text.stdout, text.stdout
    print(text.stdout)


def restored_content(docker_client, volume: str) -> str:
    return (volume_path(docker_client, volume) / "who").read_text()


def test_a_swarm_nodes_archives_are_its_own_on_a_shared_target_and_another_nodes_are_read_only_when_asked(
    swarm, docker_client, make_volume, tmp_path, isolated_state_dir
):
    """Two nodes with a volume of the same name, one shared target: this node's archives go to
    `_nodes/<node>/`, the other's (coord with COORD_NODE=other) to `_nodes/other/`; retention, prune, `list` and
    `restore --latest` on this node see only its own; `--node other` restores the other's; an old flat archive
    is left where it is and still read by its flat ref."""
    node = docker_client.info()["Name"]
    volume = make_volume("data")  # the same name on both "nodes", as a stack names its volumes
    shared = tmp_path / "shared"
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: live\nretention: {{keep_last: 1}}\n")
    (volume_path(docker_client, volume) / "who").write_text("flat")
    old = backup(tmp_path / "p", shared, env={"COORD_NODE_LAYOUT": "flat"})  # written before this change
    assert old.returncode == 0, old.stdout + old.stderr
    [old_archive] = (shared / volume).glob("*.tar.zst")

    (volume_path(docker_client, volume) / "who").write_text("mine")
    mine = backup(tmp_path / "p", shared)
    assert mine.returncode == 0, mine.stdout + mine.stderr
    [entry] = mine.json["volumes"]
    archive = Path(entry["archive"])
    assert archive.parent == shared / "_nodes" / node / volume, archive
    assert json.loads(Path(entry["manifest"]).read_text())["node"] == node
    assert entry["targets"][0]["ref"] == f"local:{node}/{volume}/{archive.name}"
    assert old_archive.is_file() and entry["pruned"] == []  # keep_last 1, yet the flat archive is not its to prune

    (volume_path(docker_client, volume) / "who").write_text("theirs")
    for _ in range(2):  # the other node's runs: its retention keeps its own last one, never this node's
        theirs = backup(tmp_path / "p", shared, env={"COORD_NODE": "other"})
        assert theirs.returncode == 0, theirs.stdout + theirs.stderr
        assert Path(theirs.json["volumes"][0]["archive"]).parent == shared / "_nodes" / "other" / volume
    [their_archive] = (shared / "_nodes" / "other" / volume).glob("*.tar.zst")
    assert [p.name for p in (shared / "_nodes" / node / volume).glob("*.tar.zst")] == [archive.name]
    assert old_archive.is_file()

    pruned = run_coord("prune", "--policies-dir", str(tmp_path / "p"), "--dest", str(shared), "--json")
    assert pruned.returncode == 0 and all(not v["deleted"] for v in pruned.json["volumes"]), pruned.stdout
    assert archive.is_file() and their_archive.is_file() and old_archive.is_file()

    listed = run_coord("list", "--dest", str(shared), "--policies-dir", str(tmp_path / "p"), "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    refs = [item["ref"] for target in listed.json["targets"] for item in target["archives"]]
    assert refs == [f"local:{node}/{volume}/{archive.name}"]
    assert [(t["node"], t["where"]) for t in listed.json["targets"]] == [(node, str(shared / "_nodes" / node))]
    both = run_coord(
        "list", "--dest", str(shared), "--policies-dir", str(tmp_path / "p"), "--node", node, "--node", "other"
    )
    assert both.returncode == 0, both.stdout + both.stderr
    assert f"local:{node}/{volume}/{archive.name}" in both.stdout, both.stdout
    assert f"local:other/{volume}/{their_archive.name}" in both.stdout, both.stdout
    print(both.stdout)

    restores = iter(range(1, 10))

    def restore(*arguments: str) -> str:
        into = make_volume(f"restored-{next(restores)}")
        done = run_coord("restore", *arguments, "--volume", into, "--dest", str(shared), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return restored_content(docker_client, into)

    assert restore("--latest", volume) == "mine"  # the other node's newer archives are not this node's latest
    assert restore("--latest", volume, "--node", "other") == "theirs"
    assert restore(f"local:other/{volume}/{their_archive.name}") == "theirs"
    assert restore(f"local:{volume}/{old_archive.name}") == "flat"  # an old flat archive, by its flat ref

    plan = run_coord("plan", "--policies-dir", str(tmp_path / "p"), "--dest", str(shared), "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.json["node"] == node
    assert plan.json["groups"][0]["volumes"][0]["archives_to"] == [f"local:{node}/{volume}/"]
    text = run_coord("plan", "--policies-dir", str(tmp_path / "p"), "--dest", str(shared))
    assert f"archives to local:{node}/{volume}/" in text.stdout, text.stdout


# Through the gateway (coord/gateway.py): coord reaches services only through `coord gateway`, as on a worker ----


@pytest.fixture(scope="module")
def gateway(swarm, tmp_path_factory) -> Iterator[dict[str, str]]:
    """`coord gateway` on localhost against the test engine (a manager of the module's swarm), on a free port;
    yields what coord needs to use it (its env), its URL, token and log file. Stopped with SIGTERM at the end."""
    work = tmp_path_factory.mktemp("gateway")
    token = "e2e-" + os.urandom(16).hex()
    (work / "token").write_text(token + "\n")
    log = work / "gateway.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "coord", "gateway", "--listen", "127.0.0.1", "--port", "0",
             "--token-file", str(work / "token")],
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO, env=dict(os.environ),
        )  # fmt: skip
    try:
        wait_for(lambda: "listening on" in log.read_text() or process.poll() is not None, what="the gateway")
        listening = [line for line in log.read_text().splitlines() if "listening on" in line]
        assert listening, log.read_text()
        url = listening[0].split("listening on ")[1].split()[0]
        env = {"COORD_SWARM_GATEWAY": url, "COORD_SWARM_GATEWAY_TOKEN_FILE": str(work / "token")}
        yield {"url": url, "token": token, "log": str(log), **env}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def gateway_env(gateway: dict[str, str]) -> dict[str, str]:
    return {key: gateway[key] for key in ("COORD_SWARM_GATEWAY", "COORD_SWARM_GATEWAY_TOKEN_FILE")}


def gateway_updates(gateway: dict[str, str], service_name: str) -> list[str]:
    """What the gateway's log says it changed on the service, in order ('replicas 2 -> 0', 'coord.claim set ...')."""
    marker = f"updated service {service_name} ("
    lines = Path(gateway["log"]).read_text().splitlines()
    return [line.split(marker, 1)[1].split("): ", 1)[1] for line in lines if marker in line]


def version_of(docker_client, service_id: str) -> int:
    return int(docker_client.api.inspect_service(service_id)["Version"]["Index"])


def test_stop_through_the_gateway_scales_to_0_and_back_and_claims_and_releases_there(
    swarm, gateway, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    volume = make_volume("data")
    service = make_service("db", volume, replicas=2)
    name = docker_client.services.get(service).name
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: stop\nstop_timeout: 5\n")

    run = backup(tmp_path / "p", tmp_path / "b", env=gateway_env(gateway))
    assert run.returncode == 0, run.stdout + run.stderr
    [action] = run.json["volumes"][0]["containers"]
    assert (action["action"], action["prior_state"], action["restored"]) == ("stopped", "2 replicas", True)
    assert replicas_of(docker_client, service) == 2 and CLAIM_LABEL not in labels_of(docker_client, service)
    updates = gateway_updates(gateway, name)
    print("\n".join(["gateway log:", *updates]))
    assert [u.split(" (")[0] for u in updates] == ["coord.claim set", "replicas 2 -> 0", "replicas 0 -> 2",
                                                   "coord.claim removed"]  # fmt: skip
    # each update names the calling node (this host: COORD_NODE is not set) and the claim's holder
    lines = [line for line in Path(gateway["log"]).read_text().splitlines() if f"updated service {name} (" in line]
    assert all(f"node {socket.gethostname()!r} (127.0.0.1)" in line for line in lines), lines
    assert f"coord.claim set (node {socket.gethostname()} (" in updates[0]


def test_recover_after_sigkill_puts_the_replica_count_back_through_the_gateway(
    swarm, gateway, docker_client, make_volume, make_service, tmp_path, isolated_state_dir
):
    volume = make_volume("data")
    service = make_service("db", volume, replicas=2)
    name = docker_client.services.get(service).name
    write_policy(tmp_path / "p", "db", f"volumes: [{volume}]\nstrategy: stop\nstop_timeout: 5\n")
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SCALING, "backup", "--policies-dir", str(tmp_path / "p"),
         "--dest", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **gateway_env(gateway)},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert replicas_of(docker_client, service) == 0 and CLAIM_LABEL in labels_of(docker_client, service)
    assert [u.split(" (")[0] for u in gateway_updates(gateway, name)] == ["coord.claim set", "replicas 2 -> 0"]

    recovered = run_coord("recover", "--json", env=gateway_env(gateway))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert f"scaled service {name} back to 2" in " ".join(recovered.json["restored"])
    assert replicas_of(docker_client, service) == 2 and CLAIM_LABEL not in labels_of(docker_client, service)
    assert [u.split(" (")[0] for u in gateway_updates(gateway, name)][2:] == ["replicas 0 -> 2", "coord.claim removed"]
    assert not list((isolated_state_dir / "journal").glob("*.json"))


def test_the_gateway_refuses_any_other_change_403_and_a_wrong_token_401_on_the_real_engine(
    swarm, gateway, docker_client, make_volume, make_service
):
    import requests

    service = make_service("db", make_volume("data"), replicas=1)
    version = version_of(docker_client, service)
    labels = labels_of(docker_client, service)
    headers = {"Authorization": f"Bearer {gateway['token']}", "X-Coord-Node": "e2e"}
    url = f"{gateway['url']}/v1/services/{service}"
    assert requests.get(url, headers=headers, timeout=30).json()["version"] == version

    refused = [
        {"version": version, "labels": {**labels, "com.example.other": "1"}},  # another label
        {"version": version, "TaskTemplate": {"ContainerSpec": {"Image": "coord-test/busybox:latest"}}},  # an image
    ]
    for body in refused:
        answer = requests.post(f"{url}/update", json=body, headers=headers, timeout=30)
        assert answer.status_code == 403, answer.text
    wrong = {**headers, "Authorization": "Bearer " + "0" * 40}
    assert (
        requests.post(f"{url}/update", json={"version": version, "replicas": 0}, headers=wrong, timeout=30).status_code
        == 401
    )
    assert requests.get(url, headers=wrong, timeout=30).status_code == 401
    assert version_of(docker_client, service) == version and replicas_of(docker_client, service) == 1
    assert labels_of(docker_client, service) == labels
    logged = Path(gateway["log"]).read_text()
    assert f"refused POST /v1/services/{service}/update: service " in logged  # the label change
    assert f"refused POST /v1/services/{service}/update: the gateway changes only" in logged  # the image
