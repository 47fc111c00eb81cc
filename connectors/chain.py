"""The EVM chain listener: transfers touching watched wallets, detected, confirmed or reorged.

Each step reads the next block over JSON-RPC (web3.py): native transfers from its
transactions (successful ones, with value) and ERC-20 `Transfer` logs of the
watched tokens, each touching a watched wallet. A transfer is `detected` in the
block that holds it and `confirmed` once that block has N confirmations (the
chain's setting: Ethereum 12, Polygon 128). The transfer rows, their events (as
outbox rows) and the checkpoint commit in one PostgreSQL transaction per block, so
a restart resumes from the checkpoint and repeats nothing.

Reorganisations: the hashes of recent blocks are kept. When the next block's
parent, or the block at the checkpoint, no longer matches, the listener walks
back to the last block both chains share, emits `reorged` for every transfer
still only detected above it, and scans again from there; a transfer that is in
the new chain too is detected again in its new block. A confirmed transfer is
never reported twice (a unique index refuses a second confirmation); a reorg
deeper than the confirmations is logged as an error and left for operators.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from eth_typing import HexStr
from prometheus_client import Counter, Gauge
from psycopg.rows import dict_row
from web3 import Web3

from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.events import LEDGERSTREAM_NAMESPACE, derived_event_id, new_metadata
from topics.health import LoopProbe
from topics.names import PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
from topics.outbox import enqueue
from topics.settings import Settings

log = logging.getLogger(__name__)

TRANSFER_TOPIC = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
EMITTED = Counter("ledgerstream_chain_events_total", "Chain transfer events emitted", ["chain", "kind"])
CHECKPOINT = Gauge(
    "ledgerstream_chain_checkpoint_block", "Last block the chain listener processed", ["chain"]
)
DETECTED, CONFIRMED, REORGED = (
    f"crypto.wallet.transfer.{k}.v1" for k in ("detected", "confirmed", "reorged")
)
REPORTED = PAYMENTS_TRANSACTION_STATUS_REPORTED_V1
UNMATCHED = Counter(
    "ledgerstream_chain_unmatched_outbound_total",
    "Confirmed transfers out of a watched wallet that match no transfer the chain sender sent",
    ["chain"],
)
SEND_MINED = """
UPDATE chain_sends s SET status = 'mined', updated_at = now() FROM transactions t
 WHERE s.chain = %s AND s.tx_hash = %s AND s.status IN ('signed', 'broadcast')
   AND t.transaction_id = s.transaction_id
RETURNING s.transaction_id, s.tenant_id, s.account_id, t.correlation_id
"""
SEND_CONFIRMED = """
UPDATE chain_sends s SET status = 'confirmed', updated_at = now() FROM transactions t
 WHERE s.chain = %s AND s.tx_hash = %s AND s.status IN ('signed', 'broadcast', 'mined')
   AND t.transaction_id = s.transaction_id
RETURNING s.transaction_id, s.tenant_id, s.account_id, t.correlation_id
"""


@dataclass(frozen=True)
class ChainSpec:
    name: str
    confirmations: int
    native_asset: str
    native_decimals: int = 18
    chain_id: int | None = None
    """The node must report this chain id (a testnet node must not feed mainnet deposits)."""


CHAINS = {
    "ethereum": ChainSpec("ethereum", 12, "ETH", chain_id=1),
    "polygon": ChainSpec("polygon", 128, "POL", chain_id=137),
    "arbitrum": ChainSpec("arbitrum", 20, "ETH", chain_id=42161),
    "optimism": ChainSpec("optimism", 20, "ETH", chain_id=10),
}


class WrongChain(LedgerstreamError, ValueError):
    """The node serves another chain than the one named."""


class UnregisteredToken(LedgerstreamError, ValueError):
    """A watched token that the currency registry does not have, or has with other decimals."""


class DeepReorg(LedgerstreamError, RuntimeError):
    """The chain changed below every block hash kept: an operator must look."""


def _hex(value: Any) -> str:
    return Web3.to_hex(value).lower()


def _wei(value: Any) -> Decimal | None:
    return None if value is None else Decimal(int(value))


def _chain_order(transfer: dict[str, Any]) -> tuple[int, str, int]:
    return int(transfer["block_number"]), transfer["tx_hash"], int(transfer["log_index"])


def _bears_gas(hit: dict[str, Any], receipt: Any, borne: set[str]) -> bool:
    """Whether this side of a transfer carries its transaction's gas figures.

    An INBOUND side always does (what the sender paid, for the record). An OUTBOUND side does only
    when our wallet sent the transaction, so it paid the gas, and only the first such transfer of
    the transaction (a native value before its logs, logs in their order): a transaction that moves
    several amounts from our wallet (a batch, a token and ether together) pays its gas once, and it
    is charged and posted once. A transfer out of our wallet in someone else's transaction (a
    spender's `transferFrom`) carries none: we paid no gas for it."""
    if hit["direction"] != "OUTBOUND":
        return True
    payer = str(receipt.get("from") or "").lower()
    if hit["from_address"] != payer or hit["tx_hash"] in borne:
        return False
    borne.add(hit["tx_hash"])
    return True


