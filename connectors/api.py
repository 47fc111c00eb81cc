"""The command API: POST /v1/transfers, POST /v1/fx/orders, POST
/v1/fx/orders/{order_id}/approval (an OTC order's decision), POST /v1/accounts (open an
account in a currency) and POST /v1/accounts/{account_id}/status (freeze, unfreeze, close),
idempotent, each written with its outbox row in one transaction. Amounts and currencies are
checked against the currency registry: an exponent the registry does not have is 422.

Callers authenticate with an API key (`Authorization: Bearer lsk_...`, connectors/auth.py):
the key names the tenant, the principal and the scopes; 401 without a valid key, 403
without the command's scope or for an account that is not the tenant's. Headers:
`x-environment` (required, must be this process's: live and sandbox never mix),
`x-correlation-id` (generated when absent) and `Idempotency-Key` (required). The idempotency row,
the command and its outbox row commit together, so the client hears 201 only
once the event is durably queued for Kafka:
- same key, same body and caller: the stored response again, with its status code
  (`Idempotent-Replayed: true`);
- same key, different body or another caller: 422 and nothing done;
- a key whose first request is still being processed: 409 at once (retry later);
- no key, or a malformed one: 400.
Keys are kept at least 24 hours. Connections come from a pool. OpenAPI is served at /docs.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Request, Response, Security
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from connectors.accounts import AccountError, open_account, set_status
from connectors.auth import authenticate
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.currencies import CurrencyError, CurrencyRegistry
from topics.errors import EncodeError
from topics.events import new_metadata
from topics.money import money_record
from topics.names import FX_ORDER_APPROVED_V1, FX_ORDER_REQUESTED_V1, PAYMENTS_TRANSFER_REQUESTED_V1
from topics.outbox import enqueue
from topics.settings import Settings

log = logging.getLogger(__name__)
COMMANDS = Counter("ledgerstream_api_commands_total", "Commands by kind and outcome", ["command", "outcome"])
CLAIM_KEY = """
INSERT INTO api_idempotency (tenant_id, key, request_hash, status_code, response)
VALUES (%s, %s, %s, 0, '{}') ON CONFLICT (tenant_id, key) DO NOTHING RETURNING key
"""
KEY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext(%s), hashtext(%s))"
"""Held by the request working on a key until it commits: a second request with the key answers 409
at once instead of waiting (and holding a pooled connection) on the first one's row lock."""
STORED = "SELECT request_hash, status_code, response FROM api_idempotency WHERE tenant_id = %s AND key = %s"
ANSWER = "UPDATE api_idempotency SET status_code = %s, response = %s WHERE tenant_id = %s AND key = %s"
TRANSFER_COMMAND = """
INSERT INTO transfer_commands (transfer_id, account_id, tenant_id, environment, user_id, amount_units,
    currency, exponent, rail, correlation_id, idempotency_key)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
FX_COMMAND = """
INSERT INTO fx_order_commands (order_id, account_id, tenant_id, environment, user_id, sell_units,
    sell_currency, sell_exponent, buy_currency, buy_exponent, order_type, correlation_id, idempotency_key)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
Text = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@/-]+$")]
"""An identifier, ASCII only: the schema's pattern then means the same to every client."""
Currency = Annotated[str, Field(pattern=r"^[A-Z0-9]{3,10}$", description="ISO 4217 code or asset symbol")]


class Money(BaseModel):
    """An exact amount: integer minor (or base) units and the currency's exponent, which must be
    the currency registry's (ISO 4217 for fiat, the asset table for crypto): 422 otherwise."""

    model_config = ConfigDict(extra="forbid")

    units: StrictInt = Field(gt=0, lt=10**78, description="minor units (cents), or base units for crypto")
    currency: Currency
    exponent: StrictInt = Field(ge=0, le=18)


