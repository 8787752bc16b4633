-- A page of a stream, ascending from $2, at most $3 events, when the stream's payloads fit $4
-- bytes: one row per event, each with the stream's state and `fits` true. A stream that
-- holds no event to give (soft-deleted, tombstoned, or nothing at or after $2) gives one row
-- with a NULL version; a missing stream gives no row. A live stream whose payloads may not fit
-- $4 (`streams.bytes` above it, or unknown) gives one row with `fits` false and no event: the
-- client then reads it with read_stream_cut.sql, which finds the byte cut first.
--
-- A stream holds exactly the versions 1 to `streams.version` (appends and imports are
-- contiguous from 1 and no event is ever deleted), so the page is the version range
-- `from_v ..= upto`: one index range scan, unordered (the client sorts). When the stream is
-- not live or does not fit, the range is empty, so the scan stops at once.
--
-- One statement of three nodes: the earlier form, a union of both cases behind initplans,
-- had the executor set up about twenty nodes per call, and cost 445k instructions per read of
-- a 4-event stream against 321k for this one (callgrind, single-user backend). Rows leave out
-- the stream id, which the caller has: every column sent costs the server per row.
SELECT s.state, (s.bytes <= $4) IS TRUE AS fits, e.version, e.tx_id AS tx, e.seq, e.event_id,
       e.event_type, e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
       e.recorded_at
FROM __SCHEMA__.streams s
LEFT JOIN LATERAL (
    SELECT e.* FROM __SCHEMA__.events e
    WHERE e.stream_id = $1
      AND e.version >= greatest($2, s.visible_from)
      AND e.version <= CASE WHEN s.state = 1 AND s.bytes <= $4
                            -- min(from_v + $3 - 1, version), without overflow
                            THEN greatest($2, s.visible_from) - 1
                                 + least($3, greatest(s.version - greatest($2, s.visible_from) + 1, 0))
                            ELSE 0 END
) e ON true
WHERE s.stream_id = $1
