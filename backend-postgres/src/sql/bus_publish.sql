-- Publishes a batch in one statement: $1 topic, then one array per column. Rows are
-- inserted in array order, so `seq` follows publish order within the batch; `tx_id` is the
-- inserting transaction's (the caller's, when published inside its transaction). A message id
-- the topic already holds is skipped: re-publishing is a no-op.
INSERT INTO __SCHEMA__.outbox (topic, partition, key, priority, id, headers, content_type, payload)
SELECT $1, u.partition, u.key, u.priority, u.id, u.headers, u.content_type, u.payload
FROM unnest($2::integer[], $3::text[], $4::smallint[], $5::uuid[], $6::text[], $7::text[], $8::bytea[])
     WITH ORDINALITY AS u(partition, key, priority, id, headers, content_type, payload, ord)
ORDER BY u.ord
ON CONFLICT (topic, id) DO NOTHING
