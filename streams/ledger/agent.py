"""The ledger agent: a completed transaction becomes one balanced journal entry.

Pure: no state. The journal's `reference_id` (`txn:<id>`) and its id (UUIDv5 of
the reference and the agent) are deterministic, so reprocessing emits the same
journal and the ledger sink ignores the repeat.
"""

from __future__ import annotations

from streams.base import BatchHandler, Output, Result
from streams.ledger.postings import PostingError, transaction_completed
from streams.ledger.records import journal_record
from topics.events import Event, derived_event_id, new_metadata
from topics.money import InexactValue, money_parts

COMPLETED = "payments.transaction.completed.v1"
POSTED = "ledger.journal.posted.v1"
AGENT = "ledger_agent"


class LedgerHandler(BatchHandler):
    name = AGENT
    topics = (COMPLETED,)

    def handle(self, events: list[Event]) -> Result:
        result = Result()
        for event in events:
            record, meta = event.record, event.record["metadata"]
            try:
                units, currency, exponent = money_parts(record["amount"])
                journal = transaction_completed(
                    transaction_id=record["transaction_id"],
                    account_id=record["account_id"],
                    direction=record["direction"],
                    units=units,
                    currency=currency,
                    exponent=exponent,
                    rail=record.get("rail") or record["transaction_type"],
                    counterparty_account_id=record.get("counterparty_account_id"),
                )
            except (PostingError, InexactValue) as e:
                result.refused.append((event, f"cannot post {record.get('transaction_id')}: {e}"))
                continue
            metadata = new_metadata(
                "ledger.journal.posted",
                tenant_id=meta["tenant_id"],
                environment=meta["environment"],
                source="streams.ledger",
                correlation_id=meta["correlation_id"],
                causation_id=str(meta["event_id"]),
                event_id=derived_event_id(journal.reference_id, AGENT, "posted"),
                occurred_at=meta["occurred_at"],
            )
            result.outputs.append(
                Output(
                    POSTED,
                    journal_record(
                        journal,
                        journal_entry_id=derived_event_id(journal.reference_id, AGENT),
                        account_id=record["account_id"],
                        metadata=metadata,
                    ),
                )
            )
        return result
