-- The next rows of several partitions of one topic after each one's read position, below
-- the xmin horizon, in (tx_id, seq) order, in one statement (one snapshot). $1 topic,
-- $2 partitions, $3 read positions (tx ids as text), $4 their seqs, $5 rows to read per
-- partition.
-- `blocked` says committed rows of these partitions wait above the horizon (a transaction
-- older than theirs is still running): the caller looks again soon.
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon
),
p AS (
    SELECT * FROM unnest($2::integer[], $3::text[], $4::bigint[], $5::bigint[]) AS p(part, tx, seq, lim)
)
SELECT p.part, o.tx_id::text AS tx, o.seq, o.key, o.priority, o.id, o.headers, o.content_type,
       o.payload, false AS blocked
FROM p
CROSS JOIN LATERAL (
    SELECT * FROM __SCHEMA__.outbox o
    WHERE o.topic = $1 AND o.partition = p.part
      AND (o.tx_id, o.seq) > (p.tx::xid8, p.seq)
      AND o.tx_id < (SELECT horizon FROM h)
    ORDER BY o.tx_id, o.seq
    LIMIT p.lim
) o
UNION ALL
SELECT -1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       EXISTS (SELECT 1 FROM __SCHEMA__.outbox o
               WHERE o.topic = $1 AND o.partition = ANY ($2::integer[])
                 AND o.tx_id >= (SELECT horizon FROM h))
