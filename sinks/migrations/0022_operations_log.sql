-- What operators did to the pipeline: offset resets, replays and dead-letter redrives,
-- each with who, why, and before and after. Append-only, like the audit trail.
CREATE TABLE operations_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    operator    text NOT NULL,
    action      text NOT NULL CHECK (action IN ('offsets.reset', 'replay', 'dlq.redrive')),
    target      text NOT NULL,
    reason      text NOT NULL CHECK (length(btrim(reason)) > 0),
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX operations_log_target_idx ON operations_log (target, at);

-- Each dead letter sent back, once: a second redrive of the same dead letter needs --force
-- and is a row of its own.
CREATE TABLE dlq_redrives (
    dlq_topic        text NOT NULL,
    dlq_partition    int NOT NULL,
    dlq_offset       bigint NOT NULL,
    operation_id     bigint NOT NULL REFERENCES operations_log (id),
    target_topic     text NOT NULL,
    forced           boolean NOT NULL DEFAULT false,
    redriven_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset, operation_id)
);

CREATE FUNCTION operations_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER operations_log_append_only BEFORE UPDATE OR DELETE ON operations_log
    FOR EACH ROW EXECUTE FUNCTION operations_are_append_only();
CREATE TRIGGER dlq_redrives_append_only BEFORE UPDATE OR DELETE ON dlq_redrives
    FOR EACH ROW EXECUTE FUNCTION operations_are_append_only();
