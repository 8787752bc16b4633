-- Records a delivery: fenced by the partition lease ($4 owner, $5 epoch; no row back when
-- it was lost), renews the lease, counts the attempt, records the claim. $6/$7 the row,
-- $8 ack timeout (ms), $9 consumer name.
WITH lease AS (
    UPDATE __SCHEMA__.bus_partitions b
    SET expires_at = greatest(b.expires_at, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $8)
    WHERE b.topic = $1 AND b.grp = $2 AND b.partition = $3 AND b.owner = $4 AND b.epoch = $5
    RETURNING floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now
)
INSERT INTO __SCHEMA__.bus_pending AS q
    (topic, grp, partition, tx_id, seq, attempts, consumer, claim_expires, first_at)
SELECT $1, $2, $3, $6::text::xid8, $7, 1, $9, l.now + $8, l.now FROM lease l
ON CONFLICT (topic, grp, partition, tx_id, seq) DO UPDATE
SET attempts = q.attempts + 1, consumer = excluded.consumer, claim_expires = excluded.claim_expires,
    due_at = NULL, first_at = coalesce(q.first_at, excluded.first_at)
RETURNING q.attempts
