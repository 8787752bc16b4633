-- Admin::quarantined: every quarantined entry in log order.
SELECT q.tx_id AS tx, q.seq, q.reason, q.quarantined_at AS at
FROM __SCHEMA__.quarantine q
ORDER BY q.tx_id, q.seq
