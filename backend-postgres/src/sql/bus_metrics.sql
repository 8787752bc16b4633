-- A group's lag (rows of the topic above its floors, minus rows settled out of order) and
-- the messages ever published to the topic (retained plus trimmed). $1 topic, $2 group.
SELECT (SELECT count(*) FROM __SCHEMA__.outbox o
        JOIN __SCHEMA__.bus_partitions b
          ON b.topic = o.topic AND b.grp = $2 AND b.partition = o.partition
        WHERE o.topic = $1 AND (o.tx_id, o.seq) > (b.floor_tx, b.floor_seq))
       - (SELECT count(*) FROM __SCHEMA__.bus_pending q
          WHERE q.topic = $1 AND q.grp = $2 AND q.done) AS lag,
       (SELECT count(*) FROM __SCHEMA__.outbox o WHERE o.topic = $1)
       + coalesce((SELECT t.trimmed FROM __SCHEMA__.bus_topics t WHERE t.topic = $1), 0) AS published
