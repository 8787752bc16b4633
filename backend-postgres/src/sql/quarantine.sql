-- Admin::quarantine: records the event row at position ($1 tx_id, $2 seq) with reason $3,
-- unless it is recorded already (the first record is kept). One statement, so the row cannot
-- vanish between the check and the insert. `found` is false when the log has no row there.
WITH target AS (
    SELECT e.tx_id, e.seq FROM __SCHEMA__.events e
    WHERE e.tx_id = $1::text::xid8 AND e.seq = $2::bigint
    LIMIT 1
),
ins AS (
    INSERT INTO __SCHEMA__.quarantine (tx_id, seq, reason)
    SELECT t.tx_id, t.seq, $3::text FROM target t
    ON CONFLICT (tx_id, seq) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM target) AS found
