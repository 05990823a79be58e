"""The claim and the scale-back decisions of coord/swarm.py over an in-memory service with Swarm's versioning
(an update carrying a stale version is refused, as Engine 20.10 does; tests/e2e/test_swarm.py runs the real one)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from coord import swarm
from coord.docker_ops import ServiceChanged, ServiceInfo
from coord.journal import Journal


@dataclass
class Services:
    """Just the Swarm part of the engine: one service, versioned."""

    current: ServiceInfo
    updates: list[dict[str, object]] = field(default_factory=list)

    def service(self, identifier: str) -> ServiceInfo | None:
        return self.current if identifier in (self.current.id, self.current.name) else None

    def update_service(
        self, service: ServiceInfo, replicas: int | None = None, labels: dict[str, str] | None = None
    ) -> None:
        if service.version != self.current.version:
            raise ServiceChanged(f"service {service.name} changed since coord read it")
        self.current = replace(
            self.current,
            version=self.current.version + 1,
            replicas=self.current.replicas if replicas is None else replicas,
            labels=self.current.labels if labels is None else dict(labels),
        )
        self.updates.append({"replicas": replicas, "labels": labels})


def a_service(labels: dict[str, str] | None = None, replicas: int | None = 2) -> Services:
    return Services(ServiceInfo("svc1", "db", replicas, 10, labels or {"app": "db"}))


def claim_of(services: Services) -> swarm.Claim | None:
    return swarm.Claim.from_label(services.current.labels.get(swarm.CLAIM_LABEL))


def test_a_claim_is_journaled_written_with_the_other_labels_kept_and_released(tmp_path: Path) -> None:
    services, journal = a_service(), Journal(tmp_path)
    claim, entry = swarm.take_claim(services, journal, "svc1", "node-a", "run1")
    assert claim_of(services) == claim and services.current.labels["app"] == "db"
    assert [e.kind for e in journal.entries()] == ["claim"] and json.loads(entry.identity)["node"] == "node-a"
    assert swarm.release_claim(services, "svc1", claim) is None
    assert services.current.labels == {"app": "db"}


def test_a_live_claim_of_another_run_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    held = swarm.Claim("node-b", "other", 7, time.time() + 60)
    services = a_service({swarm.CLAIM_LABEL: held.to_label()})
    with pytest.raises(swarm.ClaimTaken, match="is claimed by node node-b"):
        swarm.take_claim(services, Journal(tmp_path), "svc1", "node-a", "run1")
    assert services.updates == [] and Journal(tmp_path).entries() == []


def test_an_expired_claim_is_taken_over(tmp_path: Path) -> None:
    expired = swarm.Claim("dead-node", "other", 7, time.time() - 1)
    services = a_service({swarm.CLAIM_LABEL: expired.to_label()})
    claim, _ = swarm.take_claim(services, Journal(tmp_path), "svc1", "node-a", "run1")
    assert claim_of(services) == claim and claim.node == "node-a"


def test_of_two_claimers_that_read_the_same_version_the_second_loses_and_keeps_no_journal_entry(
    tmp_path: Path,
) -> None:
    services = a_service()
    stale = services.current
    winner, _ = swarm.take_claim(services, Journal(tmp_path / "a"), "svc1", "node-a", "run-a")
    reads = iter([stale, services.current])  # the loser read before the winner wrote, then reads the winner's claim
    services.service = lambda identifier: next(reads)
    with pytest.raises(swarm.ClaimTaken, match="claimed at the same moment by node node-a"):
        swarm.take_claim(services, Journal(tmp_path / "b"), "svc1", "node-b", "run-b")
    assert Journal(tmp_path / "b").entries() == []
    assert claim_of(Services(services.current)) == winner


def test_release_never_removes_another_runs_claim() -> None:
    theirs = swarm.Claim("node-b", "other", 7, time.time() + 60)
    services = a_service({swarm.CLAIM_LABEL: theirs.to_label()})
    mine = swarm.Claim("node-a", "run1", 8, time.time() + 60)
    assert swarm.release_claim(services, "svc1", mine) is None
    assert claim_of(services) == theirs and services.updates == []


def test_scale_back_only_a_service_still_at_zero() -> None:
    services = a_service(replicas=0)
    assert swarm.scale_back(services, "svc1", "db", 3) is None
    assert services.current.replicas == 3
    scaled_by_someone = a_service(replicas=5)
    assert swarm.scale_back(scaled_by_someone, "svc1", "db", 3) is None
    assert scaled_by_someone.current.replicas == 5 and scaled_by_someone.updates == []


def test_unreadable_labels_are_no_claim() -> None:
    assert swarm.Claim.from_label("not json") is None
    assert swarm.Claim.from_label('{"node": "a"}') is None
    assert swarm.Claim.from_label(None) is None


def test_recover_scales_back_then_releases_and_keeps_the_claim_while_the_service_cannot_be_scaled_back(
    tmp_path: Path,
) -> None:
    from coord.journal import CLAIM, CLAIMED, SCALED_TO_ZERO, SERVICE
    from coord.recovery import recover

    claim = swarm.Claim("node-a", "run1", 8, time.time() + 60)
    services = a_service({swarm.CLAIM_LABEL: claim.to_label()}, replicas=0)
    journal = Journal(tmp_path)
    journal.record(CLAIM, "svc1", CLAIMED, "db", identity=claim.to_label())
    journal.record(SERVICE, "svc1", SCALED_TO_ZERO, "db", identity="not a count")
    report = recover(journal, services)
    assert len(report.errors) == 2 and "kept while the service is not scaled back" in report.errors[1]
    assert claim_of(services) == claim and len(journal.entries()) == 2

    journal.record(SERVICE, "svc1", SCALED_TO_ZERO, "db", identity="3")
    report = recover(journal, services)
    assert report.errors == [] and journal.entries() == []
    assert services.current.replicas == 3 and claim_of(services) is None
    assert report.restored[0].startswith("scaled service db back to 3")
