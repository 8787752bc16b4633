-- Moves a partition's floor forward to ($6, $7) (never back) and drops the done markers it
-- passed, fenced by the lease ($4 owner, $5 epoch). Used when rows settled out of order
-- left the floor behind the settled prefix.
WITH lease AS (
    UPDATE __SCHEMA__.bus_partitions b
    SET floor_tx = CASE WHEN ($6::text::xid8, $7::bigint) > (b.floor_tx, b.floor_seq)
                        THEN $6::text::xid8 ELSE b.floor_tx END,
        floor_seq = CASE WHEN ($6::text::xid8, $7::bigint) > (b.floor_tx, b.floor_seq)
                         THEN $7::bigint ELSE b.floor_seq END
    WHERE b.topic = $1 AND b.grp = $2 AND b.partition = $3 AND b.owner = $4 AND b.epoch = $5
    RETURNING b.floor_tx, b.floor_seq
)
DELETE FROM __SCHEMA__.bus_pending q USING lease l
WHERE q.topic = $1 AND q.grp = $2 AND q.partition = $3
  AND (q.tx_id, q.seq) <= (l.floor_tx, l.floor_seq)
