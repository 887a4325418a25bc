"""Every service's public events (issue 14 §1): declared, typed, minimum necessary, and compatible with what was
published before. `dsi docs contracts --write` refreshes `shared/contracts.lock.json` after a compatible change."""

from __future__ import annotations

from typing import Any

from dsi_shared.contracts import PublicEvent, compatibility_problems, lock_entries, read_lock
from dsi_shared.service import discover
from eventsourcing.domain import Aggregate

SPECS = discover()
CONTRACTS = [spec.contract for spec in SPECS.values()]
PUBLISHED: dict[str, type[PublicEvent]] = {m.subject: m for c in CONTRACTS for m in c.published}
# PHI never travels; a member's CIN only where a consumer needs it (the reason is in each contract's docstring)
NEVER_ON_THE_BUS = {"family_name", "given_name", "birth_date", "address", "phone", "contact_email", "ssn"}
CIN_FIELDS = {"cin", "frozen_cin", "member_id"}
CIN_SUBJECTS = {"dsi.enrollment.eligibility-opened", "dsi.enrollment.eligibility-changed",
                "dsi.enrollment.eligibility-closed", "dsi.enrollment.attribution-recorded", "dsi.enrollment.alias-added",
                "dsi.submissions.submission-credited"}


def _recorded_events(package: str) -> dict[str, set[str]]:
    """Qualified name → fields of every domain event class a service package records."""
    found: dict[str, set[str]] = {}
    pending: list[type] = [Aggregate]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == package and issubclass(cls, Aggregate):
            for name, member in vars(cls).items():
                if isinstance(member, type) and issubclass(member, Aggregate.Event):
                    fields = {f for klass in member.__mro__ for f in getattr(klass, "__annotations__", {})}
                    found[f"{cls.__qualname__}.{name}"] = fields
    return found


def test_the_published_subjects_are_compatible_with_the_lock_and_the_lock_is_current() -> None:
    current = lock_entries(CONTRACTS)
    assert compatibility_problems(read_lock(), current) == []
    assert read_lock() == current, "a compatible change: run `dsi docs contracts --write` and commit the lock"


def test_every_declared_event_is_made_from_a_recorded_domain_event_that_has_its_fields() -> None:
    for spec in SPECS.values():
        package = spec.application.__module__.split(".")[0]
        recorded = _recorded_events(package)
        for model in spec.contract.published:
            assert model.recorded_as in recorded, f"{model.subject}: {package} records no {model.recorded_as}"
            declared = set(model.model_fields) - {"aggregate_id", "aggregate_version"}
            assert declared <= recorded[model.recorded_as], f"{model.subject}: {declared - recorded[model.recorded_as]}"


def test_no_name_birth_date_or_address_travels_and_cins_only_where_a_consumer_needs_them() -> None:
    for subject, model in PUBLISHED.items():
        fields = set(model.model_fields)
        assert not fields & NEVER_ON_THE_BUS, subject
        assert not fields & CIN_FIELDS or subject in CIN_SUBJECTS, subject


def test_every_consumer_reads_a_declared_subject_through_its_producers_model() -> None:
    readers: list[tuple[str, str, Any]] = [(name, s.subject, s.model) for name, spec in SPECS.items()
                                           for s in spec.subscriptions]
    for consumer, subject, model in readers:
        if subject.startswith("dsi.in."):
            continue  # outside systems' inputs: documented models of the consuming service
        assert PUBLISHED.get(subject) is model, f"{consumer} reads {subject} as {model.__name__}"
