"""A volume's job through its group, with its phases explicit:

    admitted (`Job`: source, encryption)  -> archived (`Written`: .partial file, its journal entry, the outcome;
    or streamed to a remote; or spooled for one) -> decided and published (publish.py fills the result)

A volume that cannot be admitted (missing source, unfinished restore, no key, destination not writable) never
becomes a job: its result carries the reason and nothing is quiesced for it.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from coord.archive import ArchiveOutcome, archive_suffix
from coord.backup.context import RunContext
from coord.backup.upload import CHECKED_HASHES, Capabilities, RemoteArchive, capabilities_of, probe_target
from coord.encrypt import GPG_SUFFIX, Encryption, encryption_for, warm_up
from coord.errors import CoordError
from coord.fsutil import open_directory
from coord.journal import JournalEntry
from coord.plan import VolumePlan
from coord.policy import Compression, Strategy
from coord.restore_swap import STAGING_PREFIX
from coord.results import TargetResult, TargetStatus, VolumeResult, VolumeStatus
from coord.snapshot import Snapshot
from coord.targets import Target, targets_of
from coord.verify import WrittenArchiveCheck

log = logging.getLogger("coord")


@dataclass
class Written:
    """An archive written to its .partial file: where it goes, its journal entry, what archiving saw."""

    final: Path
    entry: JournalEntry
    outcome: ArchiveOutcome
    check: WrittenArchiveCheck  # how it is stored (encrypted or not) and checked
    strategy: Strategy  # the read that produced it
    started: datetime
    clock: float  # time.monotonic() when archiving started
    snapshot: Snapshot | None = None  # read from this snapshot (closed by then; the manifest names its method)
    modified_after_snapshot: list[str] = field(default_factory=list)
    remote: RemoteArchive | None = None  # streamed to this remote (no local target); `final` is then only a name
    # no local target, read while the containers waited: `partial` is a local spool file, uploaded to every target
    # once they are back, then removed (`final` is only a name)
    spooled: bool = False

    @property
    def partial(self) -> Path:
        return self.final.with_name(self.final.name + ".partial")

    @property
    def local(self) -> bool:
        """Published on a local target (neither streamed to a remote nor spooled for one)."""
        return self.remote is None and not self.spooled


@dataclass
class TakenSnapshot:
    """A volume's snapshot directory while it exists: its journal entry, and the snapshot once linked."""

    entry: JournalEntry
    snapshot: Snapshot | None = None


@dataclass
class Job:
    """An admitted volume: its plan, its result so far, where its files are read, how its archive is encrypted;
    then its archive (`written`) and, for strategy snapshot, its snapshot while it exists."""

    plan: VolumePlan
    result: VolumeResult
    source: Path
    encryption: Encryption | None
    written: Written | None = None
    snapshot: TakenSnapshot | None = None
    targets: list[Target] = field(default_factory=list)  # where its archive goes; the first is written to
    planned_targets: list[str] = field(default_factory=list)  # the policy's targets, in the order defined
    extra_hashes: tuple[str, ...] = ()  # md5/sha1 the targets check uploads by, computed with the sha256
    atomic_targets: frozenset[str] = frozenset()  # targets whose uploads are atomic (object stores: upload.py)

    @property
    def volume(self) -> str:
        return self.plan.volume

    @property
    def primary(self) -> Target:
        """The target the archive is written to: the first local one, else the first remote (streamed to)."""
        return self.targets[0]

    @property
    def compression(self) -> Compression:
        """The policy's, or none when the archive goes to a restic repository (restic compresses after
        deduplicating; a compressed stream would not deduplicate)."""
        return Compression.NONE if self.primary.is_restic else self.plan.policy.policy.compression

    @property
    def local_dest(self) -> Path | None:
        """The primary target's directory of volume directories when it is local: its root, or on a Swarm node
        `<root>/_nodes/<node>` (None: the archive streams to a remote)."""
        return self.primary.archive_root

    @property
    def file_suffix(self) -> str:
        """How its archive's file name ends: `.tar.zst`, `.tar.zst.gpg`, ..."""
        return archive_suffix(self.compression) + (GPG_SUFFIX if self.encryption else "")

    def remote_archive(self, target: Target, file_name: str) -> RemoteArchive:
        """The archive's names on `target` (uploaded straight to its name where uploads are atomic)."""
        return RemoteArchive(target, self.volume, file_name, direct=target.name in self.atomic_targets)

    def name_taken_on_primary(self, file_name: str) -> bool:
        """Whether `file_name` is taken in the volume's directory on the (remote) primary target, by an archive or
        an upload's temporary: an upload never replaces a file, and two runs in one second want the same name.
        The other targets get their copies from the primary, so a name free there is free on them. Raises
        RemoteError."""
        archive = self.remote_archive(self.primary, file_name)
        rclone = self.primary.rclone()
        return any(rclone.stat(path) is not None for path in dict.fromkeys((archive.location, archive.temporary)))

    @property
    def other_targets(self) -> list[Target]:
        """The targets that get the archive once it is published on the primary one."""
        return self.targets[1:]


