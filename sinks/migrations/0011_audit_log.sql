-- The audit trail: one row per event on any topic, append-only, kept 7 years,
-- range-partitioned by month, indexed by correlation id and by entity.
CREATE TABLE audit_log (
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    topic           text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    tenant_id       text NOT NULL,
    environment     text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    actor           text,
    correlation_id  text NOT NULL,
    causation_id    text,
    account_id      text,
    entity_type     text,
    entity_id       text,
    before          jsonb,
    after           jsonb,
    payload         jsonb NOT NULL,
    pan_redacted    boolean NOT NULL DEFAULT false,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX audit_log_correlation_idx ON audit_log (correlation_id, occurred_at);
CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, occurred_at);
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
SELECT ensure_monthly_partitions('audit_log', date '2026-01-01', 36);

-- Append-only, twice over: no UPDATE or DELETE for anyone (a trigger), and the
-- audit sink writes as a role that holds only INSERT and SELECT.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledgerstream_audit_writer') THEN
        CREATE ROLE ledgerstream_audit_writer NOLOGIN;
    END IF;
END $$;
REVOKE ALL ON audit_log FROM ledgerstream_audit_writer;
GRANT INSERT, SELECT ON audit_log TO ledgerstream_audit_writer;
GRANT ledgerstream_audit_writer TO CURRENT_USER;