def _address(topic: Any) -> str:
    return "0x" + _hex(topic)[-40:]


FIELDS = (
    "chain",
    "tx_hash",
    "log_index",
    "account_id",
    "block_hash",
    "block_number",
    "tenant_id",
    "chain_id",
    "direction",
    "from_address",
    "to_address",
    "amount_units",
    "asset",
    "decimals",
    "token_contract",
    "gas_used",
    "base_fee_per_gas",
    "priority_fee_per_gas",
)
COLUMNS = ", ".join(FIELDS)
INSERT_TRANSFER = (
    f"INSERT INTO chain_transfers ({COLUMNS}, status)"
    f" VALUES ({', '.join(f'%({f})s' for f in FIELDS)}, 'detected') ON CONFLICT DO NOTHING RETURNING tx_hash"
)
Watched = tuple[dict[str, tuple[str, str]], dict[str, tuple[str, int]]]
"""Wallets (address: tenant, account) and tokens (contract: symbol, decimals)."""


class ChainListener:
    """Args:
    settings: PostgreSQL (state and outbox) and the environment events are stamped with.
    w3: a connected Web3 (an HTTP node, or eth-tester's in-process EVM in tests and the demo).
    spec: the chain's name, confirmations and native asset.
    start_block: where to begin when there is no checkpoint (default: the current head).
    keep_blocks: how many recent block hashes to keep for reorg detection.
    """

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        w3: Web3,
        spec: ChainSpec,
        *,
        start_block: int | None = None,
        keep_blocks: int | None = None,
    ) -> None:
        self.settings, self.codec, self.catalog, self.w3, self.spec = settings, codec, catalog, w3, spec
        self.start_block = start_block
        self.keep_blocks = keep_blocks or spec.confirmations + 64
        self.chain_id = int(w3.eth.chain_id)
        if spec.chain_id is not None and self.chain_id != spec.chain_id:
            raise WrongChain(f"the node serves chain id {self.chain_id}, not {spec.name} ({spec.chain_id})")
        self.emitted = {"detected": 0, "confirmed": 0, "reorged": 0}
        self._watched: Watched | None = None
        self.probe = LoopProbe(f"chain listener {spec.name}")

    # -- one step ---------------------------------------------------------------------------
    def step(self, conn: psycopg.Connection[Any]) -> bool:
        """Process the next block (or a reorg); False when there was nothing new."""
        with conn.transaction():
            tip = conn.execute(
                "SELECT block_number, block_hash FROM chain_checkpoints WHERE chain = %s FOR UPDATE",
                (self.spec.name,),
            ).fetchone()
            head = int(self.w3.eth.block_number)
            if tip is None:
                number = self.start_block if self.start_block is not None else head
                if number > head:
                    return False
                self._scan(conn, self.w3.eth.get_block(number, full_transactions=True))
                return True
            number, known = int(tip[0]), tip[1]
            if number + 1 > head:
                if head >= number and _hex(self.w3.eth.get_block(number)["hash"]) != known:
                    self._rewind(conn, number)
                    return True
                return False
            block = self.w3.eth.get_block(number + 1, full_transactions=True)
            if _hex(block["parentHash"]) != known:
                self._rewind(conn, number)
                return True
            self._scan(conn, block)
            return True

    def _scan(self, conn: psycopg.Connection[Any], block: Any) -> None:
        number, block_hash = int(block["number"]), _hex(block["hash"])
        wallets, tokens = self._watched or self.watched(conn)
        hits: list[dict[str, Any]] = []
        for tx in block["transactions"]:
            sender, receiver = str(tx["from"]).lower(), str(tx.get("to") or "").lower()
            if int(tx["value"]) > 0 and receiver and (sender in wallets or receiver in wallets):
                hits += self._sides(
                    _hex(tx["hash"]),
                    -1,
                    sender,
                    receiver,
                    int(tx["value"]),
                    self.spec.native_asset,
                    self.spec.native_decimals,
                    None,
                    wallets,
                )
        if tokens:
            logs = self.w3.eth.get_logs(
                {
                    "fromBlock": number,
                    "toBlock": number,
                    "topics": [TRANSFER_TOPIC],
                    "address": [Web3.to_checksum_address(c) for c in tokens],
                }
            )
            for entry in logs:
                if _hex(entry["blockHash"]) != block_hash:
                    raise RuntimeError(f"block {number} changed while it was read; retrying")
                contract = str(entry["address"]).lower()
                if contract not in tokens or len(entry["topics"]) != 3:
                    continue  # not a watched token, or an ERC-721 Transfer (tokenId indexed)
                sender, receiver = _address(entry["topics"][1]), _address(entry["topics"][2])
                value = int.from_bytes(bytes(entry["data"]), "big")
                if value > 0 and (sender in wallets or receiver in wallets):
                    symbol, decimals = tokens[contract]
                    hits += self._sides(
                        _hex(entry["transactionHash"]),
                        int(entry["logIndex"]),
                        sender,
                        receiver,
                        value,
                        symbol,
                        decimals,
                        contract,
                        wallets,
                    )
        base_fee = block.get("baseFeePerGas")
        receipts: dict[str, Any] = {}
        gas_borne: set[str] = set()
        """Transactions whose gas one OUTBOUND transfer already carries."""
        for hit in hits:
            tx_hash = hit["tx_hash"]
            receipt = receipts.get(tx_hash) or self.w3.eth.get_transaction_receipt(HexStr(tx_hash))
            receipts[tx_hash] = receipt
            if int(receipt["status"]) != 1:
                continue  # a failed transaction moved nothing
            gas: dict[str, int | None] = {
                "gas_used": None,
                "base_fee_per_gas": None,
                "priority_fee_per_gas": None,
            }
            if _bears_gas(hit, receipt, gas_borne):
                gas["gas_used"] = int(receipt["gasUsed"])
                gas["base_fee_per_gas"] = int(base_fee) if base_fee is not None else None
                if base_fee is not None and receipt.get("effectiveGasPrice") is not None:
                    gas["priority_fee_per_gas"] = int(receipt["effectiveGasPrice"]) - int(base_fee)
            transfer = {
                **hit,
                "chain": self.spec.name,
                "block_hash": block_hash,
                "block_number": number,
                "chain_id": self.chain_id,
                **gas,
            }
            if conn.execute(INSERT_TRANSFER, transfer).fetchone():
                self._emit(conn, "detected", transfer, 1, int(block["timestamp"]))
                if transfer["direction"] == "OUTBOUND":
                    self._sent_mined(conn, transfer)
        conn.execute(
            "INSERT INTO chain_blocks VALUES (%s, %s, %s, %s) ON CONFLICT (chain, number) DO UPDATE"
            " SET hash = excluded.hash, parent_hash = excluded.parent_hash",
            (self.spec.name, number, block_hash, _hex(block["parentHash"])),
        )
        conn.execute(
            "DELETE FROM chain_blocks WHERE chain = %s AND number < %s",
            (self.spec.name, number - self.keep_blocks),
        )
        conn.execute(
            "INSERT INTO chain_checkpoints (chain, block_number, block_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (chain) DO UPDATE SET block_number = excluded.block_number,"
            " block_hash = excluded.block_hash, updated_at = now()",
            (self.spec.name, number, block_hash),
        )
        self._confirm(conn, number, int(block["timestamp"]))
        CHECKPOINT.labels(self.spec.name).set(number)

    def _sides(
        self,
        tx: str,
        index: int,
        sender: str,
        receiver: str,
        units: int,
        asset: str,
        decimals: int,
        token: str | None,
        wallets: dict[str, tuple[str, str]],
    ) -> list[dict[str, Any]]:
        """The transfer as seen from each watched side (without its block and receipt fields)."""
        return [
            {
                "tx_hash": tx,
                "log_index": index,
                "tenant_id": wallets[address][0],
                "account_id": wallets[address][1],
                "direction": direction,
                "from_address": sender,
                "to_address": receiver,
                "amount_units": units,
                "asset": asset,
                "decimals": decimals,
                "token_contract": token,
            }
            for address, direction in ((sender, "OUTBOUND"), (receiver, "INBOUND"))
            if address in wallets
        ]

    def _settle(
        self, conn: psycopg.Connection[Any], status: str, compare: str, height: int, was: str = "detected"
    ) -> list[dict[str, Any]]:
        """Move `was` transfers at heights `compare height` to `status`; returns them in chain order."""
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                f"UPDATE chain_transfers SET status = %s, settled_at = now() WHERE chain = %s"
                f" AND status = %s AND block_number {compare} %s RETURNING {COLUMNS}",
                (status, self.spec.name, was, height),
            )
            .fetchall()
        )
        return sorted(rows, key=_chain_order)

    def _confirm(self, conn: psycopg.Connection[Any], number: int, timestamp: int) -> None:
        depth = number - self.spec.confirmations + 1
        for transfer in self._settle(conn, "confirmed", "<=", depth):
            self._emit(conn, "confirmed", transfer, number - int(transfer["block_number"]) + 1, timestamp)
            if transfer["direction"] == "OUTBOUND":
                self._sent_confirmed(conn, transfer)

    # -- transfers we sent ------------------------------------------------------------------
    def _sent_mined(self, conn: psycopg.Connection[Any], transfer: dict[str, Any]) -> None:
        """A transaction of the chain sender is in a block: its transfer is PROVIDER_PROCESSING
        (once: mined again after a reorg, it reports nothing new)."""
        for tid, tenant, account, correlation in conn.execute(
            SEND_MINED, (self.spec.name, transfer["tx_hash"])
        ).fetchall():
            block = f"{transfer['tx_hash']}@{transfer['block_hash']}"
            report_status(
                conn,
                self.codec,
                self.catalog,
                self.settings,
                tenant=tenant,
                account=account,
                transaction_id=tid,
                correlation_id=correlation,
                status="PROVIDER_PROCESSING",
                reason=f"{transfer['tx_hash']} mined in block {transfer['block_number']}",
                provider=self.spec.name,
                source=f"chain_send:{tid}",
                step="mined",
                provider_update_id=block,
            )

    def _sent_confirmed(self, conn: psycopg.Connection[Any], transfer: dict[str, Any]) -> None:
        """A transaction of the chain sender has its confirmations: the transfer completes. Money
        out of a watched wallet that no transfer sent is reported for reconciliation, not posted."""
        sent = conn.execute(SEND_CONFIRMED, (self.spec.name, transfer["tx_hash"])).fetchall()
        if not sent:
            ours = conn.execute(
                "SELECT 1 FROM chain_sends WHERE chain = %s AND tx_hash = %s",
                (self.spec.name, transfer["tx_hash"]),
            ).fetchone()
            if ours is None:
                UNMATCHED.labels(self.spec.name).inc()
                log.error(
                    "%s: %s left wallet %s (%s), matching no transfer we sent: reconcile it (not posted)",
                    self.spec.name,
                    transfer["tx_hash"],
                    transfer["from_address"],
                    transfer["account_id"],
                )
            return
        block = f"{transfer['tx_hash']}@{transfer['block_hash']}"
        for tid, tenant, account, correlation in sent:
            for status in ("PROVIDER_CONFIRMING", "COMPLETED"):
                report_status(
                    conn,
                    self.codec,
                    self.catalog,
                    self.settings,
                    tenant=tenant,
                    account=account,
                    transaction_id=tid,
                    correlation_id=correlation,
                    status=status,
                    reason=f"{transfer['tx_hash']} has {self.spec.confirmations} confirmations on "
                    f"{self.spec.name}",
                    provider=self.spec.name,
                    source=f"chain_send:{tid}",
                    step="confirmed",
                    provider_update_id=block,
                )

    def _rewind(self, conn: psycopg.Connection[Any], number: int) -> None:
        kept = conn.execute(
            "SELECT number, hash FROM chain_blocks WHERE chain = %s AND number <= %s ORDER BY number DESC",
            (self.spec.name, number),
        ).fetchall()
        ancestor = None
        for height, stored in kept:
            if _hex(self.w3.eth.get_block(int(height))["hash"]) == stored:
                ancestor = int(height)
                break
        if ancestor is None:
            raise DeepReorg(f"{self.spec.name}: no kept block hash below {number} is on the chain any more")
        lost = self._settle(conn, "reorged", ">", ancestor)
        # deeper than the confirmations: money already posted is gone from the chain. Reported too,
        # marked, so the ledger reverses the deposit; the transfer, mined again, confirms again.
        unconfirmed = self._settle(conn, "reorged", ">", ancestor, was="confirmed")
        if unconfirmed:
            log.error(
                "%s: a reorg below block %d removed %d confirmed transfers; their postings are reversed",
                self.spec.name,
                ancestor + 1,
                len(unconfirmed),
            )
        replaced: dict[int, str | None] = {}
        for transfer in sorted([*lost, *unconfirmed], key=_chain_order):
            height = int(transfer["block_number"])
            if height not in replaced:
                try:
                    replaced[height] = _hex(self.w3.eth.get_block(height)["hash"])
                except Exception:  # the new chain may be shorter
                    replaced[height] = None
            self._emit(
                conn,
                "reorged",
                transfer,
                0,
                int(time.time()),
                replaced_by=replaced[height],
                was_confirmed=transfer in unconfirmed,
            )
        conn.execute("DELETE FROM chain_blocks WHERE chain = %s AND number > %s", (self.spec.name, ancestor))
        ancestor_hash = next(h for n, h in kept if int(n) == ancestor)
        conn.execute(
            "UPDATE chain_checkpoints SET block_number = %s, block_hash = %s, updated_at = now()"
            " WHERE chain = %s",
            (ancestor, ancestor_hash, self.spec.name),
        )
        log.warning(
            "%s: reorg; rewound to block %d, %d detected transfers reorged",
            self.spec.name,
            ancestor,
            len(lost),
        )

    def _emit(
        self,
        conn: psycopg.Connection[Any],
        kind: str,
        t: dict[str, Any],
        confirmations: int,
        timestamp: int,
        replaced_by: str | None = None,
        was_confirmed: bool = False,
    ) -> None:
        identity = f"chain:{t['chain']}:{t['tx_hash']}:{t['log_index']}:{t['account_id']}"
        transfer = {
            "chain": t["chain"],
            "chain_id": int(t["chain_id"]),
            "tx_hash": t["tx_hash"],
            "log_index": None if int(t["log_index"]) < 0 else int(t["log_index"]),
            "block_number": int(t["block_number"]),
            "block_hash": t["block_hash"],
            "from_address": t["from_address"],
            "to_address": t["to_address"],
            "direction": t["direction"],
            "amount": {
                "units": Decimal(int(t["amount_units"])),
                "asset": t["asset"],
                "decimals": int(t["decimals"]),
                "chain": t["chain"],
            },
            "token_contract": t["token_contract"],
            "gas_used": t["gas_used"],
            "base_fee_per_gas": _wei(t["base_fee_per_gas"]),
            "priority_fee_per_gas": _wei(t["priority_fee_per_gas"]),
        }
        topic = {"detected": DETECTED, "confirmed": CONFIRMED, "reorged": REORGED}[kind]
        metadata = new_metadata(
            topic.rsplit(".", 1)[0],
            tenant_id=t["tenant_id"],
            environment=self.settings.environment,
            source=f"connectors.chain.{self.spec.name}",
            correlation_id=str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, identity)),
            event_id=str(uuid.uuid5(LEDGERSTREAM_NAMESPACE, f"{identity}:{t['block_hash']}:{kind}")),
            occurred_at=timestamp * 1_000_000,
        )
        record: dict[str, Any] = {"metadata": metadata, "account_id": t["account_id"], "transfer": transfer}
        if kind == "reorged":
            record["replaced_by_block_hash"] = replaced_by
            record["was_confirmed"] = was_confirmed
        else:
            record["confirmations"] = confirmations
        enqueue(conn, self.codec, self.catalog, topic, record)
        self.emitted[kind] += 1
        EMITTED.labels(self.spec.name, kind).inc()

    def watched(self, conn: psycopg.Connection[Any]) -> Watched:
        """The chain's watched wallets and tokens, as they are now."""
        name = (self.spec.name,)
        wallets = {
            a: (t, acc)
            for a, t, acc in conn.execute(
                "SELECT address, tenant_id, account_id FROM chain_wallets WHERE chain = %s", name
            )
        }
        tokens, unregistered = {}, []
        for contract, symbol, decimals, registered in conn.execute(
            "SELECT t.contract, t.symbol, t.decimals, a.decimals FROM chain_tokens t "
            "LEFT JOIN crypto_assets a ON a.chain = t.chain AND a.contract = t.contract "
            "AND a.symbol = t.symbol WHERE t.chain = %s",
            name,
        ):
            if registered != decimals:
                unregistered.append(f"{symbol} at {contract} ({decimals} decimals; registry: {registered})")
            tokens[contract] = (symbol, decimals)
        if unregistered:
            raise UnregisteredToken(
                f"{self.spec.name}: watched tokens the currency registry does not have with these decimals: "
                f"{', '.join(unregistered)}; register them with `ledgerstream connect watch --token`"
            )
        return wallets, tokens

    # -- running ----------------------------------------------------------------------------
    def catch_up(self, conn: psycopg.Connection[Any], limit: int = 10_000) -> int:
        """Steps until there is nothing new (or `limit` steps); returns how many were taken.
        The watch list is read once per catch-up, not per block."""
        self._watched = self.watched(conn)
        steps = 0
        while steps < limit and self.step(conn):
            steps += 1
        return steps

    def run(
        self, *, stop: threading.Event | None = None, poll: float = 1.0, idle_exit: float | None = None
    ) -> dict[str, int]:
        """Follow the chain until `stop` is set (or `idle_exit` seconds pass without a new block)."""
        stop = stop or threading.Event()
        last = time.monotonic()
        delay = poll
        with psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True) as conn:
            while not stop.is_set():
                try:
                    moved = self.catch_up(conn, limit=500)
                    delay = poll
                    self.probe.turned(True)
                except DeepReorg:
                    raise
                except (psycopg.OperationalError, OSError, RuntimeError) as e:
                    self.probe.turned(False, str(e)[:200])
                    log.warning("%s: %s; retrying in %.1fs", self.spec.name, e, delay)
                    stop.wait(delay)
                    delay = min(2 * delay, 30.0)
                    continue
                if moved:
                    last = time.monotonic()
                elif idle_exit is not None and time.monotonic() - last >= idle_exit:
                    break
                stop.wait(poll)
        return self.emitted


