-- Deletes the rows of topic $1 that every group's floor has passed and that no pending
-- state references, and counts them as trimmed. No group: nothing is trimmed.
WITH gone AS (
    DELETE FROM __SCHEMA__.outbox o
    WHERE o.topic = $1
      AND EXISTS (SELECT 1 FROM __SCHEMA__.bus_partitions b
                  WHERE b.topic = $1 AND b.partition = o.partition)
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.bus_partitions b
                      WHERE b.topic = $1 AND b.partition = o.partition
                        AND (o.tx_id, o.seq) > (b.floor_tx, b.floor_seq))
      AND NOT EXISTS (SELECT 1 FROM __SCHEMA__.bus_pending q
                      WHERE q.topic = $1 AND q.partition = o.partition
                        AND q.tx_id = o.tx_id AND q.seq = o.seq)
    RETURNING 1
),
n AS (SELECT count(*) AS n FROM gone)
INSERT INTO __SCHEMA__.bus_topics AS t (topic, trimmed)
SELECT $1, n.n FROM n
ON CONFLICT (topic) DO UPDATE SET trimmed = t.trimmed + excluded.trimmed
RETURNING (SELECT n FROM n)
