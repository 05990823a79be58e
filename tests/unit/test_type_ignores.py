"""Every `# type: ignore` left in src/ names its error code and says why, on the same line.

mypy itself (scripts/test.sh runs it with warn_unused_ignores and the ignore-without-code error code) refuses an
ignore that is not needed or names no code; the reason is a convention only this test holds.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src"
IGNORE = re.compile(r"#\s*type:\s*ignore")
# `# type: ignore[code, ...]` followed by a comment of at least a few words.
EXPLAINED_IGNORE = re.compile(r"#\s*type:\s*ignore\[[a-z-]+(,\s*[a-z-]+)*\]\s+#\s*\S+(\s+\S+){2,}")


def unexplained_ignores(root: Path) -> list[str]:
    """`path:line: text` of every type-ignore comment under `root` that lacks a code or a reason."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if IGNORE.search(line) and not EXPLAINED_IGNORE.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_every_type_ignore_in_src_says_why() -> None:
    assert unexplained_ignores(SOURCE) == []


def test_an_ignore_without_a_reason_or_a_code_is_found(tmp_path: Path) -> None:
    (tmp_path / "module.py").write_text(
        "a = f()  # type: ignore[attr-defined]\n"
        "b = f()  # type: ignore\n"
        "c = f()  # type: ignore[misc]  # the stubs lack this overload\n"
        "d = f()  # type: ignore[misc] - a dash is not a comment mypy accepts\n",
        encoding="utf-8",
    )
    assert unexplained_ignores(tmp_path) == [
        "module.py:1: a = f()  # type: ignore[attr-defined]",
        "module.py:2: b = f()  # type: ignore",
        "module.py:4: d = f()  # type: ignore[misc] - a dash is not a comment mypy accepts",
    ]
