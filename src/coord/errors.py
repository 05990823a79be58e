"""The errors coord raises, each carrying a message an operator can act on, and its exit code.

Exit codes (documented in README.md):
  0  every volume ok, warning or excluded
  1  a volume failed, or the run could not be carried out (Docker unreachable, lock held, restore failed,
     archive rejected or failing verification, wrong passphrase or missing key, the journal or a file coord
     needs could not be written: disk full, read-only file system)
  2  usage or policy error: nothing was touched (also a policy file that cannot be read: not UTF-8, nested
     too deeply, a link to nothing)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CoordError(Exception):
    """Base of every error coord reports to the operator instead of a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PolicyError(CoordError):
    """One or more policy files are invalid. `problems` holds one line per problem, each naming file, line and key."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} policy {noun}:\n" + "\n".join(f"  {p}" for p in problems))


class UsageError(CoordError):
    """The command line asks for something that cannot be done as stated (unknown policy name, bad path...)."""

    exit_code = EXIT_USAGE


class DockerError(CoordError):
    """The Docker engine refused or failed an operation coord needed."""


class LockError(CoordError):
    """Another coord run holds the state directory's lock."""


class RestoreContainersError(CoordError):
    """A container coord paused or stopped could not be put back. Always loud: the operator must act."""


class EncryptionError(CoordError):
    """GnuPG could not encrypt or decrypt: a key or passphrase problem, or gpg's own failure, in gpg's words."""


class RestoreError(CoordError):
    """A restore could not be carried out; the message says what was (not) written."""


class ContainersMustStayDown(RestoreError):
    """The volume is in no state to run on (a restore's swap broke off halfway): the containers coord stopped stay
    stopped, their journal entries kept, until `coord recover` has completed the swap and then starts them."""


class ArchiveRejected(RestoreError):
    """The archive holds members a safe restore refuses. `problems` names every one; nothing was written."""

    def __init__(self, archive: str, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        super().__init__(
            f"refusing to restore {archive}: {len(problems)} unsafe member(s), nothing was written:\n"
            + "\n".join(f"  {p}" for p in shown)
            + more
        )


class HistoryError(CoordError):
    """The run history database in the state directory cannot be read or written."""


class JournalError(CoordError):
    """The journal (<state dir>/journal) could not be written: coord does not change a container or a file it
    could not record first."""


class PublishError(CoordError):
    """An archive could not be published with its manifest (disk full, I/O error); what was written is gone."""
