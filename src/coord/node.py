"""The node coord runs on, as its manifests, metrics and the layout on shared targets name it (docs/swarm.md).

One name everywhere: `COORD_NODE` when set, else the Swarm node's hostname as the engine reports it (`docker info`
`Name`: the node's, stable when coord's own container is recreated, unlike the container's hostname), else this
host's name. The name is a path segment on shared targets (`<root>/_nodes/<node>/<volume>/`), so a name that
cannot be one is refused.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Protocol

from coord.errors import DockerError, UsageError

NODE_ENV = "COORD_NODE"
LAYOUT_ENV = "COORD_NODE_LAYOUT"  # auto (default): _nodes/<node>/ on a Swarm node; flat; nodes (always)
LAYOUTS = ("auto", "flat", "nodes")
NODES_DIRECTORY = "_nodes"  # <target root>/_nodes/<node>/<volume>/: never a volume (Docker's start [a-zA-Z0-9])

_engine_hostname: str | None = None  # the Swarm node's hostname, once an engine of this process was asked


class SwarmInfo(Protocol):
    """What node_of_engine needs of the engine (docker_ops.Engine has it)."""

    def swarm_hostname(self) -> str | None: ...


def check_node_name(name: str, origin: str) -> str:
    """`name` when it can be a directory name on a target; raises UsageError (naming `origin`, e.g. COORD_NODE)
    when it is empty, `.`/`..`, holds a `/` or starts with `.`."""
    if not name or name in (".", "..") or "/" in name or name.startswith(".") or "\x00" in name:
        raise UsageError(
            f"{origin} {name!r} cannot name a node: archives of a Swarm node are stored under "
            f"<target>/{NODES_DIRECTORY}/<node>/, so the name must be a plain path segment (not empty, no '/', not "
            "starting with '.'); set COORD_NODE to the node's name"
        )
    return name


def node_name(swarm_hostname: str | None = None) -> str:
    """The node's name: `COORD_NODE` when set and not empty, else `swarm_hostname` (the engine's, when it is a
    Swarm node), else the hostname this engine reported earlier in this process, else this host's name.
    Raises UsageError when that name is not a usable path segment."""
    given = os.environ.get(NODE_ENV)
    if given:
        return check_node_name(given, NODE_ENV)
    hostname = swarm_hostname or _engine_hostname
    if hostname:
        return check_node_name(hostname, "the Swarm node's hostname")
    return check_node_name(socket.gethostname(), "this host's name")


def this_node() -> str:
    """The node's name for the manifests, the metrics' `node` label and the HTML report (node_name()). Never
    raises: an unusable name is shown as it is (only the layout on a target refuses it, before writing)."""
    try:
        return node_name()
    except UsageError:
        return os.environ.get(NODE_ENV) or _engine_hostname or socket.gethostname()


def configured_layout() -> str:
    """`COORD_NODE_LAYOUT`: `auto` (unset: a Swarm node's archives in its own namespace), `flat` (never: the
    single-host layout even on a Swarm node, e.g. a one-node swarm keeping its archives where they are) or `nodes`
    (always, also for hosts outside a swarm that share a target). Raises UsageError for another value."""
    layout = os.environ.get(LAYOUT_ENV) or "auto"
    if layout not in LAYOUTS:
        raise UsageError(f"{LAYOUT_ENV}={layout!r}: give one of {', '.join(LAYOUTS)}")
    return layout


def namespace_node(connect: Callable[[], SwarmInfo]) -> str | None:
    """The node whose namespace this process writes and reads on shared targets (`_nodes/<node>/`), or None for
    the flat layout: by COORD_NODE_LAYOUT, and under `auto` whether the engine `connect()` gives is an active
    Swarm node (its hostname is remembered, so that this_node() in the same process names the node alike; the
    engine is not asked under `flat`, and need not answer under `nodes`). Raises UsageError (an unusable name or
    layout), DockerError (under `auto`: the engine cannot be reached)."""
    global _engine_hostname
    layout = configured_layout()
    if layout == "flat":
        return None
    try:
        hostname = connect().swarm_hostname()
    except DockerError:
        if layout == "auto":
            raise
        hostname = None  # `nodes`: a namespace whatever the engine says; its name without the engine's help
    if hostname is not None:
        _engine_hostname = hostname
    elif layout == "auto":
        return None
    return node_name(hostname)


def node_of_engine(engine: SwarmInfo) -> str | None:
    """namespace_node() of `engine`."""
    return namespace_node(lambda: engine)
