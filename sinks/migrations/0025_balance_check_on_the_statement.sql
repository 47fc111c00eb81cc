-- Each statement's entries balance by themselves. A journal's entries are inserted in one
-- statement, and entries are append-only, so the lines a statement inserts for a journal
-- must balance per currency on their own: lines added later to a balanced journal then keep
-- it balanced, and lines that do not balance are refused whether or not the journal had
-- entries before. The check no longer reads every touched journal's entries back from the
-- table (one index scan per journal: the larger part of the ledger sink's insert); it sums
-- the statement's own rows. Amounts are positive, so a currency that balances has at least
-- a debit and a credit: the "two or more entries" rule holds with it.

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

    SELECT e.journal_entry_id, e.currency,
           sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE 0 END) AS debits,
           sum(CASE WHEN e.side = 'CREDIT' THEN e.amount ELSE 0 END) AS credits
      INTO bad
      FROM new_entries e
     GROUP BY e.journal_entry_id, e.currency
    HAVING sum(CASE WHEN e.side = 'DEBIT' THEN e.amount ELSE -e.amount END) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance in %: debits % <> credits % (or fewer than two entries)',
            bad.journal_entry_id, bad.currency, bad.debits, bad.credits USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
