"""Every topic name of the catalog (`catalog.toml`), as one constant each.

Code names a topic through these, never as a string of its own; a test checks that they are
exactly the catalog's topics and that no other module spells a topic name out. Dead-letter
topics are derived from their consumer (`topics.catalog.dlq_topic`)."""

from __future__ import annotations

BANKING_TRANSACTION_RECEIVED_V1 = "banking.transaction.received.v1"
BANKING_CONSENT_GRANTED_V1 = "banking.consent.granted.v1"
BANKING_CONSENT_EXPIRED_V1 = "banking.consent.expired.v1"
CARDS_TRANSACTION_RECEIVED_V1 = "cards.transaction.received.v1"
COMPLIANCE_KYC_VERIFIED_V1 = "compliance.kyc.verified.v1"
CRYPTO_WALLET_TRANSFER_DETECTED_V1 = "crypto.wallet.transfer.detected.v1"
CRYPTO_WALLET_TRANSFER_CONFIRMED_V1 = "crypto.wallet.transfer.confirmed.v1"
CRYPTO_WALLET_TRANSFER_REORGED_V1 = "crypto.wallet.transfer.reorged.v1"
PAYMENTS_TRANSFER_REQUESTED_V1 = "payments.transfer.requested.v1"
FX_ORDER_REQUESTED_V1 = "fx.order.requested.v1"
FX_ORDER_APPROVED_V1 = "fx.order.approved.v1"
FX_RATE_UPDATED_V1 = "fx.rate.updated.v1"
PAYMENTS_TRANSACTION_STATUS_REPORTED_V1 = "payments.transaction.status_reported.v1"
ACCOUNTS_ACCOUNT_OPENED_V1 = "accounts.account.opened.v1"
ACCOUNTS_ACCOUNT_STATUS_CHANGED_V1 = "accounts.account.status_changed.v1"
PAYMENTS_TRANSACTION_CREATED_V1 = "payments.transaction.created.v1"
PAYMENTS_TRANSACTION_STATUS_CHANGED_V1 = "payments.transaction.status_changed.v1"
PAYMENTS_TRANSACTION_COMPLETED_V1 = "payments.transaction.completed.v1"
PAYMENTS_TRANSACTION_FAILED_V1 = "payments.transaction.failed.v1"
BILLING_FEE_ASSESSED_V1 = "billing.fee.assessed.v1"
FX_CONVERSION_EXECUTED_V1 = "fx.conversion.executed.v1"
COMPLIANCE_AML_FLAGGED_V1 = "compliance.aml.flagged.v1"
COMPLIANCE_TRANSACTION_BLOCKED_V1 = "compliance.transaction.blocked.v1"
BILLING_INVOICE_LINE_ITEM_ADDED_V1 = "billing.invoice.line_item_added.v1"
LEDGER_JOURNAL_POSTED_V1 = "ledger.journal.posted.v1"
ACCOUNTS_BALANCE_UPDATED_V1 = "accounts.balance.updated.v1"
AUDIT_EVENTS_LOG_V1 = "audit.events.log.v1"

ALL = frozenset(
    {
        BANKING_TRANSACTION_RECEIVED_V1,
        BANKING_CONSENT_GRANTED_V1,
        BANKING_CONSENT_EXPIRED_V1,
        CARDS_TRANSACTION_RECEIVED_V1,
        COMPLIANCE_KYC_VERIFIED_V1,
        CRYPTO_WALLET_TRANSFER_DETECTED_V1,
        CRYPTO_WALLET_TRANSFER_CONFIRMED_V1,
        CRYPTO_WALLET_TRANSFER_REORGED_V1,
        PAYMENTS_TRANSFER_REQUESTED_V1,
        FX_ORDER_REQUESTED_V1,
        FX_ORDER_APPROVED_V1,
        FX_RATE_UPDATED_V1,
        PAYMENTS_TRANSACTION_STATUS_REPORTED_V1,
        ACCOUNTS_ACCOUNT_OPENED_V1,
        ACCOUNTS_ACCOUNT_STATUS_CHANGED_V1,
        PAYMENTS_TRANSACTION_CREATED_V1,
        PAYMENTS_TRANSACTION_STATUS_CHANGED_V1,
        PAYMENTS_TRANSACTION_COMPLETED_V1,
        PAYMENTS_TRANSACTION_FAILED_V1,
        BILLING_FEE_ASSESSED_V1,
        FX_CONVERSION_EXECUTED_V1,
        COMPLIANCE_AML_FLAGGED_V1,
        COMPLIANCE_TRANSACTION_BLOCKED_V1,
        BILLING_INVOICE_LINE_ITEM_ADDED_V1,
        LEDGER_JOURNAL_POSTED_V1,
        ACCOUNTS_BALANCE_UPDATED_V1,
        AUDIT_EVENTS_LOG_V1,
    }
)
