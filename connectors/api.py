"""The command API: POST /v1/transfers, idempotent, written with its outbox row in one transaction.

Headers: `x-tenant-id` (required), `x-environment` (required, must be this
process's: live and sandbox never mix), `x-user-id`, `x-correlation-id`
(generated when absent) and `Idempotency-Key` (required). The idempotency row,
the command and its outbox row commit together, so the client hears 201 only
once the event is durably queued for Kafka:
- same key, same body: the stored response again (`Idempotent-Replayed: true`);
- same key, different body: 422 and nothing done;
- concurrent requests with one key: the database's unique key makes one the
  writer; the others wait for its commit and answer as a replay.
Keys are kept at least 24 hours. OpenAPI is served at /docs.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any, Literal

import psycopg
from fastapi import FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from connectors.outbox import enqueue
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.errors import EncodeError
from topics.events import LEDGERSTREAM_NAMESPACE, new_metadata
from topics.money import money_record
from topics.settings import Settings

TOPIC = "payments.transfer.requested.v1"
CLAIM_KEY = """
INSERT INTO api_idempotency (tenant_id, key, request_hash, status_code, response)
VALUES (%s, %s, %s, 0, '{}') ON CONFLICT (tenant_id, key) DO NOTHING RETURNING key
"""
STORED = "SELECT request_hash, status_code, response FROM api_idempotency WHERE tenant_id = %s AND key = %s"
ANSWER = "UPDATE api_idempotency SET status_code = %s, response = %s WHERE tenant_id = %s AND key = %s"
COMMAND = """
INSERT INTO transfer_commands (transfer_id, account_id, tenant_id, environment, user_id, amount_units,
    currency, exponent, rail, correlation_id, idempotency_key)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
Text = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\w.:@/-]+$")]


class Money(BaseModel):
    """An exact amount: integer minor (or base) units and the currency's exponent."""

    model_config = ConfigDict(extra="forbid")

    units: StrictInt = Field(gt=0, lt=10**78, description="minor units (cents), or base units for crypto")
    currency: str = Field(pattern=r"^[A-Z0-9]{3,10}$", description="ISO 4217 code or asset symbol")
    exponent: StrictInt = Field(ge=0, le=18)


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: Text
    amount: Money
    rail: Literal["BOOK", "SEPA", "FASTER_PAYMENTS", "ACH", "CARD", "CRYPTO"]
    beneficiary_reference: str | None = Field(None, max_length=128)
    destination_account_id: Text | None = None
    reference: str | None = Field(None, max_length=140)


class TransferAccepted(BaseModel):
    transfer_id: str
    status: Literal["accepted"]
    correlation_id: str
    event_id: str


class Problem(BaseModel):
    detail: str


def request_hash(body: TransferRequest) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def create_app(settings: Settings, codec: AvroCodec, catalog: Catalog) -> FastAPI:
    """The command API bound to one environment's database and schemas."""
    app = FastAPI(title="ledgerstream command API", version="1")
    url = settings.database_url.get_secret_value()

    @app.post(
        "/v1/transfers",
        status_code=201,
        response_model=TransferAccepted,
        responses={200: {"model": TransferAccepted}, 400: {"model": Problem}, 422: {"model": Problem}},
    )
    def request_transfer(
        body: TransferRequest,
        response: Response,
        x_tenant_id: Annotated[Text, Header()],
        x_environment: Annotated[Literal["live", "sandbox"], Header()],
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=8, max_length=128)],
        x_user_id: Annotated[Text | None, Header()] = None,
        x_correlation_id: Annotated[Text | None, Header()] = None,
    ) -> Any:
        if x_environment != settings.environment:
            raise HTTPException(400, f"this API serves {settings.environment}, not {x_environment}")
        digest = request_hash(body)
        correlation = x_correlation_id or str(uuid.uuid4())
        transfer_id = str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"transfer:{x_tenant_id}:{idempotency_key}"))
        with psycopg.connect(url) as conn, conn.transaction():
            if conn.execute(CLAIM_KEY, (x_tenant_id, idempotency_key, digest)).fetchone() is None:
                stored_hash, status, stored = conn.execute(STORED, (x_tenant_id, idempotency_key)).fetchone()  # type: ignore[misc]
                if stored_hash != digest:
                    raise HTTPException(422, "Idempotency-Key was used with a different request body")
                return JSONResponse(stored, status_code=200 if status == 201 else status,
                                    headers={"Idempotent-Replayed": "true"})  # fmt: skip
            metadata = new_metadata(
                "payments.transfer.requested", tenant_id=x_tenant_id, environment=settings.environment,
                source="connectors.api", correlation_id=correlation, idempotency_key=idempotency_key,
                user_id=x_user_id,
            )  # fmt: skip
            amount = body.amount
            _, money = money_record(amount.units, amount.currency, amount.exponent, "ethereum")
            record = {
                "metadata": metadata, "account_id": body.account_id, "transfer_id": transfer_id,
                "amount": money, "destination_account_id": body.destination_account_id,
                "beneficiary_reference": body.beneficiary_reference, "rail": body.rail,
                "reference": body.reference,
            }  # fmt: skip
            try:
                enqueue(conn, codec, catalog, TOPIC, record)
            except EncodeError as e:
                raise HTTPException(422, f"the transfer does not fit its event schema: {e}") from e
            conn.execute(COMMAND, (transfer_id, body.account_id, x_tenant_id, settings.environment, x_user_id,
                                   amount.units, amount.currency, amount.exponent, body.rail, correlation,
                                   idempotency_key))  # fmt: skip
            answer = TransferAccepted(transfer_id=transfer_id, status="accepted", correlation_id=correlation,
                                      event_id=str(metadata["event_id"]))  # fmt: skip
            conn.execute(ANSWER, (201, Jsonb(answer.model_dump()), x_tenant_id, idempotency_key))
        response.headers["x-correlation-id"] = correlation
        return answer

    return app
