"""The node coord runs on, as its manifests and metrics name it (docs/swarm.md)."""

from __future__ import annotations

import os
import socket


def this_node() -> str:
    """`COORD_NODE` when set (compose/stack.yml sets it to the Swarm node's hostname: inside a container the
    hostname is the container's), else this host's name. One function for the manifest's `node`, the metrics'
    `node` label and the HTML report, so that they name a node alike."""
    return os.environ.get("COORD_NODE") or socket.gethostname()
