"""coord: a Docker-aware consistency coordinator for volume backups."""

# A literal, not importlib.metadata at import (~45 ms of every start): pyproject.toml reads it from here.
__version__ = "0.1.0"
