"""The chain sender: reserved crypto transfers are signed, recorded, then broadcast.

A transfer on the CRYPTO rail whose funds are reserved (BALANCE_RESERVED) is claimed in
`chain_sends`. In the same PostgreSQL transaction its transaction is built and signed (the
account's own wallet on the chain pays, with the next nonce this sender keeps for that
wallet), the signed bytes and their hash are stored, and its SENT_TO_PROVIDER report goes
to the outbox. Only then is it broadcast: a sender that dies before or after broadcasting
broadcasts the same signed bytes again, which the chain takes once, so a transfer is never
sent twice. A transfer the sender cannot build (no wallet for the account on the chain, an
asset not watched there, a beneficiary that is not an address) fails with the reason, and
its hold is released.

The chain listener then moves the transfer on from what it sees on chain: the transaction
in a block is PROVIDER_PROCESSING, and once confirmed, PROVIDER_CONFIRMING and COMPLETED,
whose posting (customer against the chain's custody account) completes the hold. A mined
transaction that reverted fails the transfer (the sender reads its receipt).

`Signer` is the seam: `LocalKeys` holds private keys in memory (the in-process EVM of the
tests and the demo); a production signer (an HSM or a custody provider's API) replaces it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from eth_account import Account
from hexbytes import HexBytes
from psycopg.rows import dict_row
from web3 import Web3
from web3.exceptions import TransactionNotFound

from connectors.chain import ChainSpec, report_status
from connectors.polling import step_until_idle
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.fields import TRANSACTIONS_BENEFICIARY, open_field
from topics.health import LoopProbe
from topics.settings import Settings

log = logging.getLogger(__name__)

ERC20_TRANSFER_GAS = 100_000
NATIVE_GAS = 21_000
READY = """
SELECT t.transaction_id, t.tenant_id, t.account_id, t.amount_units, t.currency, t.exponent,
       t.beneficiary_sealed, t.beneficiary_reference, t.correlation_id, w.address
  FROM transactions t
  LEFT JOIN chain_wallets w ON w.chain = t.chain AND w.tenant_id = t.tenant_id AND w.account_id = t.account_id
 WHERE t.status = 'BALANCE_RESERVED' AND t.rail = 'CRYPTO' AND t.chain = %(chain)s
   AND t.environment = %(environment)s
   AND NOT EXISTS (SELECT 1 FROM chain_sends s WHERE s.transaction_id = t.transaction_id)
 ORDER BY t.created_at LIMIT %(limit)s FOR UPDATE OF t SKIP LOCKED
"""
CLAIM = """
INSERT INTO chain_sends (transaction_id, tenant_id, account_id, chain, from_address, to_address, asset,
                         amount_units, nonce, tx_hash, raw_tx, status)
VALUES (%(transaction_id)s, %(tenant_id)s, %(account_id)s, %(chain)s, %(from_address)s, %(to_address)s,
        %(asset)s, %(amount_units)s, %(nonce)s, %(tx_hash)s, %(raw_tx)s, %(status)s)
"""
SET_STATUS = "UPDATE chain_sends SET status = %s, updated_at = now() WHERE transaction_id = %s"


class Signer(Protocol):
    def sign(self, address: str, transaction: dict[str, Any]) -> tuple[bytes, str]:
        """The signed raw transaction of `address` and its hash (0x-hex)."""


class LocalKeys:
    """Private keys in memory, by lower-case address."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = {address.lower(): key for address, key in keys.items()}

    def sign(self, address: str, transaction: dict[str, Any]) -> tuple[bytes, str]:
        key = self._keys.get(address.lower())
        if key is None:
            raise SendRefused(f"no signing key for wallet {address}")
        signed = Account.sign_transaction(transaction, key)
        return bytes(signed.raw_transaction), Web3.to_hex(signed.hash)


class SendRefused(LedgerstreamError):
    """The transfer cannot be sent as asked: it fails with this reason."""


@dataclass
class SenderStats:
    signed: int = 0
    broadcast: int = 0
    failed: int = 0


