-- Double-entry ledger: accounts, journal entries, entries, balances.
-- A journal entry balances per currency (checked at commit); entries are immutable,
-- a correction is a reversing entry.

CREATE TABLE ledger_accounts (
    code         text PRIMARY KEY,
    account_type text NOT NULL CHECK (account_type IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
    normal_side  text NOT NULL CHECK (normal_side IN ('DEBIT', 'CREDIT')),
    currency     text NOT NULL,
    exponent     smallint NOT NULL CHECK (exponent BETWEEN 0 AND 18),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE journal_entries (
    journal_entry_id uuid PRIMARY KEY,
    reference_id     text NOT NULL UNIQUE,
    description      text NOT NULL,
    tenant_id        text NOT NULL,
    environment      text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    correlation_id   text NOT NULL,
    source_event_id  uuid NOT NULL,
    reverses         text REFERENCES journal_entries (reference_id),
    posted_at        timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX journal_entries_one_reversal_idx ON journal_entries (reverses) WHERE reverses IS NOT NULL;

CREATE TABLE entries (
    journal_entry_id uuid NOT NULL REFERENCES journal_entries (journal_entry_id),
    line_no          smallint NOT NULL,
    ledger_account   text NOT NULL REFERENCES ledger_accounts (code),
    side             text NOT NULL CHECK (side IN ('DEBIT', 'CREDIT')),
    amount           numeric(78, 0) NOT NULL CHECK (amount > 0),
    currency         text NOT NULL,
    PRIMARY KEY (journal_entry_id, line_no)
);
CREATE INDEX entries_account_idx ON entries (ledger_account);

-- Running totals per account, maintained by the ledger sink with one aggregated
-- delta per account per batch. balance = debits - credits (signed, exact).
CREATE TABLE balances (
    ledger_account text PRIMARY KEY REFERENCES ledger_accounts (code),
    currency       text NOT NULL,
    debits         numeric(78, 0) NOT NULL DEFAULT 0 CHECK (debits >= 0),
    credits        numeric(78, 0) NOT NULL DEFAULT 0 CHECK (credits >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: post a reversing journal entry instead', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Balance rule, set-based: after each statement that inserts entries, every journal
-- entry it touched has at least two entries and equal debits and credits in each
-- currency (so a journal's entries are inserted in one statement). At commit, every
-- new journal entry must have entries at all.
CREATE FUNCTION check_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT e.journal_entry_id, e.currency,
           sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE 0 END) AS debits,
           sum(CASE WHEN e.side = 'CREDIT' THEN e.amount ELSE 0 END) AS credits,
           count(*) OVER (PARTITION BY e.journal_entry_id) AS currencies
      INTO bad
      FROM entries e
     WHERE e.journal_entry_id IN (SELECT DISTINCT journal_entry_id FROM new_entries)
     GROUP BY e.journal_entry_id, e.currency
    HAVING sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE -e.amount END) <> 0 OR count(*) < 2
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance in %: debits % <> credits % (or fewer than two entries)',
            bad.journal_entry_id, bad.currency, bad.debits, bad.credits USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_balanced AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION check_entries_balanced();

CREATE FUNCTION check_journal_has_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM entries WHERE journal_entry_id = NEW.journal_entry_id) THEN
        RAISE EXCEPTION 'journal entry % has no entries', NEW.journal_entry_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_entries_have_entries AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_journal_has_entries();
