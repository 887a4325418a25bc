"""qip-share's response bodies, as the OpenAPI documents them (issue 12 §5). Dates and times are ISO 8601 strings.
Parts whose shape is another document's (a sensitivity policy, a manifest, a reject's columns) stay open objects on
purpose. Views that lists show without some fields are separate models, in the order the views write them."""

from __future__ import annotations

from typing import Any

from dsi_shared.http import Answer
from pydantic import Field


class EntityView(Answer):
    id: str
    kind: str = Field(description="DPH or DMPH")
    name: str
    identifiers: dict[str, str]
    address: str
    endpoint: str
    community_partners: list[dict[str, Any]]
    participating: bool
    participation: list[dict[str, Any]] = Field(description="each participation change: who, when, why")
    recipients: list[dict[str, Any]] = Field(description="who receives a delivery, each with its legal basis")


class ParticipationChanged(EntityView):
    changed: bool


class EntityList(Answer):
    count: int
    entities: list[EntityView]


class PublishedValueSet(Answer):
    url: str
    version: str
    codes: int
    status: str = Field(description="published or unchanged")


class ValueSetUpload(Answer):
    value_sets: list[PublishedValueSet]
    errors: list[dict[str, Any]] = Field(description=(
        "each code left out: where (line or element), its system and code as given (reference data, not PHI), why"))
    errors_not_shown: int = Field(description="codes left out beyond those listed")


class CatalogEntry(Answer):
    url: str
    name: str
    current_version: str
    versions: list[str]


class Catalog(Answer):
    value_sets: list[CatalogEntry]


class ValueSetVersionView(Answer):
    url: str
    name: str
    version: str
    codes: int
    digest: str
    source: str
    published_at: str


class PolicyView(Answer):
    current_version: str | None
    versions: list[str]
    policy: dict[str, Any] | None


class PolicyPublished(Answer):
    version: Any = Field(description="the published document's `version`, as given")
    published: bool


class FeedView(Answer):
    kind: str
    sha256: str
    size: int
    rows: int
    accepted: int
    rejected: int
    rejects_by_reason: dict[str, int]
    rejects: list[dict[str, Any]]
    rejects_listed: int
    ignored_columns: list[str]
    file_problem: str | None
    received_at: str
    received_by: str


class FeedIngested(FeedView):
    already_ingested: bool


class FeedSummary(Answer):
    """A feed in the list: the view without its rejected rows."""

    kind: str
    sha256: str
    size: int
    rows: int
    accepted: int
    rejected: int
    rejects_by_reason: dict[str, int]
    rejects_listed: int
    ignored_columns: list[str]
    file_problem: str | None
    received_at: str
    received_by: str


class FeedList(Answer):
    count: int
    feeds: list[FeedSummary]


class FeedKindView(Answer):
    description: str
    resource: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    codes: dict[str, str]
    key: tuple[str, ...]


class LegalBases(Answer):
    legal_bases: list[dict[str, Any]]


class RequirementStatus(Answer):
    entity: str
    first_delivery: str
    delivered_at: str
    on_time: bool | None
    deliveries: int


class RequirementView(Answer):
    code: str
    title: str
    feed_kinds: list[str]
    value_set_urls: list[str]
    period_start: str
    period_end: str
    due_date: str
    data_window_start: str | None
    data_window_end: str | None
    source: str
    entities: dict[str, RequirementStatus] = Field(description="per entity id: its first delivery for it, on time?")


class RequirementList(Answer):
    requirements: list[RequirementView]


class DataWindow(Answer):
    start: str
    end: str | None


class DeliverySummary(Answer):
    """A delivery in the list: the view without its feeds and recipients."""

    id: str
    status: str = Field(description="complete, or recording while its disclosures are written")
    entity_id: str
    entity: str
    requirement: str
    period_start: str
    period_end: str
    transaction_time: str
    position: int
    due_date: str | None
    on_time: bool | None
    value_sets: dict[str, str]
    policy_version: str
    purpose: str
    legal_basis: str
    files: list[dict[str, Any]]
    manifest: dict[str, Any]
    totals: dict[str, Any]
    members: int
    requested_by: str
    rules_version: str | None
    data_window: DataWindow | None


class DeliveryView(DeliverySummary):
    """A delivery: the summary, and whom it went to and which feeds it read."""

    recipients: list[dict[str, Any]]
    feeds: list[dict[str, str]]


class DeliveryList(Answer):
    deliveries: list[DeliverySummary]
    count: int = Field(description="every delivery matching the filters (this page holds at most `limit`)")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class DeliveryPending(Answer):
    id: str
    status: str = Field(description="in-progress: ask again at Content-Location")


class ManifestCheck(Answer):
    recorded: str
    rebuilt: str


class Reproduction(Answer):
    delivery_id: str
    matches: bool
    files: list[dict[str, str | None]]
    manifest: ManifestCheck
    problems: list[str]


class DisclosureView(Answer):
    delivery_id: str
    date: str
    recipients: list[dict[str, Any]]
    description: str
    purpose: str
    legal_basis: str
    period_start: str
    period_end: str
    categories: list[str]
    value_sets: dict[str, str]
    records: dict[str, int]
    withheld: dict[str, int]
    files: dict[str, str]


class Disclosures(Answer):
    count: int
    disclosures: list[DisclosureView]


def media(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 that is not JSON: its media type, for the OpenAPI."""
    return {200: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}}
