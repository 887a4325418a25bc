"""Least privilege on NATS (issue 12 §2): what each service's NATS user may publish and subscribe to, derived from
what it publishes and which streams it reads. Written into `infra/nats/nats.conf` (compose, production) and the
embedded server's config; tests prove the grants suffice for a real flow and that anything else is denied.

JetStream's API is request/reply on `$JS.API.*` subjects, so permission to *publish* a request is permission to do
it: a service may look streams up, create and read only its own durable consumers on the streams it reads, read its
own stream's messages (the relay resumes from its last one), and read its own checkpoints and dead letters; never create, update,
purge or delete a stream, delete a message or touch another service's consumer. Streams are declared by the
`admin` user at deploy time (`dsi ops streams`)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from dsi_shared.bus import segment, service_stream
from dsi_shared.deadletters import LETTERS, REPLAYED, REPLAYED_BEFORE
from dsi_shared.deadletters import STREAM as DEAD_LETTERS

API = "$JS.API"
CHECKPOINTS = "DSI_CHECKPOINTS"


def durable_name(service: str, stream: str) -> str:
    """The one durable pull consumer a service keeps on a stream it reads (contract stream name)."""
    return f"{service}--{stream.lower().replace('_', '-')}"


def service_publish(service: str, streams_read: Iterable[str]) -> list[str]:
    own = segment(service)
    letters, replayed = LETTERS.format(service=service), REPLAYED.format(service=service)
    grants = [f"dsi.{own}.>", letters, replayed, f"dsi.checkpoint.{own}",
              f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.STREAM.INFO.*", f"{API}.STREAM.MSG.GET.{service_stream(service)}",
              # readers (`bus.read_all`: named, ephemeral, filtered consumers) of its own hash-chain checkpoints, its
              # own dead letters (an in-process replay) and the records of their replays; of nothing else there
              *(f"{API}.CONSUMER.CREATE.{stream}.*.{subject}" for stream, subject in (
                  (CHECKPOINTS, f"dsi.checkpoint.{own}"), (DEAD_LETTERS, letters), (DEAD_LETTERS, replayed),
                  (DEAD_LETTERS, REPLAYED_BEFORE)))]
    for stream in sorted(set(streams_read)):
        durable = durable_name(service, stream)
        grants += [f"{API}.CONSUMER.CREATE.{stream}.{durable}", f"{API}.CONSUMER.CREATE.{stream}.{durable}.>",
                   f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}", f"{API}.CONSUMER.INFO.{stream}.{durable}",
                   f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}", f"$JS.ACK.{stream}.{durable}.>"]
    return [*grants, "_INBOX.>"]


SERVICE_SUBSCRIBE = ["_INBOX.>"]  # pulled messages, API replies and ordered-consumer deliveries all come to inboxes

# Outside systems publish their inputs only (and need the JetStream publish acknowledgement on an inbox).
HIE_PUBLISH = ["dsi.in.submission-received", "_INBOX.>"]
CONTRACTS_PUBLISH = ["dsi.in.agreement-signed", "dsi.in.agreement-accepted", "_INBOX.>"]

OPS_PUBLISH = ["dsi.>", f"{API}.INFO", f"{API}.STREAM.NAMES", f"{API}.STREAM.LIST", f"{API}.STREAM.INFO.*",
               f"{API}.STREAM.MSG.GET.*", f"{API}.CONSUMER.CREATE.*", f"{API}.CONSUMER.CREATE.*.>",
               f"{API}.CONSUMER.DELETE.*.*", f"{API}.CONSUMER.INFO.*.*", f"{API}.CONSUMER.LIST.*",
               f"{API}.CONSUMER.MSG.NEXT.*.*", "$JS.ACK.>", "_INBOX.>"]
OUTSIDE_USERS = ("hie", "contracts", "ops", "admin")


def grants(services: dict[str, Iterable[str]]) -> dict[str, tuple[list[str], list[str]] | None]:
    """Every NATS user → (publish, subscribe) allow lists; None = unrestricted (admin). `services` maps each
    service to the contract streams it reads."""
    users: dict[str, tuple[list[str], list[str]] | None] = {
        name: (service_publish(name, streams), SERVICE_SUBSCRIBE) for name, streams in services.items()}
    users["hie"] = (HIE_PUBLISH, SERVICE_SUBSCRIBE)
    users["contracts"] = (CONTRACTS_PUBLISH, SERVICE_SUBSCRIBE)
    users["ops"] = (OPS_PUBLISH, SERVICE_SUBSCRIBE)
    users["admin"] = None
    return users


def accounts_config(users: dict[str, tuple[list[str], list[str]] | None], password: dict[str, str],
                    prefix: str = "") -> str:
    """The `accounts` block of a nats-server config with these users and passwords (`$ENV_VAR` references or
    literal secrets). With a bus `prefix`, subjects and stream names are the prefixed ones the services use."""
    lines = ["accounts {", "  DSI {", "    jetstream: enabled", "    users = ["]
    for user, allowed in users.items():
        secret = password[user] if password[user].startswith("$") else json.dumps(password[user])
        if allowed is None:
            lines.append(f"      {{ user: {json.dumps(user)}, password: {secret} }}")
            continue
        publish, subscribe = ([_prefixed(g, prefix) for g in allowed[0]], [_prefixed(g, prefix) for g in allowed[1]])
        lines.append(f"      {{ user: {json.dumps(user)}, password: {secret}, permissions: {{ publish: {{ allow: "
                     f"{json.dumps(publish)} }}, subscribe: {{ allow: {json.dumps(subscribe)} }} }} }}")
    return "\n".join([*lines, "    ]", "  }", "}", ""])


def _prefixed(grant: str, prefix: str) -> str:
    """`dsi.x` → `<prefix>.dsi.x`; a stream name in an API subject `DSI_X` → `<prefix>_DSI_X` (bus.Naming)."""
    if not prefix:
        return grant
    if grant.startswith("dsi."):
        return f"{prefix}.{grant}"
    # an API subject: its stream name, and the subject a consumer it creates is filtered to
    return grant.replace(".DSI_", f".{prefix}_DSI_").replace(".dsi.", f".{prefix}.dsi.")
