-- Admin::release: ends the quarantine of position ($1 tx_id, $2 seq); no row when it had none.
DELETE FROM __SCHEMA__.quarantine q
WHERE q.tx_id = $1::text::xid8 AND q.seq = $2::bigint
