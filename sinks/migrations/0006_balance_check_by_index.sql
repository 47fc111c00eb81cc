-- The balance check joined the statement's transition table (no statistics) to
-- entries, and the planner chose to scan all of entries: the check grew with the
-- ledger. It now looks each touched journal entry up by its primary key.
CREATE OR REPLACE FUNCTION check_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
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
