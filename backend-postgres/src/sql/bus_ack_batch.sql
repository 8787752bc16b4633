-- Acknowledges several deliveries of one consumer in one statement (one commit), fenced per
-- partition by its lease ($3 owner): the batched form of bus_settle.sql for rows settled
-- without a dead letter, a retry or a parked key.
--   $1 topic, $2 group, $4 ack timeout ms (the leases are renewed),
--   $5..$8 one element per partition: partition, epoch, new floor tx id (text; NULL:
--   unchanged) and seq,
--   $9..$11 one element per row: partition, tx id (text), seq,
--   $12 whether to compute lag and published.
-- Returns the partitions whose lease was held (their rows are settled) and, when asked,
-- lag and published counted on the statement's snapshot and adjusted for these settles (the
-- consumer runs no other counting or settling statement meanwhile, see bus_settle.sql).
WITH lease AS (
    UPDATE __SCHEMA__.bus_partitions b
    SET floor_tx = CASE WHEN (f.ftx::xid8, f.fseq) > (b.floor_tx, b.floor_seq)
                        THEN f.ftx::xid8 ELSE b.floor_tx END,
        floor_seq = CASE WHEN (f.ftx::xid8, f.fseq) > (b.floor_tx, b.floor_seq)
                         THEN f.fseq ELSE b.floor_seq END,
        expires_at = greatest(b.expires_at,
                              floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $4)
    FROM unnest($5::integer[], $6::bigint[], $7::text[], $8::bigint[]) AS f(part, epoch, ftx, fseq)
    WHERE b.topic = $1 AND b.grp = $2 AND b.partition = ANY ($5::integer[]) AND b.owner = $3
      AND b.partition = f.part AND b.epoch = f.epoch
    RETURNING b.partition, b.floor_tx, b.floor_seq
),
r AS (
    SELECT * FROM unnest($9::integer[], $10::text[], $11::bigint[]) AS r(part, tx, seq)
),
cleared AS (
    DELETE FROM __SCHEMA__.bus_pending q USING lease l
    WHERE q.topic = $1 AND q.grp = $2 AND q.partition = l.partition
      AND (q.tx_id, q.seq) <= (l.floor_tx, l.floor_seq)
    RETURNING 1
),
marked AS (
    INSERT INTO __SCHEMA__.bus_pending AS q (topic, grp, partition, tx_id, seq, done)
    SELECT $1, $2, r.part, r.tx::xid8, r.seq, true
    FROM r JOIN lease l ON l.partition = r.part
    WHERE (r.tx::xid8, r.seq) > (l.floor_tx, l.floor_seq)
    ON CONFLICT (topic, grp, partition, tx_id, seq) DO UPDATE
    SET done = true, due_at = NULL, last_error = NULL, consumer = NULL, claim_expires = NULL
    RETURNING 1
)
SELECT (SELECT coalesce(array_agg(l.partition), '{}') FROM lease l) AS owned,
       CASE WHEN $12 THEN
           (SELECT count(*) FROM __SCHEMA__.outbox o
            JOIN __SCHEMA__.bus_partitions b
              ON b.topic = o.topic AND b.grp = $2 AND b.partition = o.partition
            WHERE o.topic = $1 AND (o.tx_id, o.seq) > (b.floor_tx, b.floor_seq))
           - (SELECT count(*) FROM __SCHEMA__.bus_pending q
              WHERE q.topic = $1 AND q.grp = $2 AND q.done)
           - (SELECT count(*) FROM r JOIN lease l ON l.partition = r.part)
       END AS lag,
       CASE WHEN $12 THEN
           (SELECT count(*) FROM __SCHEMA__.outbox o WHERE o.topic = $1)
           + coalesce((SELECT t.trimmed FROM __SCHEMA__.bus_topics t WHERE t.topic = $1), 0)
       END AS published
