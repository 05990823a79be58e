"""Writing JSON files atomically: the old file or the whole new one, and no temporary file left on failure."""

from pathlib import Path

import pytest

from coord.fsutil import write_json_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_json_atomically(target, {"generation": 1})
    with pytest.raises(TypeError):
        write_json_atomically(target, {"generation": 2, "unserialisable": object()})  # fails half-way through
    assert target.read_text() == '{\n  "generation": 1\n}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state.json"]
