"""Where a volume's files are read: on the host at the engine's Mountpoint, or mounted into the coord sidecar.

On the host (as root) coord reads `/var/lib/docker/volumes/<name>/_data`, the `Mountpoint` the engine reports.
In a container it cannot see host paths, so the volumes are mounted into it at `<volumes root>/<name>`
(`--volumes-root`, env `COORD_VOLUMES_ROOT`, default `/volumes`), read-only unless a strategy writes
(snapshot does). coord runs in sidecar mode when a volumes root is given, or when it finds itself in a container
that has `/volumes`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coord.docker_ops import Engine
from coord.errors import CoordError

DEFAULT_VOLUMES_ROOT = Path("/volumes")


def in_container() -> bool:
    """True when this process runs inside a Docker (or compatible) container."""
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        return any(word in Path("/proc/1/cgroup").read_text() for word in ("docker", "containerd", "kubepods"))
    except OSError:
        return False


# The engine bind-mounts <data root>/containers/<id>/{resolv.conf,hostname,hosts} into each container. The data
# root is not always /var/lib/docker: `--data-root` moves it, and an engine inside a container (a Swarm node of
# scripts/swarm-multinode/run.sh) keeps it in a volume (/var/lib/docker/volumes/<v>/_data/containers/<id>/...).
_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/(?:resolv\.conf|hostname|hosts) ")


def own_container_id() -> str | None:
    """This container's id when coord runs in one (found in the engine's bind mounts of resolv.conf/hostname),
    so coord never pauses or stops the container it runs in, even when it mounts the volume it backs up."""
    try:
        found = _CONTAINER_ID.search(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    return found.group(1) if found else None


@dataclass(frozen=True)
class VolumeSources:
    """How this run finds each volume's files."""

    volumes_root: Path | None  # None: host mode

    @classmethod
    def detect(cls, volumes_root: Path | None) -> VolumeSources:
        """Sidecar mode when a volumes root is given (the coord image sets COORD_VOLUMES_ROOT=/volumes), or when
        coord runs in a container that has /volumes; host mode otherwise."""
        if volumes_root is not None:
            return cls(volumes_root)
        return cls(DEFAULT_VOLUMES_ROOT if in_container() and DEFAULT_VOLUMES_ROOT.is_dir() else None)

    @property
    def mode(self) -> str:
        return "host" if self.volumes_root is None else "sidecar"

    def describe(self) -> str:
        if self.volumes_root is None:
            return "coord runs on the host: volumes are read at their Docker Mountpoint"
        return f"coord runs as a sidecar: volume <name> is read at {self.volumes_root}/<name>"

    def path_of(self, volume: str, docker: Engine) -> Path:
        """The directory holding `volume`'s files. Raises CoordError naming what to fix in sidecar mode."""
        if self.volumes_root is None:
            return Path(docker.volume_mountpoint(volume))
        path = self.volumes_root / volume
        if not path.is_dir():
            raise CoordError(
                f"volume '{volume}' is not mounted into this container at {path}: add "
                f"'{volume}:{path}:ro' to the coord service's volumes (rw for strategy snapshot)"
            )
        return path


HOST = VolumeSources(None)
