"""coord: a Docker-aware consistency coordinator for volume backups."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("coord")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
