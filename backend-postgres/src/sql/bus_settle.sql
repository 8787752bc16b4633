-- Ends a delivery in one statement, fenced by the partition lease ($4 owner, $5 epoch):
-- `owned` is 0 and nothing is written when the lease was lost.
--   $1 topic, $2 group, $3 partition, $6/$7 the row (tx id as text, seq),
--   $8 kind: 0 settled (acknowledged, dropped or dead-lettered), 1 retry later,
--   $9/$10 the new floor when the settled rows before it are contiguous (NULL: unchanged),
--   $11 ack timeout ms (the lease is renewed), $12 retry delay ms, $13 last error,
--   $14 dead-letter reason (NULL: no dead letter), $15 entry id, $16 error, $17 parked
--   behind (message id), $18 attempts, $19 key to park (NULL: none), $20 the dead-lettered
--   message id the key parks behind, $21 whether to compute lag and published.
-- The dead letter, the acknowledgement (floor or done marker) and the parked key are one
-- statement, so one commit. lag/published are counted on the statement's snapshot (before
-- its own writes) and adjusted for this settle; the consumer runs no other counting or
-- acknowledging statement meanwhile, so that is the count as of its commit.
WITH lease AS (
    UPDATE __SCHEMA__.bus_partitions b
    SET floor_tx = CASE WHEN ($9::text::xid8, $10::bigint) > (b.floor_tx, b.floor_seq)
                        THEN $9::text::xid8 ELSE b.floor_tx END,
        floor_seq = CASE WHEN ($9::text::xid8, $10::bigint) > (b.floor_tx, b.floor_seq)
                         THEN $10::bigint ELSE b.floor_seq END,
        expires_at = greatest(b.expires_at,
                              floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $11)
    WHERE b.topic = $1 AND b.grp = $2 AND b.partition = $3 AND b.owner = $4 AND b.epoch = $5
    RETURNING b.floor_tx, b.floor_seq
),
cleared AS (
    DELETE FROM __SCHEMA__.bus_pending q USING lease l
    WHERE q.topic = $1 AND q.grp = $2 AND q.partition = $3
      AND (q.tx_id, q.seq) <= (l.floor_tx, l.floor_seq)
    RETURNING 1
),
marked AS (
    INSERT INTO __SCHEMA__.bus_pending AS q (topic, grp, partition, tx_id, seq, done, due_at, last_error)
    SELECT $1, $2, $3, $6::text::xid8, $7, $8 = 0,
           CASE WHEN $8 = 1 THEN floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $12 END,
           $13
    FROM lease l
    WHERE ($6::text::xid8, $7::bigint) > (l.floor_tx, l.floor_seq)
    ON CONFLICT (topic, grp, partition, tx_id, seq) DO UPDATE
    SET done = excluded.done, due_at = excluded.due_at, last_error = excluded.last_error,
        consumer = NULL, claim_expires = NULL
    RETURNING 1
),
dead AS (
    INSERT INTO __SCHEMA__.bus_dead_letters (topic, grp, partition, entry, key, priority, headers,
        content_type, payload, msg_id, reason, error, behind, attempts, at_ms)
    SELECT o.topic, $2, o.partition, $15, o.key, o.priority, o.headers, o.content_type, o.payload,
           o.id, $14, $16, $17::uuid, $18,
           floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
    FROM __SCHEMA__.outbox o
    WHERE $14::text IS NOT NULL AND EXISTS (SELECT 1 FROM lease)
      AND o.topic = $1 AND o.partition = $3 AND o.tx_id = $6::text::xid8 AND o.seq = $7
    RETURNING 1
),
parked AS (
    INSERT INTO __SCHEMA__.bus_parked (topic, grp, key, partition, behind)
    SELECT $1, $2, $19, $3, $20::uuid FROM lease WHERE $19::text IS NOT NULL
    ON CONFLICT (topic, grp, key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM lease) AS owned,
       CASE WHEN $21 THEN
           (SELECT count(*) FROM __SCHEMA__.outbox o
            JOIN __SCHEMA__.bus_partitions b
              ON b.topic = o.topic AND b.grp = $2 AND b.partition = o.partition
            WHERE o.topic = $1 AND (o.tx_id, o.seq) > (b.floor_tx, b.floor_seq))
           - (SELECT count(*) FROM __SCHEMA__.bus_pending q
              WHERE q.topic = $1 AND q.grp = $2 AND q.done)
           - CASE WHEN $8 = 0 AND EXISTS (SELECT 1 FROM lease) THEN 1 ELSE 0 END
       END AS lag,
       CASE WHEN $21 THEN
           (SELECT count(*) FROM __SCHEMA__.outbox o WHERE o.topic = $1)
           + coalesce((SELECT t.trimmed FROM __SCHEMA__.bus_topics t WHERE t.topic = $1), 0)
       END AS published
