-- A page of a live stream, ascending from $2, at most $3 events and about $4 payload bytes,
-- for a stream that read_stream.sql found may not fit $4 (it decides again: the stream may have
-- changed in between). A tombstoned stream returns one row with state 3 and no event.
-- When the stream's payloads fit $4 (`streams.bytes`, the sixth migration), the page is
-- one index range scan of versions `from_v ..= upto`, unordered (the client sorts): a stream
-- holds exactly the versions 1 to `streams.version` (appends and imports are contiguous from
-- 1 and no event is ever deleted), so that range is the page. This took a third of the
-- server time of the other way for 10,000 events. Otherwise the byte cut is found on narrow
-- rows (version, payload length) first, then the page is read by index range: a running sum
-- over the wide rows made PostgreSQL sort and buffer every payload twice (and spill to disk
-- past work_mem). Only the branch whose one-time filter holds runs. Rows leave out the stream
-- id, which the caller has: every column sent costs the server per row.
WITH st AS MATERIALIZED (
    SELECT state, from_v, coalesce(bytes <= $4, false) AS fits,
           -- min(from_v + $3 - 1, version), without overflow
           from_v - 1 + least($3, greatest(version - from_v + 1, 0)) AS upto
    FROM (SELECT state, version, bytes,
                 CASE WHEN state = 1 THEN greatest($2, visible_from) END AS from_v
          FROM __SCHEMA__.streams WHERE stream_id = $1) s
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
SELECT 1::smallint AS state, e.version, e.tx_id AS tx, e.seq, e.event_id,
       e.event_type, e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
       e.recorded_at
FROM __SCHEMA__.events e
WHERE (SELECT fits FROM st) AND e.stream_id = $1
  AND e.version BETWEEN (SELECT from_v FROM st) AND (SELECT upto FROM st)
UNION ALL
SELECT 1::smallint AS state, e.version, e.tx_id AS tx, e.seq, e.event_id,
       e.event_type, e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
       e.recorded_at
FROM __SCHEMA__.events e
WHERE NOT (SELECT fits FROM st) AND e.stream_id = $1 AND e.version >= (SELECT from_v FROM st)
  AND e.version <= (SELECT max(version) FROM page WHERE bytes_before <= $4)
UNION ALL
SELECT 3::smallint, NULL::bigint, NULL::xid8, NULL::bigint, NULL::uuid, NULL::text,
       NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::timestamptz
FROM st WHERE state = 3
