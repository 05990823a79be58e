"""coord finds the container it runs in from the engine's bind mounts in /proc/self/mountinfo (coord/sources.py),
whatever the engine's data root: it must never pause or stop its own container."""

from __future__ import annotations

from coord.sources import _CONTAINER_ID

ID = "8bc20122ff9b62ff74fb9e85a0948ecf77d78809338792e6d0e78e5dd1e3d003"


def test_the_container_id_is_found_under_any_data_root() -> None:
    roots = [
        "/var/lib/docker",  # the default
        "/srv/docker-data",  # --data-root
        "/var/lib/docker/volumes/51e654eac3c7/_data",  # an engine inside a container (seen in the multi-node run)
    ]
    for root in roots:
        for name in ("resolv.conf", "hostname", "hosts"):
            line = f"660 626 254:0 {root}/containers/{ID}/{name} /etc/{name} rw,relatime - ext4 /dev/vda rw"
            found = _CONTAINER_ID.search(line)
            assert found is not None and found.group(1) == ID, line


def test_a_volume_path_that_merely_contains_containers_is_not_taken_for_one() -> None:
    line = f"700 626 254:0 /var/lib/docker/volumes/app/_data/containers/{ID}/notes.txt /data rw - ext4 /dev/vda rw"
    assert _CONTAINER_ID.search(line) is None