def report_status(
    conn: psycopg.Connection[Any],
    codec: AvroCodec,
    catalog: Catalog,
    settings: Settings,
    *,
    tenant: str,
    account: str,
    transaction_id: str,
    correlation_id: str,
    status: str,
    reason: str,
    provider: str,
    source: str,
    step: str,
    provider_update_id: str | None = None,
) -> None:
    """A chain transfer's status report into the outbox, its id derived from its source and step."""
    enqueue(
        conn,
        codec,
        catalog,
        REPORTED,
        {
            "metadata": new_metadata(
                "payments.transaction.status_reported",
                tenant_id=tenant,
                environment=settings.environment,
                source="connectors.chain",
                correlation_id=correlation_id,
                event_id=derived_event_id(source, "chain", f"{step}:{status}"),
            ),
            "account_id": account,
            "transaction_id": transaction_id,
            "status": status,
            "reason": reason,
            "provider": provider,
            "provider_update_id": provider_update_id,
            "expected_version": None,
        },
    )


class AssetConflict(LedgerstreamError):
    """A token whose symbol, decimals or contract differ from what the currency registry has."""


def watch_token(conn: psycopg.Connection[Any], chain: str, symbol: str, decimals: int, contract: str) -> None:
    """Register an ERC-20 asset in the currency registry and follow its Transfer logs on `chain`.
    An asset's symbol, decimals and contract never change once registered: a different one is
    refused (AssetConflict)."""
    registered = conn.execute(
        "SELECT symbol, decimals, contract FROM crypto_assets "
        "WHERE chain = %s AND (symbol = %s OR contract = %s)",
        (chain, symbol, contract),
    ).fetchall()
    if any(tuple(row) != (symbol, decimals, contract) for row in registered):
        raise AssetConflict(
            f"the currency registry has {registered} on {chain}; an asset's symbol, decimals and contract "
            "never change once registered"
        )
    with conn.transaction():
        conn.execute(
            "INSERT INTO crypto_assets (chain, symbol, decimals, contract) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (chain, symbol, decimals, contract),
        )
        conn.execute(
            "INSERT INTO chain_tokens VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (chain, contract, symbol, decimals),
        )


def watch_wallet(conn: psycopg.Connection[Any], chain: str, address: str, tenant: str, account: str) -> None:
    """Follow transfers touching `address` on `chain`, for the tenant's account (a re-watch moves it)."""
    conn.execute(
        "INSERT INTO chain_wallets VALUES (%s, %s, %s, %s) ON CONFLICT (chain, address)"
        " DO UPDATE SET tenant_id = excluded.tenant_id, account_id = excluded.account_id",
        (chain, address, tenant, account),
    )