def new_result(plan: VolumePlan) -> VolumeResult:
    return VolumeResult(volume=plan.volume, policy=plan.policy.name, strategy=plan.strategy, status=VolumeStatus.FAILED)


def admit(plan: VolumePlan, group_error: str | None, ctx: RunContext) -> tuple[VolumeResult, Job | None]:
    """The volume's result, and its job when it can run. A planning error, strategy exclude or a refusal
    (recorded on the result and logged: notifications carry the log's tail) gives no job."""
    result = new_result(plan)
    planned_error = plan.error or group_error
    if planned_error:
        result.errors.append(planned_error)
        return result, None
    if plan.strategy is Strategy.EXCLUDE:
        result.status = VolumeStatus.EXCLUDED
        return result, None
    request = ctx.request
    try:
        source = request.sources.path_of(plan.volume, ctx.docker)
        refuse_unfinished_restore(plan.volume, source)
        encryption = encryption_for(plan.policy.policy.encrypt, request.state_dir, request.passphrase_file)
        if encryption is not None:
            warm_up(encryption)
        targets = admit_targets(plan, result, ctx)
    except CoordError as error:
        result.errors.append(error.message)
        log.error("%s: %s", plan.volume, error.message)
        return result, None
    job = Job(plan, result, source, encryption, targets=targets)
    job.planned_targets = [target.name for target in targets_of(plan.policy.policy, ctx.targets)]
    capabilities = remote_capabilities(targets, ctx)
    job.extra_hashes = tuple(name for name in CHECKED_HASHES if any(name in c.hashes for c in capabilities.values()))
    job.atomic_targets = frozenset(name for name, offered in capabilities.items() if offered.atomic)
    return result, job


def admit_targets(plan: VolumePlan, result: VolumeResult, ctx: RunContext) -> list[Target]:
    """The volume's targets that can be written to, the local ones first. A remote that refuses a probe is
    recorded as failed on the result (the volume will fail, naming it) and left out. Raises CoordError when no
    target is left: nothing is run, paused or stopped then."""
    wanted = targets_of(plan.policy.policy, ctx.targets)
    if not wanted:
        named = ", ".join(plan.policy.policy.targets or ())
        raise CoordError(
            f"no target: policy {plan.policy.name} sends its archives to {named}, and this run writes to "
            f"{', '.join(target.name for target in ctx.targets)} only (--target)"
        )
    refuse_restic_with_others(plan, wanted)
    usable = []
    for target in sorted(wanted, key=lambda item: not item.is_local):
        try:
            if target.local_path is not None:
                check_destination(target.volume_directory(plan.volume))
            elif target.restic is not None:
                probe_repository(target)
            else:
                probe_target(target, plan.volume)
        except CoordError as error:  # among the volume's errors once it is published (publish.settle_targets)
            result.targets.append(TargetResult(target.name, TargetStatus.FAILED, error=error.message))
            log.error("%s: %s", plan.volume, error.message)
            continue
        usable.append(target)
    if not usable:
        errors = [item.error for item in result.targets if item.error]
        if len(errors) == 1:  # the volume's only target: its error is the volume's
            raise CoordError(errors[0])
        result.errors += errors
        raise CoordError("no target can be written to; nothing was run, paused or stopped")
    return usable


