-- One event appended with scalar parameters, in one round trip. A stream that exists, with an
-- expectation that holds, takes the fast path of append_events (tenth migration) as plain
-- statements here; anything else (a missing or deleted stream, a conflict, a re-send whose
-- expectation no longer holds, NoStream) calls append_events itself, in the same statement.
-- Both branches answer append_events' bigint[] (outcome, state, current, first and last
-- version, tx_id, seq).
--
-- Through the function alone, with its seven one-element arrays, a single append cost the
-- server 177-181 us of CPU against 152-169 us with the fast path here (the raw INSERT of the
-- benchmark's ceiling 115-133 us; one client, synchronous_commit off, three interleaved
-- rounds of 15,000 appends, the backend's CPU time from /proc).
--
-- $1 stream, $2 expectation kind (0 any, 1 no stream, 2 stream exists, 3 exact), $3 the exact
-- version, $4 event id, $5 type, $6 schema version, $7 content type, $8 content encoding,
-- $9 metadata, $10 payload, $11 payload bytes.
--
-- The stream lock is taken before anything assigns a transaction id: the update joins the
-- lock's row, so its tuple is written after the lock is held. A concurrent append committed
-- while this one waited is seen through the update's re-check of the newest row version
-- (READ COMMITTED), so the expectation is decided on the current version. The function's own
-- statements take their snapshots after the lock. A committed event id with an expectation
-- that still holds fails on events_event_id_key, as in the function.
--
-- A corrupt head (a negative version, a state that is no state) never takes the plain
-- statements: the function refuses it before writing (tenth migration). A head behind its
-- events fails on events_stream_version_key, which the client maps to Corrupt.
WITH lock AS (
    SELECT pg_advisory_xact_lock(__SCHEMA__.stream_lock_key($1))
),
head AS (
    UPDATE __SCHEMA__.streams s SET state = 1, version = s.version + 1, bytes = s.bytes + $11
    FROM lock
    WHERE s.stream_id = $1 AND s.state IN (1, 2)
      AND s.version >= 0 AND s.version < 9223372036854775807
      AND CASE $2::smallint
            WHEN 0 THEN true
            WHEN 2 THEN s.state = 1
            WHEN 3 THEN s.version = $3
            ELSE false
          END
    RETURNING s.version
),
ev AS (
    INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                                   content_type, content_encoding, metadata, payload)
    SELECT $1, head.version, $4, $5, $6, $7, $8, $9, $10 FROM head
    RETURNING version, tx_id, seq
)
SELECT ARRAY[0, 1, version, version, version, tx_id::text::bigint, seq] FROM ev
UNION ALL
SELECT __SCHEMA__.append_events($1, $2::smallint, $3, ARRAY[$4::uuid], ARRAY[$5::text],
                                ARRAY[$6::bigint], ARRAY[$7::text], ARRAY[$8::text],
                                ARRAY[$9::text], ARRAY[$10::bytea], $11)
WHERE NOT EXISTS (SELECT 1 FROM head)
