-- Records several deliveries of one consumer in one statement (one commit): fenced per
-- partition by its lease ($3 owner, $6 partitions with $7 their epochs; rows of a lost lease
-- come back without a row), renews those leases, counts each row's attempt, records the
-- claims. $1 topic, $2 group, $4 ack timeout (ms), $5 consumer name, $6..$9 one element per
-- row: partition, epoch, tx id (text), seq. Returns (partition, tx, seq, attempts) per row
-- recorded.
WITH r AS (
    SELECT * FROM unnest($6::integer[], $7::bigint[], $8::text[], $9::bigint[]) AS r(part, epoch, tx, seq)
),
lease AS (
    UPDATE __SCHEMA__.bus_partitions b
    SET expires_at = greatest(b.expires_at, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $4)
    WHERE b.topic = $1 AND b.grp = $2 AND b.partition = ANY ($6::integer[]) AND b.owner = $3
      AND (b.partition, b.epoch) IN (SELECT r.part, r.epoch FROM r)
    RETURNING b.partition, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now
)
INSERT INTO __SCHEMA__.bus_pending AS q
    (topic, grp, partition, tx_id, seq, attempts, consumer, claim_expires, first_at)
SELECT $1, $2, r.part, r.tx::xid8, r.seq, 1, $5, l.now + $4, l.now
FROM r JOIN lease l ON l.partition = r.part
ON CONFLICT (topic, grp, partition, tx_id, seq) DO UPDATE
SET attempts = q.attempts + 1, consumer = excluded.consumer, claim_expires = excluded.claim_expires,
    due_at = NULL, first_at = coalesce(q.first_at, excluded.first_at)
RETURNING q.partition, q.tx_id::text AS tx, q.seq, q.attempts
