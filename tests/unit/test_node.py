"""this_node(): the node name shared by the manifests, the metrics' `node` label and the HTML report."""

from __future__ import annotations

import socket

import pytest

from coord.node import this_node


def test_the_node_is_coord_node_when_set_else_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORD_NODE", "node-3")
    assert this_node() == "node-3"
    monkeypatch.setenv("COORD_NODE", "")  # set but empty, as an unset template would leave it: the hostname
    assert this_node() == socket.gethostname()
    monkeypatch.delenv("COORD_NODE")
    assert this_node() == socket.gethostname()
