-- A page of a live stream, descending from $2, at most $3 events and about $4 payload bytes.
-- A tombstoned stream returns one row with state 3 and no event. The byte cut is found on
-- narrow rows first, as in read_stream.sql.
WITH st AS MATERIALIZED (
    SELECT state, CASE WHEN state = 1 THEN visible_from END AS from_v
    FROM __SCHEMA__.streams WHERE stream_id = $1
), page AS (
    SELECT p.version, sum(p.len) OVER (ORDER BY p.version DESC ROWS UNBOUNDED PRECEDING) - p.len AS bytes_before
    FROM (
        SELECT e.version, octet_length(e.payload) AS len
        FROM __SCHEMA__.events e
        WHERE e.stream_id = $1 AND e.version >= (SELECT from_v FROM st) AND e.version <= $2
        ORDER BY e.version DESC
        LIMIT $3
    ) p
)
SELECT 1::smallint AS state, e.version, e.tx_id AS tx, e.seq, e.event_id,
       e.event_type, e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
       e.recorded_at
FROM __SCHEMA__.events e
WHERE e.stream_id = $1 AND e.version <= $2
  AND e.version >= (SELECT min(version) FROM page WHERE bytes_before <= $4)
UNION ALL
SELECT 3::smallint, NULL::bigint, NULL::xid8, NULL::bigint, NULL::uuid, NULL::text,
       NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::timestamptz
FROM st WHERE state = 3