def refuse_restic_with_others(plan: VolumePlan, wanted: list[Target]) -> None:
    """A restic target takes the volume's uncompressed tar stream (no other target wants that) and does its own
    encryption: it must be the volume's only target, and the policy must not ask gpg to encrypt (restic could not
    deduplicate gpg's output). Raises CoordError saying what to change."""
    restic = [target.name for target in wanted if target.is_restic]
    if not restic:
        return
    name = plan.policy.name
    if len(wanted) > 1:
        raise CoordError(
            f"policy {name} sends its archives to the restic target {restic[0]} and to "
            f"{', '.join(t.name for t in wanted if t.name != restic[0])}: a restic target must be a volume's only "
            f"target (it gets the uncompressed stream); give policy {name} `targets: [{restic[0]}]` or the others"
        )
    if plan.policy.policy.encrypt is not None:
        raise CoordError(
            f"policy {name} encrypts with gpg (`encrypt:`), and its target {restic[0]} is a restic repository, "
            "which encrypts by itself and could not deduplicate gpg's output: drop `encrypt:` for this policy"
        )


def probe_repository(target: Target) -> None:
    """List the repository's coord snapshots before anything is touched: it is there, reachable, the password
    is right, and a lock held by another restic process is waited for. Raises CoordError naming the target."""
    target.repository().snapshots("coord-probe")


def remote_capabilities(targets: list[Target], ctx: RunContext) -> dict[str, Capabilities]:
    """What each remote target's backend offers (hashes, atomic uploads), asked once per target and run."""
    for target in targets:
        if not target.is_local and not target.is_restic and target.name not in ctx.capabilities:
            ctx.capabilities[target.name] = capabilities_of(target)
    return {target.name: ctx.capabilities[target.name] for target in targets if target.name in ctx.capabilities}


def check_destination(directory: Path) -> None:
    """Make sure archives can be written into `directory` (created if missing) before any hook runs or container
    is touched. Raises CoordError saying why not."""
    probe = directory / f".coord-write-probe-{secrets.token_hex(8)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise CoordError(
            f"destination {directory} is not writable ({error.strerror}); nothing was run, paused or stopped"
        ) from None


def refuse_unfinished_restore(volume: str, source: Path) -> None:
    """Raise CoordError when the root of `volume` (`source`) holds a restore's staging directory: that restore
    did not finish, the volume may be half restored, and an archive of it must not look like a good backup.

    Only a real directory counts (listed without following links); a link or file planted at such a name is
    not coord's and is merely never archived. A root that cannot be read is left for the archive step to report.
    """
    try:
        fd = open_directory(source)
    except OSError:
        return
    try:
        with os.scandir(fd) as entries:
            staging = sorted(
                entry.name
                for entry in entries
                if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False)
            )
    except OSError:
        return
    finally:
        os.close(fd)
    if staging:
        raise CoordError(
            f"volume '{volume}' holds an unfinished restore ({source}/{staging[0]}): not backed up, since it may "
            "be half restored. Run `coord recover` to finish or roll back that restore, then back up again; if "
            f"the directory is still there, restore the volume again, or remove {source}/{staging[0]} once you "
            "know the volume holds what it should"
        )


def clear_entry(ctx: RunContext, entry: JournalEntry, result: VolumeResult) -> None:
    """Clear a journal entry whose file is gone; a journal that refuses is reported on the volume (`coord
    recover` clears the entry later: it finds nothing left to remove)."""
    try:
        ctx.journal.clear(entry)
    except CoordError as error:
        result.errors.append(error.message)
