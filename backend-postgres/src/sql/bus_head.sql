-- The notifier's poll of the outbox head: the last sequence value handed out, the xmin
-- horizon, how far it lags (transaction ids), and whether committed rows wait above it.
SELECT (SELECT last_value FROM __SCHEMA__.outbox_seq) AS last,
       pg_snapshot_xmin(snap.s)::text AS horizon,
       pg_snapshot_xmax(snap.s)::text::bigint - pg_snapshot_xmin(snap.s)::text::bigint AS lag,
       EXISTS (SELECT 1 FROM __SCHEMA__.outbox o WHERE o.tx_id >= pg_snapshot_xmin(snap.s)) AS above
FROM (SELECT pg_current_snapshot() AS s) snap
