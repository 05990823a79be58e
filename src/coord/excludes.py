"""Exclude patterns: one meaning, carried out by GNU tar and checked the same way in Python.

Semantics (also in the policy schema and README):
- paths are relative to the volume root; '*', '?' and '[...]' never match '/';
- a pattern containing '/' is anchored at the volume root and matches whole leading components, so it excludes
  the entry it names and everything below it; a leading '/' only anchors ('/tmp' is the root's tmp);
- a pattern without '/' matches an entry of that name at any depth.

GNU tar's own default lets '*' match '/' (docs/platform.md: the incident's 'store/*/*_*_*_*' swallowed every
data part), so coord always passes --no-wildcards-match-slash and chooses --anchored per pattern.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ExcludeMatcher:
    patterns: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Sequence[str]) -> ExcludeMatcher:
        return cls(tuple(p.rstrip("/") for p in patterns))

    @staticmethod
    def _anchored(pattern: str) -> str | None:
        """The root-relative form of an anchored pattern, or None for one that matches at any depth."""
        return pattern.removeprefix("/") if "/" in pattern else None

    def matching_pattern(self, relative_path: str) -> str | None:
        """The first pattern that excludes `relative_path` ('store/263/x', no leading './'), or None."""
        components = relative_path.split("/")
        for pattern in self.patterns:
            anchored = self._anchored(pattern)
            if anchored is not None:
                wanted = anchored.split("/")
                if len(components) >= len(wanted) and all(
                    fnmatch.fnmatchcase(component, part) for component, part in zip(components, wanted, strict=False)
                ):
                    return pattern
            elif any(fnmatch.fnmatchcase(component, pattern) for component in components):
                return pattern
        return None

    def excludes(self, relative_path: str) -> bool:
        return self.matching_pattern(relative_path) is not None

    def tar_arguments(self) -> list[str]:
        """GNU tar options carrying out these patterns for an archive made with `-C ROOT .` (members './...')."""
        arguments = ["--no-wildcards-match-slash"]
        for pattern in self.patterns:
            anchored = self._anchored(pattern)
            if anchored is not None:
                arguments += ["--anchored", f"--exclude=./{anchored}"]
            else:
                arguments += ["--no-anchored", f"--exclude={pattern}"]
        return arguments
