-- A page of a live stream, ascending from $2, at most $3 events and about $4 payload bytes.
-- A tombstoned stream returns one row with state 3 and no event (one round trip either way).
-- The byte cut is found on narrow rows (version, payload length) first, then the page is read
-- by index range: a running sum over the wide rows made PostgreSQL sort and buffer every
-- payload twice (and spill to disk past work_mem), doubling the time of a 10,000-event load.
WITH st AS MATERIALIZED (
    SELECT state, CASE WHEN state = 1 THEN greatest($2, visible_from) END AS from_v
    FROM __SCHEMA__.streams WHERE stream_id = $1
), page AS (
    SELECT p.version, sum(p.len) OVER (ORDER BY p.version ROWS UNBOUNDED PRECEDING) - p.len AS bytes_before
    FROM (
        SELECT e.version, octet_length(e.payload) AS len
        FROM __SCHEMA__.events e
        WHERE e.stream_id = $1 AND e.version >= (SELECT from_v FROM st)
        ORDER BY e.version
        LIMIT $3
    ) p
)
SELECT 1::smallint AS state, e.stream_id, e.version, e.tx_id AS tx, e.seq, e.event_id,
       e.event_type, e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
       e.recorded_at
FROM __SCHEMA__.events e
WHERE e.stream_id = $1 AND e.version >= (SELECT from_v FROM st)
  AND e.version <= (SELECT max(version) FROM page WHERE bytes_before <= $4)
UNION ALL
SELECT 3::smallint, NULL::text, NULL::bigint, NULL::xid8, NULL::bigint, NULL::uuid, NULL::text,
       NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::timestamptz
FROM st WHERE state = 3
