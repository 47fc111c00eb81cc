"""Kafka ACLs derived from the catalog, and the SCRAM users of the local stack.

Every principal of the catalog (each agent, sink, the outbox relay, upstream
publishers, analysts) may read only the topics the catalog names as its inputs,
write only its outputs and its dead-letter topic, and use only the consumer groups
whose ids start with `ledgerstream.<name>`. Nothing else is granted: the broker
runs with `allow.everyone.if.no.acl.found=false`, so a principal the catalog does
not name can do nothing, and only the operator (a super user) administers.

`apply_acls` makes the broker's ACLs for the catalog's principals exactly the
derived set: missing bindings are created, bindings no longer derived (a consumer
that lost an input) are deleted. Bindings of principals the catalog does not name
are left alone and reported.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from topics.catalog import Catalog
from topics.errors import LedgerstreamError
from topics.settings import OPERATOR, Settings

SCRAM_ITERATIONS = 8192


class AclError(LedgerstreamError):
    """The broker refused or could not apply ACLs or credentials."""


@dataclass(frozen=True)
class AclReport:
    """What `apply_acls` did; `enforced` is False when the broker has no authorizer."""

    enforced: bool
    created: list[AclBinding]
    deleted: list[AclBinding]
    foreign: list[str]
    total: int


def user(name: str) -> str:
    return f"User:{name}"


LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED


def _allow(
    rtype: ResourceType, name: str, pattern: ResourcePatternType, who: str, op: AclOperation
) -> AclBinding:
    return AclBinding(rtype, name, pattern, user(who), "*", op, AclPermissionType.ALLOW)


def derived_acls(catalog: Catalog) -> set[AclBinding]:
    """The ACL bindings the catalog implies (READ implies DESCRIBE, and so does WRITE)."""
    bindings: set[AclBinding] = set()
    for p in catalog.principals():
        for topic in p.reads:
            bindings.add(_allow(ResourceType.TOPIC, topic, LITERAL, p.name, AclOperation.READ))
        for topic in p.writes:
            bindings.add(_allow(ResourceType.TOPIC, topic, LITERAL, p.name, AclOperation.WRITE))
        if p.group_prefix is not None:
            bindings.add(_allow(ResourceType.GROUP, p.group_prefix, PREFIXED, p.name, AclOperation.READ))
    return bindings


def _key(b: AclBinding) -> tuple[object, ...]:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def _key_text(b: AclBinding) -> tuple[str, ...]:
    return tuple(str(part) for part in _key(b))


def apply_acls(settings: Settings, catalog: Catalog, *, timeout: float = 30.0) -> AclReport:
    """Make the broker's ACLs of the catalog's principals the derived set."""
    admin = AdminClient(settings.kafka_config(**{"socket.timeout.ms": 10000}))
    # None matches anything in a filter (the stubs say str)
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        present = admin.describe_acls(everything, request_timeout=timeout).result(timeout)
    except KafkaException as e:
        error = e.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.SECURITY_DISABLED:
            return AclReport(False, [], [], [], 0)
        raise AclError(f"cannot read the broker's ACLs: {e}") from e
    wanted = {_key(b): b for b in derived_acls(catalog)}
    ours = {user(p.name) for p in catalog.principals()}
    have = {_key(b): b for b in present if b.principal in ours}
    foreign = sorted({b.principal for b in present if b.principal not in ours})
    missing = [b for k, b in wanted.items() if k not in have]
    stale = [b for k, b in have.items() if k not in wanted]
    try:
        if missing:
            for future in admin.create_acls(missing, request_timeout=timeout).values():
                future.result(timeout)
        if stale:
            filters = [
                AclBindingFilter(
                    b.restype,
                    b.name,
                    b.resource_pattern_type,
                    b.principal,
                    b.host,
                    b.operation,
                    b.permission_type,
                )
                for b in stale
            ]
            for future in admin.delete_acls(filters, request_timeout=timeout).values():
                future.result(timeout)
    except KafkaException as e:
        raise AclError(f"the broker refused an ACL change: {e}") from e
    return AclReport(True, sorted(missing, key=_key_text), sorted(stale, key=_key_text), foreign, len(wanted))


def ensure_credentials(path: Path, names: list[str]) -> dict[str, str]:
    """The credentials file with a random password for every name it lacks (mode 0600)."""
    try:
        stored: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        stored = {}
    added = {name: secrets.token_urlsafe(24) for name in names if name not in stored}
    if added:
        stored |= added
        write_private(path, json.dumps(stored, indent=2, sort_keys=True))
    return stored


def write_private(path: Path, text: str) -> None:
    """Write a secret file whole (mode 0600, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path.with_suffix(".tmp"), path)


def upsert_scram_users(settings: Settings, credentials: dict[str, str], *, timeout: float = 30.0) -> int:
    """Give every principal of `credentials` (but the operator) its SCRAM-SHA-512 secret."""
    admin = AdminClient(settings.kafka_config(**{"socket.timeout.ms": 10000}))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(name, info, password.encode())
        for name, password in sorted(credentials.items())
        if name != OPERATOR
    ]
    try:
        for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
            future.result(timeout)
    except KafkaException as e:
        raise AclError(f"the broker refused a SCRAM credential: {e}") from e
    return len(upserts)