class TravelRule(BaseModel):
    """Who sends and who receives a crypto transfer: the Travel Rule's originator and beneficiary."""

    model_config = ConfigDict(extra="forbid")

    originator_name: str = Field(min_length=1, max_length=140, description="the account holder sending")
    originator_identifier: str | None = Field(
        None,
        min_length=1,
        max_length=280,
        description="postal address, national id, or date and place of birth",
    )
    beneficiary_name: str = Field(min_length=1, max_length=140, description="who receives the funds")
    beneficiary_vasp: str | None = Field(
        None,
        min_length=1,
        max_length=140,
        description="the provider holding the beneficiary's address (name or LEI); none: self-hosted wallet",
    )


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: Text
    amount: Money
    rail: Literal["BOOK", "SEPA", "FASTER_PAYMENTS", "ACH", "CARD", "CRYPTO"]
    beneficiary_reference: str | None = Field(None, max_length=128)
    destination_account_id: Text | None = None
    reference: str | None = Field(None, max_length=140)
    travel_rule: TravelRule | None = Field(
        None, description="required on a CRYPTO transfer, refused on others"
    )

    @model_validator(mode="after")
    def _travel_rule_on_crypto_only(self) -> TransferRequest:
        if self.rail == "CRYPTO" and self.travel_rule is None:
            raise ValueError("a CRYPTO transfer must carry travel_rule: its originator and beneficiary")
        if self.rail != "CRYPTO" and self.travel_rule is not None:
            raise ValueError(f"travel_rule is for CRYPTO transfers, not {self.rail}")
        return self


class FxOrderRequest(BaseModel):
    """Sell an exact amount of one currency for another; OTC orders wait for an approval."""

    model_config = ConfigDict(extra="forbid")

    account_id: Text
    sell: Money
    buy_currency: Currency
    buy_exponent: StrictInt | None = Field(
        None, ge=0, le=18, description="optional; when given it must be the registry's exponent"
    )
    order_type: Literal["MARKET", "OTC"] = "MARKET"


class FxApprovalRequest(BaseModel):
    """An approver's decision on an OTC order; the approver is the key's principal, not its requester."""

    model_config = ConfigDict(extra="forbid")

    account_id: Text
    decision: Literal["APPROVED", "REJECTED"]
    reason: str | None = Field(None, max_length=280)


class AccountRequest(BaseModel):
    """Open an account in a currency; its exponent comes from the currency registry."""

    model_config = ConfigDict(extra="forbid")

    account_id: Text
    currency: Currency
    holder: str = Field(min_length=1, max_length=200)
    kind: Literal[
        "customer", "clearing", "custody", "fee_revenue", "network_fees", "fx_position", "suspense"
    ] = "customer"
    overdraft_limit: StrictInt = Field(0, ge=0, lt=10**78, description="in minor (or base) units")


