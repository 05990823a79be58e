"""What coord changed, durably, so a crashed run can be undone (`coord recover`).

Before coord pauses or stops a container it writes a journal entry (one small JSON file per container under
<state dir>/journal/, written to a temporary name, fsynced and renamed, the directory fsynced too) and only
then acts. When the container is back, the entry is deleted. An entry that survives therefore means: a run
died (SIGKILL, OOM, power) between changing that container and restoring it. Recovery undoes only what an
entry records, and only while the container is still in the state coord put it in: a container someone
unpaused or started by hand is left alone.

The same journal records in-progress `.partial` archives so recovery can remove what a dead run left, and
archives being published (publish.py) so recovery completes or rolls back the rename and the manifest together.

A journal that cannot be written (read-only, disk full) raises JournalError, never leaves a temporary file, and
the caller does not act: an action coord could not record is an action it does not take.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from coord.errors import JournalError
from coord.fsutil import fsync_directory, write_json_atomically

log = logging.getLogger("coord.journal")

# What an entry is about (JournalEntry.kind).
CONTAINER = "container"  # a container coord paused or stopped (key: its id)
PARTIAL = "partial"  # a .partial archive being written (key: its path)
SNAPSHOT = "snapshot"  # a snapshot directory of a volume (key: its path)
PUBLISH = "publish"  # an archive being published with its manifest (key: the archive's final path)
RESTORE = "restore"  # a restore's staging directory (key: its path; name: where the old content goes; restore_swap.py)
# an archive being uploaded to a target (key: its final rclone path; identity: the target, backup/upload.py)
REMOTE_PUBLISH = "remote-publish"
SERVICE = "service"  # a replicated Swarm service coord scaled to 0 (key: its id; identity: its replica count; swarm.py)
CLAIM = "claim"  # a Swarm service coord claimed for this node (key: its id; identity: the claim; swarm.py)

# What coord did to it (JournalEntry.action).
PAUSED = "paused"
STOPPED = "stopped"
STOPPED_PAUSED = "stopped-paused"  # restore: a paused container stopped; it is started and paused again
WRITING = "writing"
PUBLISHING = "publishing"
UPLOADING = "uploading"
EXTRACTING = "extracting"  # restore: recovery removes the staging directory; the volume was not touched yet
SWAPPING = "swapping"  # restore: recovery completes the replacement of the volume's content (restore_swap.py)
SCALED_TO_ZERO = "scaled-to-0"  # a Swarm service: recovery scales it back to the count in `identity`
CLAIMED = "claimed"  # a Swarm service's coord.claim label: recovery removes it if it is still this claim


@dataclass(frozen=True)
class JournalEntry:
    kind: str  # CONTAINER | PARTIAL | SNAPSHOT | PUBLISH
    key: str  # container id, or the partial file's, snapshot directory's or published archive's path
    action: str  # PAUSED | STOPPED | STOPPED_PAUSED for a container; WRITING, SNAPSHOT, PUBLISHING otherwise
    name: str  # container name, for messages
    pid: int
    at: float
    # SNAPSHOT: "st_dev:st_ino" of the directory coord created (fsutil.format_identity), once it exists; only
    # that directory is ever removed at `key`. Empty: recorded before the directory was made.
    identity: str = ""

    @property
    def file_name(self) -> str:
        safe = self.key.replace("/", "%")
        return f"{self.kind}-{safe}.json"


class Journal:
    """A directory of entries, one per thing coord changed and has not yet put back."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "journal"

    def ensure(self) -> None:
        """Create the journal directory. Raises JournalError when it cannot be created."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise self._error("create the journal directory", self.directory, error) from None

    def record(self, kind: str, key: str, action: str, name: str, identity: str = "") -> JournalEntry:
        """Durably write an entry (replacing one with the same kind and key); returns once it is on disk (before
        the caller acts).

        Raises JournalError (and leaves no temporary file) when the entry cannot be written.
        """
        self.ensure()
        entry = JournalEntry(
            kind=kind, key=key, action=action, name=name, pid=os.getpid(), at=time.time(), identity=identity
        )
        target = self.directory / entry.file_name
        try:
            write_json_atomically(target, asdict(entry), indent=None)
        except OSError as error:
            raise self._error("write the journal entry", target, error) from None
        return entry

    def clear(self, entry: JournalEntry) -> None:
        """Delete an entry (what it records was put right). Raises JournalError when it cannot be deleted."""
        path = self.directory / entry.file_name
        try:
            path.unlink(missing_ok=True)
            fsync_directory(self.directory)
        except OSError as error:
            raise self._error("remove the journal entry", path, error) from None

    @staticmethod
    def _error(what: str, path: Path, error: OSError) -> JournalError:
        return JournalError(
            f"cannot {what} {path}: {error.strerror or error}. coord records what it changes "
            "there before acting; make <state dir>/journal writable (disk space, read-only mount, permissions)"
        )

    def entries(self) -> list[JournalEntry]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(JournalEntry(**json.loads(path.read_text(encoding="utf-8"))))
            except (ValueError, TypeError, OSError) as error:
                log.warning("ignoring unreadable journal entry %s: %s", path, error)
        return found
