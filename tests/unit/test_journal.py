"""The journal's entries are written atomically (fsutil.write_json_atomically): whole, or not at all and said so."""

from pathlib import Path

import pytest

from coord.errors import JournalError
from coord.journal import CONTAINER, PAUSED, Journal


def test_an_entry_is_on_disk_when_record_returns(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = journal.record(CONTAINER, "abc123", PAUSED, "db")
    assert journal.entries() == [entry]
    journal.clear(entry)
    assert journal.entries() == []


def test_an_entry_that_cannot_be_written_raises_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.ensure()
    blocked = journal.directory / f"{CONTAINER}-abc123.json"
    blocked.mkdir()  # the rename onto this name fails: a directory is in the way
    with pytest.raises(JournalError, match="cannot write the journal entry"):
        journal.record(CONTAINER, "abc123", PAUSED, "db")
    assert sorted(path.name for path in journal.directory.iterdir()) == [blocked.name]