class AccountStatusRequest(BaseModel):
    """Freeze, unfreeze or close an account (every currency of it, or one)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "frozen", "closed"]
    currency: Currency | None = None
    reason: str | None = Field(None, max_length=280)


class AccountAnswer(BaseModel):
    status: Literal["opened", "already_open", "changed", "unchanged"]
    account_id: str
    correlation_id: str
    currencies: list[str]


class Accepted(BaseModel):
    status: Literal["accepted"]
    correlation_id: str
    event_id: str


class TransferAccepted(Accepted):
    transfer_id: str


class FxOrderAccepted(Accepted):
    order_id: str


class FxApprovalAccepted(Accepted):
    order_id: str


class Problem(BaseModel):
    detail: str


class Invalid(BaseModel):
    """A refused command: a sentence, or the fields that failed validation."""

    detail: str | list[dict[str, Any]]


def request_hash(body: BaseModel, scope: str = "") -> str:
    """What an idempotency key stands for: the command, its target (`scope`) and its body."""
    return hashlib.sha256(f"{type(body).__name__}:{scope}:{body.model_dump_json()}".encode()).hexdigest()


Write = Callable[[psycopg.Connection[Any]], dict[str, Any]]
"""Given the transaction: enqueue the event, write the command row, return the response body."""


@dataclass(frozen=True)
class Command:
    """Who sent a command: the tenant and principal of its API key, and its headers."""

    tenant: str
    environment: str
    key: str
    user: str
    correlation: str


IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=128,
        pattern=r"^[!-~]+$",
        description="8-128 printable ASCII characters; missing or malformed: 400",
    ),
]
BEARER = HTTPBearer(
    auto_error=False, description="an API key, `lsk_<key id>_<secret>` (`ledgerstream keys issue`)"
)
OWNED = "SELECT 1 FROM accounts WHERE tenant_id = %s AND account_id = %s LIMIT 1"
ORDER = "SELECT tenant_id, user_id, account_id FROM fx_order_commands WHERE order_id = %s"


def create_app(settings: Settings, codec: AvroCodec, catalog: Catalog, *, pool_size: int = 8) -> FastAPI:
    """The command API bound to one environment's database and schemas."""
    state: dict[str, ConnectionPool] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        pool = ConnectionPool(
            settings.database_url.get_secret_value(), min_size=1, max_size=pool_size, open=False
        )
        pool.open(wait=True, timeout=30)
        state["pool"] = pool
        try:
            yield
        finally:
            pool.close()

    # the public port answers commands only: /docs, /openapi.json and /metrics are on the admin port
    app = FastAPI(
        title="ledgerstream command API",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(RequestValidationError)
    async def refused(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A missing or malformed Idempotency-Key is 400 (the IETF draft), other validation 422."""
        if any(
            tuple(str(p).lower() for p in e.get("loc", ()))[:2] == ("header", "idempotency-key")
            for e in exc.errors()
        ):
            return JSONResponse(
                {"detail": "Idempotency-Key must be 8 to 128 printable ASCII characters"}, 400
            )
        return await request_validation_exception_handler(request, exc)

    errors: dict[int | str, dict[str, Any]] = {
        400: {"model": Problem},
        401: {"model": Problem},
        403: {"model": Problem},
        409: {"model": Problem},
        422: {"model": Invalid},
    }

    def caller(scope: str) -> Any:
        """The dependency that authenticates a command's API key and requires `scope`: 401 without a
        valid, unrevoked key, 403 without the scope. The tenant is the key's, never a header's."""

        def command(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
            x_environment: Annotated[Literal["live", "sandbox"], Header()],
            idempotency_key: IdempotencyKey,
            x_correlation_id: Annotated[Text | None, Header()] = None,
        ) -> Command:
            if credentials is None:
                COMMANDS.labels(scope, "unauthenticated").inc()
                raise HTTPException(
                    401,
                    "an API key is required: Authorization: Bearer lsk_...",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            with state["pool"].connection() as conn:
                principal = authenticate(conn, credentials.credentials)
            if principal is None:
                COMMANDS.labels(scope, "unauthenticated").inc()
                raise HTTPException(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
            if scope not in principal.scopes:
                COMMANDS.labels(scope, "forbidden").inc()
                raise HTTPException(403, f"the API key lacks the {scope} scope")
            correlation = x_correlation_id or str(uuid.uuid4())
            return Command(principal.tenant, x_environment, idempotency_key, principal.name, correlation)

        return Depends(command)

    def owned(conn: psycopg.Connection[Any], tenant: str, *accounts: str | None) -> None:
        """403 unless every named account is in the tenant's registry (a foreign account and an
        unknown one look the same to the caller)."""
        for account in accounts:
            if account is not None and conn.execute(OWNED, (tenant, account)).fetchone() is None:
                raise HTTPException(403, f"account {account!r} is not an account of this tenant")

    transfers, fx_orders = caller("transfers:write"), caller("fx:write")
    fx_approvals, accounts = caller("fx:approve"), caller("accounts:write")

    def accept(
        command: Command,
        body: BaseModel,
        response: Response,
        write: Write,
        scope: str = "",
        money: tuple[tuple[str, int | None], ...] = (),
    ) -> Any:
        kind = type(body).__name__
        if command.environment != settings.environment:
            COMMANDS.labels(kind, "wrong_environment").inc()
            raise HTTPException(400, f"this API serves {settings.environment}, not {command.environment}")
        # the key is the caller's: the same key from another user is another request (422)
        digest = request_hash(body, f"{command.user}|{scope}")
        tenant, key = command.tenant, command.key
        with state["pool"].connection() as conn, conn.transaction():
            if not conn.execute(KEY_LOCK, (tenant, key)).fetchone()[0]:  # type: ignore[index]
                COMMANDS.labels(kind, "in_flight").inc()
                raise HTTPException(409, "a request with this Idempotency-Key is still being processed")
            registry = CurrencyRegistry.load(conn)
            for currency, exponent in money:
                try:
                    if exponent is None:
                        registry.exponent(currency)
                    else:
                        registry.check(currency, exponent)
                except CurrencyError as e:
                    COMMANDS.labels(kind, "bad_currency").inc()
                    raise HTTPException(422, str(e)) from e
            if conn.execute(CLAIM_KEY, (tenant, key, digest)).fetchone() is None:
                stored_hash, status, stored = conn.execute(STORED, (tenant, key)).fetchone()  # type: ignore[misc]
                if stored_hash != digest:
                    COMMANDS.labels(kind, "key_reused").inc()
                    raise HTTPException(422, "Idempotency-Key was used with a different request body")
                COMMANDS.labels(kind, "replayed").inc()
                return JSONResponse(stored, status_code=status, headers={"Idempotent-Replayed": "true"})
            try:
                answer = write(conn)
            except EncodeError as e:  # the detail is ours, not the caller's: it goes to the log
                log.warning("command %s refused: %s", kind, e)
                raise HTTPException(422, "the command does not fit its event schema") from e
            conn.execute(ANSWER, (201, Jsonb(answer), tenant, key))
        COMMANDS.labels(kind, "accepted").inc()
        response.headers["x-correlation-id"] = command.correlation
        return answer

    def metadata(event_type: str, command: Command) -> dict[str, Any]:
        return new_metadata(
            event_type,
            tenant_id=command.tenant,
            environment=settings.environment,
            source="connectors.api",
            correlation_id=command.correlation,
            idempotency_key=command.key,
            user_id=command.user,
        )

    def accepted(model: type[Accepted], meta: dict[str, Any], **ids: str) -> dict[str, Any]:
        return model(
            status="accepted", correlation_id=meta["correlation_id"], event_id=str(meta["event_id"]), **ids
        ).model_dump()

    @app.post("/v1/transfers", status_code=201, response_model=TransferAccepted, responses=errors)
    def request_transfer(body: TransferRequest, response: Response, command: Command = transfers) -> Any:
        transfer_id = str(uuid.uuid4())  # a key reused after it expired is a new transfer

        def write(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            owned(conn, command.tenant, body.account_id, body.destination_account_id)
            meta = metadata("payments.transfer.requested", command)
            amount = body.amount
            _, money = money_record(amount.units, amount.currency, amount.exponent, "ethereum")
            enqueue(
                conn,
                codec,
                catalog,
                PAYMENTS_TRANSFER_REQUESTED_V1,
                {
                    "metadata": meta,
                    "account_id": body.account_id,
                    "transfer_id": transfer_id,
                    "amount": money,
                    "destination_account_id": body.destination_account_id,
                    "beneficiary_reference": body.beneficiary_reference,
                    "rail": body.rail,
                    "reference": body.reference,
                    "travel_rule": body.travel_rule.model_dump() if body.travel_rule else None,
                },
            )
            conn.execute(
                TRANSFER_COMMAND,
                (
                    transfer_id,
                    body.account_id,
                    command.tenant,
                    settings.environment,
                    command.user,
                    amount.units,
                    amount.currency,
                    amount.exponent,
                    body.rail,
                    command.correlation,
                    command.key,
                ),
            )
            return accepted(TransferAccepted, meta, transfer_id=transfer_id)

        return accept(command, body, response, write, money=((body.amount.currency, body.amount.exponent),))

    @app.post("/v1/fx/orders", status_code=201, response_model=FxOrderAccepted, responses=errors)
    def request_fx_order(body: FxOrderRequest, response: Response, command: Command = fx_orders) -> Any:
        if body.sell.currency == body.buy_currency:
            raise HTTPException(422, "an FX order must buy a different currency than it sells")
        order_id = str(uuid.uuid4())

        def write(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            owned(conn, command.tenant, body.account_id)
            meta = metadata("fx.order.requested", command)
            sell = body.sell
            buy_exponent = CurrencyRegistry.load(conn).exponent(body.buy_currency)
            _, money = money_record(sell.units, sell.currency, sell.exponent, "ethereum")
            enqueue(
                conn,
                codec,
                catalog,
                FX_ORDER_REQUESTED_V1,
                {
                    "metadata": meta,
                    "account_id": body.account_id,
                    "order_id": order_id,
                    "sell": money,
                    "buy_currency": body.buy_currency,
                    "buy_exponent": buy_exponent,
                    "order_type": body.order_type,
                },
            )
            conn.execute(
                FX_COMMAND,
                (
                    order_id,
                    body.account_id,
                    command.tenant,
                    settings.environment,
                    command.user,
                    sell.units,
                    sell.currency,
                    sell.exponent,
                    body.buy_currency,
                    buy_exponent,
                    body.order_type,
                    command.correlation,
                    command.key,
                ),
            )
            return accepted(FxOrderAccepted, meta, order_id=order_id)

        money = ((body.sell.currency, body.sell.exponent), (body.buy_currency, body.buy_exponent))
        return accept(command, body, response, write, money=money)

    @app.post(
        "/v1/fx/orders/{order_id}/approval",
        status_code=201,
        response_model=FxApprovalAccepted,
        responses={404: {"model": Problem}, **errors},
    )
    def decide_fx_order(
        order_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")],
        body: FxApprovalRequest,
        response: Response,
        command: Command = fx_approvals,
    ) -> Any:
        def write(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            order = conn.execute(ORDER, (order_id,)).fetchone()
            if order is None or order[0] != command.tenant:
                raise HTTPException(404, f"this tenant has no FX order {order_id!r}")
            if order[1] == command.user:
                raise HTTPException(
                    403, "four eyes: an order is approved by someone other than its requester"
                )
            if order[2] != body.account_id:
                raise HTTPException(422, f"order {order_id} is for account {order[2]!r}")
            meta = metadata("fx.order.approved", command)
            enqueue(
                conn,
                codec,
                catalog,
                FX_ORDER_APPROVED_V1,
                {
                    "metadata": meta,
                    "account_id": body.account_id,
                    "order_id": order_id,
                    "approved_by": command.user,
                    "decision": body.decision,
                    "reason": body.reason,
                },
            )
            return accepted(FxApprovalAccepted, meta, order_id=order_id)

        return accept(command, body, response, write, scope=order_id)

    @app.post("/v1/accounts", status_code=201, response_model=AccountAnswer, responses=errors)
    def open_account_command(body: AccountRequest, response: Response, command: Command = accounts) -> Any:
        def write(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            opened = open_account(
                conn,
                codec,
                catalog,
                tenant=command.tenant,
                environment=settings.environment,
                account_id=body.account_id,
                currency=body.currency,
                holder=body.holder,
                kind=body.kind,
                overdraft_limit=body.overdraft_limit,
                correlation_id=command.correlation,
                user_id=command.user,
            )
            answer = AccountAnswer(
                status="opened" if opened.created else "already_open",
                account_id=body.account_id,
                correlation_id=command.correlation,
                currencies=[opened.currency],
            )
            return answer.model_dump()

        return accept(command, body, response, write, money=((body.currency, None),))

    @app.post(
        "/v1/accounts/{account_id}/status",
        status_code=201,
        response_model=AccountAnswer,
        responses={404: {"model": Problem}, **errors},
    )
    def account_status_command(
        account_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@/-]+$")],
        body: AccountStatusRequest,
        response: Response,
        command: Command = accounts,
    ) -> Any:
        def write(conn: psycopg.Connection[Any]) -> dict[str, Any]:
            try:
                changes = set_status(
                    conn,
                    codec,
                    catalog,
                    tenant=command.tenant,
                    environment=settings.environment,
                    account_id=account_id,
                    status=body.status,
                    currency=body.currency,
                    reason=body.reason,
                    correlation_id=command.correlation,
                    user_id=command.user,
                )
            except AccountError as e:
                raise HTTPException(404 if "has no account" in str(e) else 409, str(e)) from e
            answer = AccountAnswer(
                status="changed" if changes else "unchanged",
                account_id=account_id,
                correlation_id=command.correlation,
                currencies=[currency for currency, _, _ in changes],
            )
            return answer.model_dump()

        return accept(command, body, response, write, scope=account_id)

    return app
