-- One event appended to a stream that exists, with an expectation other than NoStream: the
-- fast path of append_events (ninth migration) as one plain statement, prepared once per
-- connection. Through the PL/pgSQL function, with its seven one-element arrays, the same
-- append cost the server 151 us of CPU against 121 us for this statement (pgbench, one
-- client, synchronous_commit off); the raw INSERT of the benchmark's ceiling 90-101 us.
--
-- $1 stream, $2 expectation kind (0 any, 2 stream exists, 3 exact), $3 the exact version,
-- $4 event id, $5 type, $6 schema version, $7 content type, $8 content encoding,
-- $9 metadata, $10 payload, $11 payload bytes.
--
-- The stream lock is taken before anything assigns a transaction id: the update joins the
-- lock's row, so its tuple is written after the lock is held. A concurrent append committed
-- while this one waited is seen through the update's re-check of the newest row version
-- (READ COMMITTED), so the expectation is decided on the current version. No row back: the
-- stream is missing, deleted, of another version or at the largest version, or the
-- expectation is NoStream. The caller then runs append_events, which decides every case.
-- A committed event id fails on events_event_id_key as in the function.
WITH lock AS (
    SELECT pg_advisory_xact_lock(__SCHEMA__.stream_lock_key($1))
),
head AS (
    UPDATE __SCHEMA__.streams s SET state = 1, version = s.version + 1, bytes = s.bytes + $11
    FROM lock
    WHERE s.stream_id = $1 AND s.state IN (1, 2)
      AND s.version < 9223372036854775807
      AND CASE $2::smallint
            WHEN 0 THEN true
            WHEN 2 THEN s.state = 1
            WHEN 3 THEN s.version = $3
            ELSE false
          END
    RETURNING s.version
)
INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                               content_type, content_encoding, metadata, payload)
SELECT $1, head.version, $4, $5, $6, $7, $8, $9, $10 FROM head
RETURNING version, tx_id, seq
