"""Sumsub: `X-Payload-Digest` is an HMAC of the raw body, hex, with the algorithm named in
`X-Payload-Digest-Alg` (HMAC_SHA256_HEX when absent; HMAC_SHA512_HEX also accepted,
HMAC_SHA1_HEX refused). Reviews are linked by the applicant's externalUserId.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import SecretStr

from connectors.webhooks.common import (
    BadPayload,
    BadSignature,
    Canonical,
    Delivery,
    Link,
    MissingSignature,
    Notice,
    Unprocessable,
    document,
    section,
    text,
)
from topics.names import COMPLIANCE_KYC_VERIFIED_V1

TOPIC = COMPLIANCE_KYC_VERIFIED_V1
ALGORITHMS = {"HMAC_SHA256_HEX": hashlib.sha256, "HMAC_SHA512_HEX": hashlib.sha512}


class Sumsub:
    name = "sumsub"

    def __init__(self, secret: SecretStr) -> None:
        self._secret = secret.get_secret_value().encode()

    def verify(self, delivery: Delivery) -> None:
        given = delivery.headers.get("x-payload-digest")
        if not given:
            raise MissingSignature("X-Payload-Digest header is missing")
        algorithm = delivery.headers.get("x-payload-digest-alg", "HMAC_SHA256_HEX")
        digest = ALGORITHMS.get(algorithm)
        if digest is None:
            raise BadSignature(f"digest algorithm {algorithm!r} is not accepted")
        expected = hmac.new(self._secret, delivery.body, digest).hexdigest()
        if not hmac.compare_digest(expected, given.lower()):
            raise BadSignature("X-Payload-Digest does not match the body")

    def read(self, payload: Any, environment: str, delivery: Delivery) -> Notice:
        body = document(payload)
        kind = text(body, "type")
        applicant = text(body, "applicantId")
        sandbox = body.get("sandboxMode")
        if sandbox is not None and sandbox is not (environment == "sandbox"):
            raise BadPayload(f"a sandboxMode={sandbox} review sent to the {environment} endpoint")
        event_id = text(body, "correlationId")
        if kind != "applicantReviewed":
            return Notice(event_id, kind, status="ignored", note=f"{kind} is not a finished review")
        user = text(body, "externalUserId")
        result = section(body, "reviewResult")

        def build(link: Link) -> list[Canonical]:
            account_id = link.account_id
            answer, reject = result.get("reviewAnswer"), result.get("reviewRejectType")
            if answer == "GREEN":
                outcome = "APPROVED"
            elif answer == "RED":
                outcome = "RESUBMIT" if reject == "RETRY" else "REJECTED"
            else:
                raise Unprocessable(f"review answer {answer!r} is neither GREEN nor RED")
            record = {
                "account_id": account_id,
                "applicant_id": applicant,
                "review_result": outcome,
                "risk_level": None,
                "provider": "sumsub",
            }
            return [Canonical(TOPIC, record)]

        return Notice(event_id, kind, user, build)