class ChainSender:
    """Args:
    settings: PostgreSQL and the environment.
    codec, catalog: for the status reports written to the outbox.
    w3: the chain's node.
    spec: the chain (its name, the native asset).
    signer: signs for the custody wallets.
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        w3: Web3,
        spec: ChainSpec,
        signer: Signer,
    ) -> None:
        self.settings, self.codec, self.catalog = settings, codec, catalog
        self.w3, self.spec, self.signer = w3, spec, signer
        self.chain_id = int(w3.eth.chain_id)
        self.field_keys = settings.field_keys()
        """Open a transfer's sealed beneficiary (`topics.fields`): the current key, and the previous
        ones during a rotation."""
        self.stats = SenderStats()
        self.probe = LoopProbe(f"chain sender {spec.name}")

    def claim(self, conn: psycopg.Connection[Any], limit: int = 50) -> int:
        """Sign reserved transfers: the send row, its signed bytes and SENT_TO_PROVIDER in one transaction."""
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                READY, {"chain": self.spec.name, "environment": self.settings.environment, "limit": limit}
            ).fetchall()
            for row in rows:
                try:
                    to_address, asset, raw, tx_hash, nonce = self._sign(cur, row)
                except SendRefused as e:
                    self._record(cur, row, None, None, None, None, "refused")
                    self._report(conn, row, "FAILED", f"not sent on {self.spec.name}: {e}", "refused")
                    self.stats.failed += 1
                    continue
                self._record(cur, row, to_address, asset, (raw, tx_hash), nonce, "signed")
                self._report(conn, row, "SENT_TO_PROVIDER", f"signed {tx_hash} on {self.spec.name}", "signed")
                self.stats.signed += 1
        return len(rows)

    def _sign(self, cur: psycopg.Cursor[Any], row: dict[str, Any]) -> tuple[str, str, bytes, str, int]:
        wallet = row["address"]
        if wallet is None:
            raise SendRefused(f"account {row['account_id']} has no wallet on {self.spec.name}")
        # sealed, or (a transfer reserved before `db seal`) still the text it was written as
        opened = open_field(self.field_keys, row["beneficiary_sealed"], TRANSACTIONS_BENEFICIARY)
        beneficiary = str(opened or row["beneficiary_reference"] or "")
        if not Web3.is_address(beneficiary):
            raise SendRefused(f"beneficiary {beneficiary!r} is not an address on {self.spec.name}")
        units, asset = int(row["amount_units"]), row["currency"]
        if asset == self.spec.native_asset:
            if int(row["exponent"]) != self.spec.native_decimals:
                raise SendRefused(f"{asset} has {self.spec.native_decimals} decimals, not {row['exponent']}")
            call: dict[str, Any] = {
                "to": Web3.to_checksum_address(beneficiary),
                "value": units,
                "gas": NATIVE_GAS,
            }
        else:
            token = cur.execute(
                "SELECT contract, decimals FROM chain_tokens WHERE chain = %s AND symbol = %s",
                (self.spec.name, asset),
            ).fetchone()
            if token is None:
                raise SendRefused(f"{asset} is not a token watched on {self.spec.name}")
            if int(token["decimals"]) != int(row["exponent"]):
                raise SendRefused(f"{asset} has {token['decimals']} decimals, not {row['exponent']}")
            data = _erc20_transfer(beneficiary, units)
            call = {
                "to": Web3.to_checksum_address(token["contract"]),
                "value": 0,
                "data": data,
                "gas": ERC20_TRANSFER_GAS,
            }
        nonce = self._next_nonce(cur, wallet)
        base = self.w3.eth.get_block("latest").get("baseFeePerGas") or 0
        tip = 1_000_000_000
        transaction = {
            **call,
            "nonce": nonce,
            "chainId": self.chain_id,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": 2 * int(base) + tip,
            "type": 2,
        }
        raw, tx_hash = self.signer.sign(wallet, transaction)
        return beneficiary.lower(), asset, raw, tx_hash, nonce

    def _next_nonce(self, cur: psycopg.Cursor[Any], wallet: str) -> int:
        """The wallet's next nonce: past every transaction this sender signed and every one the chain
        has seen from it (locked per wallet for the claim's transaction)."""
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"chain-nonce:{self.spec.name}:{wallet}",))
        mine = cur.execute(
            "SELECT max(nonce) AS n FROM chain_sends WHERE chain = %s AND from_address = %s",
            (self.spec.name, wallet),
        ).fetchone()
        last = mine["n"] if mine is not None else None
        seen = int(self.w3.eth.get_transaction_count(Web3.to_checksum_address(wallet), "pending"))
        return max(seen, -1 if last is None else int(last) + 1)

    def _record(
        self,
        cur: psycopg.Cursor[Any],
        row: dict[str, Any],
        to_address: str | None,
        asset: str | None,
        signed: tuple[bytes, str] | None,
        nonce: int | None,
        status: str,
    ) -> None:
        raw, tx_hash = signed if signed else (None, None)
        cur.execute(
            CLAIM,
            {
                "transaction_id": row["transaction_id"],
                "tenant_id": row["tenant_id"],
                "account_id": row["account_id"],
                "chain": self.spec.name,
                "from_address": row["address"],
                "to_address": to_address,
                "asset": asset or row["currency"],
                "amount_units": row["amount_units"],
                "nonce": nonce,
                "tx_hash": tx_hash,
                "raw_tx": raw,
                "status": status,
            },
        )

    def _report(
        self, conn: psycopg.Connection[Any], row: dict[str, Any], status: str, reason: str, step: str
    ) -> None:
        report_status(
            conn,
            self.codec,
            self.catalog,
            self.settings,
            tenant=row["tenant_id"],
            account=row["account_id"],
            transaction_id=row["transaction_id"],
            correlation_id=row["correlation_id"],
            status=status,
            reason=reason,
            provider=self.spec.name,
            source=f"chain_send:{row['transaction_id']}",
            step=step,
        )

    def broadcast(self, conn: psycopg.Connection[Any], limit: int = 50) -> int:
        """Broadcast what was signed (again after a crash: the chain takes the same bytes once)."""
        sent = 0
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT transaction_id, tx_hash, raw_tx FROM chain_sends "
                "WHERE chain = %s AND status = 'signed' ORDER BY nonce LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.spec.name, limit),
            ).fetchall()
            for row in rows:
                try:
                    self.w3.eth.send_raw_transaction(HexBytes(bytes(row["raw_tx"])))
                except Exception as e:  # the node's refusal: already known, or already mined
                    if not self._known(row["tx_hash"]):
                        log.warning("broadcast of %s failed, retried: %s", row["tx_hash"], e)
                        continue
                cur.execute(SET_STATUS, ("broadcast", row["transaction_id"]))
                sent += 1
        self.stats.broadcast += sent
        return sent

    def _known(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            return True
        except TransactionNotFound:
            return False

    def reverted(self, conn: psycopg.Connection[Any], limit: int = 50) -> int:
        """Fail the transfers whose transaction was mined but reverted (it moved nothing)."""
        failed = 0
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "SELECT s.transaction_id, s.tenant_id, s.account_id, s.tx_hash, t.correlation_id "
                "FROM chain_sends s JOIN transactions t USING (transaction_id) "
                "WHERE s.chain = %s AND s.status IN ('broadcast', 'mined') "
                "ORDER BY s.nonce LIMIT %s FOR UPDATE OF s SKIP LOCKED",
                (self.spec.name, limit),
            ).fetchall()
            for row in rows:
                try:
                    receipt = self.w3.eth.get_transaction_receipt(row["tx_hash"])
                except TransactionNotFound:
                    continue
                if int(receipt["status"]) == 1:
                    continue
                cur.execute(SET_STATUS, ("reverted", row["transaction_id"]))
                self._report(
                    conn,
                    {**row, "address": None},
                    "FAILED",
                    f"{row['tx_hash']} reverted on {self.spec.name}",
                    "reverted",
                )
                failed += 1
        self.stats.failed += failed
        return failed

    def step(self, conn: psycopg.Connection[Any]) -> int:
        return self.claim(conn) + self.broadcast(conn) + self.reverted(conn)

    def run(
        self, *, stop: threading.Event | None = None, poll: float = 0.5, idle_exit: float | None = None
    ) -> SenderStats:
        """Sign, broadcast and watch for reverts until stopped (or idle for `idle_exit` seconds)."""
        step_until_idle(self.settings, self.step, stop=stop, poll=poll, idle_exit=idle_exit, probe=self.probe)
        return self.stats


def _erc20_transfer(to: str, units: int) -> str:
    selector = Web3.keccak(text="transfer(address,uint256)")[:4].hex().removeprefix("0x")
    return "0x" + selector + to.lower().removeprefix("0x").rjust(64, "0") + f"{units:064x}"
