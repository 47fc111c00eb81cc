-- Entries keep their journal and their account by a check per statement, not per row.
-- The two foreign keys of `entries` fired a trigger per inserted line (two of every four
-- database seconds of a ledger batch). The statement-level check that already balances each
-- journal now also finds, once per statement, any journal entry id or (account, currency,
-- exponent) that does not exist, and refuses it as a foreign key would. What the keys also
-- guarded, that a referenced row cannot go away, the append-only journal already holds, and
-- ledger accounts now refuse deletion and a change of their identity the same way.

ALTER TABLE entries DROP CONSTRAINT entries_journal_entry_id_fkey;
ALTER TABLE entries DROP CONSTRAINT entries_account_money_fkey;

CREATE OR REPLACE FUNCTION check_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- LATERAL ... LIMIT 1 keeps each lookup on its index: the transition table has no
    -- statistics, and a join the planner may choose would scan the whole ledger.
    SELECT t.journal_entry_id INTO bad
      FROM (SELECT DISTINCT journal_entry_id FROM new_entries) t
      LEFT JOIN LATERAL (
          SELECT true AS found FROM journal_entries j WHERE j.journal_entry_id = t.journal_entry_id LIMIT 1
      ) j ON true
     WHERE j.found IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entries name journal entry %, which does not exist', bad.journal_entry_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    SELECT t.ledger_account, t.currency, t.exponent INTO bad
      FROM (SELECT DISTINCT ledger_account, currency, exponent FROM new_entries) t
      LEFT JOIN LATERAL (
          SELECT true AS found FROM ledger_accounts a
           WHERE a.code = t.ledger_account AND a.currency = t.currency AND a.exponent = t.exponent LIMIT 1
      ) a ON true
     WHERE a.found IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entries name ledger account % in % with exponent %, which does not exist',
            bad.ledger_account, bad.currency, bad.exponent USING ERRCODE = 'foreign_key_violation';
    END IF;

    SELECT t.journal_entry_id, s.currency, s.debits, s.credits, s.lines
      INTO bad
      FROM (SELECT DISTINCT journal_entry_id FROM new_entries) t
      CROSS JOIN LATERAL (
          SELECT e.currency,
                 sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE 0 END) AS debits,
                 sum(CASE WHEN e.side = 'CREDIT' THEN e.amount ELSE 0 END) AS credits,
                 count(*) AS lines
            FROM entries e
           WHERE e.journal_entry_id = t.journal_entry_id
           GROUP BY e.currency
      ) s
     WHERE s.debits <> s.credits OR s.lines < 2
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance in %: debits % <> credits % (or fewer than two entries)',
            bad.journal_entry_id, bad.currency, bad.debits, bad.credits USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION refuse_account_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger account % keeps its code, currency and exponent and is never deleted: entries name it',
        OLD.code USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER ledger_accounts_kept BEFORE DELETE OR UPDATE OF code, currency, exponent ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION refuse_account_change();
