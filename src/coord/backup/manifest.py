"""The manifest document written beside each archive (README.md, "Manifest"): enough to verify the archive and
to know how consistent it is, without coord."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

from coord import __version__
from coord.backup.job import Job, Written
from coord.manifest import MANIFEST_FORMAT
from coord.node import this_node
from coord.problems import WARNING_KINDS, ProblemKind
from coord.verify import ReadBack, WrittenArchiveCheck


def build_manifest(job: Job, written: Written, read: ReadBack) -> dict[str, object]:
    """The manifest of `job`'s archive: given its result so far (status decided, archive named), what was
    written and what the check read."""
    result, plan, outcome, encryption = job.result, job.plan, written.outcome, job.encryption
    consistency = outcome.consistency
    warnings: dict[str, list[str]] = {kind.value: [p.path for p in outcome.of_kind(kind)] for kind in WARNING_KINDS}
    warnings[ProblemKind.SKIPPED.value] = [f"{p.path}: {p.detail}" for p in outcome.of_kind(ProblemKind.SKIPPED)]
    snapshot = written.snapshot
    return {
        "format": MANIFEST_FORMAT,
        "tool": "coord",
        "tool_version": __version__,
        "host": socket.gethostname(),
        # the Swarm node (or host) that wrote it, for the fleet report: the name of its namespace on the targets
        "node": job.primary.node or this_node(),
        "volume": result.volume,
        "policy": result.policy,
        "policy_file": str(plan.policy.path),
        "strategy": str(result.strategy),
        "status": result.status.value,
        "source": str(job.source),
        "excludes": list(plan.policy.policy.exclude),
        "excluded": list(consistency.excluded) if consistency else [],  # paths the excludes left out
        "started_at": written.started.isoformat(),
        "finished_at": datetime.fromtimestamp(outcome.finished_at, UTC).isoformat(),
        "archive": Path(result.archive or "").name,
        "compression": job.compression.value,
        "encryption": encryption.to_manifest() if encryption else None,
        # sha256/size: the file as on disk (`sha256sum` checks it); stream_*: the compressed tar stream inside it
        # (the same as the file without encryption; `gpg -d FILE | sha256sum` with it).
        "size": read.size if read.sha256 else outcome.size,
        "sha256": read.sha256 if read.sha256 else outcome.sha256,
        "stream_size": outcome.size,
        "stream_sha256": outcome.sha256,
        "validated_by": WrittenArchiveCheck.method(encryption),
        "entries": outcome.entries,
        "entries_digest": outcome.entries_digest,
        "expected": dict(outcome.expected),  # each `expect:` pattern of the policy: archived entries it matches
        "verdict": str(result.verdict) if result.verdict is not None else None,
        "verdict_reasons": result.verdict_reasons,
        "at_risk_directories": [c.to_json() for c in consistency.at_risk_directories] if consistency else [],
        "warnings": warnings,
        "containers": [c.to_json() for c in result.containers],
        "downtime_s": round(result.downtime_s, 3),
        "hooks": [run.to_json() for run in result.hooks],
        "attempts": [attempt.to_json() for attempt in result.attempts],
        "snapshot": {
            "method": snapshot.method.value,
            "modified_after": written.modified_after_snapshot,
            "relinked": outcome.relinked,
        }
        if snapshot
        else None,
    }
