"""GNU tar's diagnostics, classified entry by entry.

tar's exit status is not enough: it only goes up, 1 covers both "a file changed" and nothing worse,
and `--ignore-failed-read` turns permission errors into 0. So coord reads every stderr line, under LC_ALL=C, and
sorts each into a kind. Tolerance is data: which kinds are warnings is decided by the strategy, not here.
Anything this module does not recognise is critical: an unknown message must never pass as a warning.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum


class ProblemKind(StrEnum):
    VANISHED = "vanished"  # listed in its directory, gone before tar could read it
    CHANGED = "changed"  # changed while tar read it
    SHRANK = "shrank"  # got shorter while read: tar padded the member with zeros, its content is damaged
    SKIPPED = "skipped"  # not archivable by design (sockets) or excluded by the policy
    CRITICAL = "critical"  # anything that means data the operator expects is not in the archive


# The kinds counted as a volume's warnings (history's warning_count, the summaries). SKIPPED is not one: a socket
# or an excluded entry is left out by design, not by a race with the writer.
WARNING_KINDS = (ProblemKind.VANISHED, ProblemKind.CHANGED, ProblemKind.SHRANK)


@dataclass(frozen=True)
class EntryProblem:
    kind: ProblemKind
    path: str  # relative to the volume root, "." for the root itself; "" when the problem is not about an entry
    detail: str  # tar's own words, for the manifest and the operator

    def describe(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail


# Summary lines tar prints after the per-entry ones; the per-entry lines already said everything.
_SUMMARY_LINES = (
    "Exiting with failure status due to previous errors",
    "Error exit delayed from previous errors",
)
_SHRANK = re.compile(r"File shrank by \d+ bytes?; padding with zeros")
_CANNOT = re.compile(r"Cannot (?P<operation>[a-z]+): (?P<reason>.+)")
_ESCAPES = {"n": b"\n", "t": b"\t", "a": b"\a", "b": b"\b", "f": b"\f", "r": b"\r", "v": b"\v"}


def unescape_tar_name(text: str) -> str:
    r"""Undo tar's default 'escape' quoting (\\, \n, \ooo octal bytes, \: in diagnostics) into a file name.

    Non-UTF-8 bytes come back as surrogate escapes, exactly as os.listdir returns them, so names from tar and
    from the file system compare equal.
    """
    if "\\" not in text:
        return text
    out = bytearray()
    index = 0
    while index < len(text):
        character = text[index]
        if character != "\\" or index + 1 == len(text):
            out += os.fsencode(character)
            index += 1
            continue
        following = text[index + 1]
        octal = text[index + 1 : index + 4]
        if len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(int(octal, 8) & 0xFF)
            index += 4
        else:
            out += _ESCAPES.get(following, os.fsencode(following))
            index += 2
    return os.fsdecode(bytes(out))


def member_to_path(member: str) -> str:
    """'./store/263/x' -> 'store/263/x'; './' or '.' -> '.'. The input is still escaped as tar prints it."""
    name = unescape_tar_name(member)
    if name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return name or "."


def _split_diagnostic(body: str) -> tuple[str, str] | None:
    """Split '<escaped name>: <message>' at the first unescaped ': ' (tar escapes ':' in names as '\\:')."""
    index = 0
    while index < len(body) - 1:
        if body[index] == "\\":
            index += 2
            continue
        if body[index] == ":" and body[index + 1] == " ":
            return body[:index], body[index + 2 :]
        index += 1
    return None


def classify_tar_line(line: str) -> EntryProblem | None:
    """Classify one line tar wrote to stderr (LC_ALL=C). Returns None for summary lines that add nothing."""
    text = line.rstrip("\n")
    if not text.strip():
        return None
    body = text[len("tar: ") :] if text.startswith("tar: ") else text
    if body in _SUMMARY_LINES:
        return None
    split = _split_diagnostic(body)
    if split is None:
        return EntryProblem(ProblemKind.CRITICAL, "", f"tar: {body}")
    member, message = split
    path = member_to_path(member)
    if message == "File removed before we read it":
        return EntryProblem(ProblemKind.VANISHED, path, message)
    if message == "file changed as we read it":
        return EntryProblem(ProblemKind.CHANGED, path, message)
    if _SHRANK.fullmatch(message):
        return EntryProblem(ProblemKind.SHRANK, path, message)
    if message in ("socket ignored", "door ignored"):
        return EntryProblem(ProblemKind.SKIPPED, path, message)
    cannot = _CANNOT.fullmatch(message)
    if cannot and cannot["reason"] == "No such file or directory" and path != ".":
        # Below the top level, ENOENT means the entry was deleted after its directory was listed: the same race
        # as "File removed before we read it", reported through another code path (open, savedir, readlink).
        return EntryProblem(ProblemKind.VANISHED, path, message)
    return EntryProblem(ProblemKind.CRITICAL, path, message)
