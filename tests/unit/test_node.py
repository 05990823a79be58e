"""The node's name (one for the manifests, the metrics' `node` label and the layout on shared targets) and the
namespace a Swarm node writes and reads on targets (`<root>/_nodes/<node>/`)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from coord import node as node_module
from coord.errors import UsageError
from coord.node import check_node_name, namespace_node, node_name, node_of_engine, this_node


class SwarmEngine:
    """What namespace_node asks of an engine: its Swarm hostname (None: not an active Swarm node)."""

    def __init__(self, hostname: str | None) -> None:
        self.hostname = hostname
        self.asked = 0

    def swarm_hostname(self) -> str | None:
        self.asked += 1
        return self.hostname


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No node remembered from another test, no COORD_NODE, the default layout."""
    monkeypatch.setattr(node_module, "_engine_hostname", None)
    monkeypatch.delenv("COORD_NODE", raising=False)
    monkeypatch.delenv("COORD_NODE_LAYOUT", raising=False)


def test_the_node_is_coord_node_when_set_else_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORD_NODE", "node-3")
    assert this_node() == "node-3"
    monkeypatch.setenv("COORD_NODE", "")  # set but empty, as an unset template would leave it: the hostname
    assert this_node() == socket.gethostname()
    monkeypatch.delenv("COORD_NODE")
    assert this_node() == socket.gethostname()


def test_the_swarm_hostname_names_the_node_unless_coord_node_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert node_name("swarm-1") == "swarm-1"
    monkeypatch.setenv("COORD_NODE", "node-3")
    assert node_name("swarm-1") == "node-3"


def test_on_a_swarm_node_the_namespace_manifest_and_metrics_name_the_engines_hostname() -> None:
    engine = SwarmEngine("swarm-1")
    assert node_of_engine(engine) == "swarm-1"
    assert this_node() == "swarm-1"  # remembered: the manifest's and the metrics' node agree with the path


def test_outside_a_swarm_the_layout_is_flat_and_coord_node_does_not_change_that(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert node_of_engine(SwarmEngine(None)) is None
    monkeypatch.setenv("COORD_NODE", "other")
    assert node_of_engine(SwarmEngine(None)) is None
    assert node_of_engine(SwarmEngine("swarm-1")) == "other"  # on a Swarm node, COORD_NODE names the namespace


def test_coord_node_layout_flat_never_asks_the_engine_and_nodes_always_namespaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COORD_NODE_LAYOUT", "flat")
    engine = SwarmEngine("swarm-1")
    assert namespace_node(lambda: engine) is None and engine.asked == 0
    monkeypatch.setenv("COORD_NODE_LAYOUT", "nodes")
    assert node_of_engine(SwarmEngine(None)) == socket.gethostname()
    monkeypatch.setenv("COORD_NODE_LAYOUT", "sideways")
    with pytest.raises(UsageError, match="COORD_NODE_LAYOUT='sideways': give one of auto, flat, nodes"):
        node_of_engine(engine)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", ".hidden", "x\x00y"])
def test_a_name_that_is_not_a_path_segment_is_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="cannot name a node") as raised:
        check_node_name(name, "COORD_NODE")
    assert "_nodes/<node>/" in raised.value.message
    if name and "\x00" not in name:  # an empty COORD_NODE means unset; the environment cannot hold a NUL
        monkeypatch.setenv("COORD_NODE", name)
        with pytest.raises(UsageError, match="COORD_NODE"):
            node_of_engine(SwarmEngine("swarm-1"))
        assert this_node() == name  # shown as it is (a label), never raising


def test_usable_names_pass() -> None:
    for name in ("node1", "node-1.example.org", "NODE_2"):
        assert check_node_name(name, "--node") == name


def test_a_node_option_that_cannot_be_a_path_segment_is_a_usage_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from coord.cli import app

    result = CliRunner().invoke(app, ["list", "--node", "..", "--dest", str(tmp_path), "--policies-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--node '..' cannot name a node" in result.stderr, result.stderr


def test_under_nodes_an_unreachable_engine_still_gives_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    from coord.errors import DockerError

    def unreachable() -> SwarmEngine:
        raise DockerError("cannot reach the Docker engine")

    monkeypatch.setenv("COORD_NODE", "node-7")
    monkeypatch.setenv("COORD_NODE_LAYOUT", "nodes")
    assert namespace_node(unreachable) == "node-7"
    monkeypatch.setenv("COORD_NODE_LAYOUT", "auto")  # auto must know: the caller decides (warning, or refusal)
    with pytest.raises(DockerError):
        namespace_node(unreachable)
