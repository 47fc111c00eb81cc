-- AML flags raised by the AML agent (written by the aml sink), queryable by account
-- and by case status; analysts move a case from open to reviewed, dismissed or escalated.
CREATE TABLE aml_flags (
    flag_id          uuid PRIMARY KEY,
    event_id         uuid NOT NULL UNIQUE,
    account_id       text NOT NULL,
    tenant_id        text NOT NULL,
    environment      text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    rule_id          text NOT NULL,
    rule_version     text NOT NULL,
    risk_score       int NOT NULL CHECK (risk_score BETWEEN 0 AND 100),
    time_window      text,
    evidence         jsonb NOT NULL,
    trigger_event_id uuid NOT NULL,
    trigger_topic    text NOT NULL,
    case_status      text NOT NULL DEFAULT 'open'
                     CHECK (case_status IN ('open', 'reviewed', 'dismissed', 'escalated')),
    correlation_id   text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    kafka_topic      text NOT NULL,
    kafka_partition  int NOT NULL,
    kafka_offset     bigint NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aml_flags_account_idx ON aml_flags (account_id, occurred_at);
CREATE INDEX aml_flags_status_idx ON aml_flags (case_status, occurred_at);
