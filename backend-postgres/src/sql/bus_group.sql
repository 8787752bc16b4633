-- Creates a group's partition rows if the group is new ($1 topic, $2 group, $3 partitions,
-- $4 true for StartFrom::Latest), in one statement (one snapshot). Earliest: the floor is
-- the start. Latest: the floor is the horizon (every row below it is committed and so
-- "before"), and the committed rows at or above the horizon are marked done; rows of
-- transactions still in flight are not visible here, commit later, and are delivered.
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon
),
created AS (
    INSERT INTO __SCHEMA__.bus_partitions (topic, grp, partition, floor_tx, floor_seq)
    SELECT $1, $2, p, CASE WHEN $4 THEN (SELECT horizon FROM h) ELSE '0'::xid8 END, 0
    FROM generate_series(0, $3 - 1) AS p
    ON CONFLICT (topic, grp, partition) DO NOTHING
    RETURNING partition
)
INSERT INTO __SCHEMA__.bus_pending (topic, grp, partition, tx_id, seq, done)
SELECT $1, $2, o.partition, o.tx_id, o.seq, true
FROM __SCHEMA__.outbox o
WHERE $4 AND o.topic = $1
  AND o.partition IN (SELECT c.partition FROM created c)
  AND o.tx_id >= (SELECT horizon FROM h)
ON CONFLICT DO NOTHING
