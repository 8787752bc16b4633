-- One statement, one snapshot: rows below the xmin horizon after the checkpoint, scanned up
-- to $3 rows, then filtered ($4 stream prefix, $5 event types), at most $6 hits and about
-- $7 payload bytes. Every scanned row comes back (hits with their data) so `next` can move
-- past rows the filter refused.
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(s) AS horizon,
           pg_snapshot_xmax(s)::text::bigint - pg_snapshot_xmin(s)::text::bigint AS lag
    FROM (SELECT pg_current_snapshot() AS s) snap
),
scan AS MATERIALIZED (
    SELECT e.tx_id, e.seq, e.stream_id, e.version, e.event_id, e.event_type, e.schema_version,
           e.content_type, e.content_encoding, e.metadata, e.payload, e.recorded_at,
           octet_length(e.payload) AS len
    FROM __SCHEMA__.events e
    WHERE (e.tx_id, e.seq) > ($1::text::xid8, $2::bigint)
      AND e.tx_id < (SELECT horizon FROM h)
    ORDER BY e.tx_id, e.seq
    LIMIT $3
),
marked AS (
    SELECT s.*,
           (st.state = 1 AND s.version >= st.visible_from
            AND ($4::text IS NULL OR starts_with(s.stream_id, $4::text COLLATE "C"))
            AND (cardinality($5::text[]) = 0 OR s.event_type = ANY ($5::text[]))) AS hit
    FROM scan s
    JOIN __SCHEMA__.streams st ON st.stream_id = s.stream_id
),
ranked AS (
    SELECT m.*,
           count(*) FILTER (WHERE m.hit) OVER w AS hits_upto,
           coalesce(sum(m.len) FILTER (WHERE m.hit) OVER w, 0)
               - CASE WHEN m.hit THEN m.len ELSE 0 END AS bytes_before,
           count(*) OVER () AS scanned
    FROM marked m
    WINDOW w AS (ORDER BY m.tx_id, m.seq)
)
SELECT r.tx_id::text::bigint AS tx, r.seq, r.hit, r.scanned, (SELECT lag FROM h) AS lag,
       r.hits_upto, r.stream_id, r.version, r.event_id, r.event_type, r.schema_version,
       r.content_type, r.content_encoding,
       CASE WHEN r.hit THEN r.metadata END AS metadata,
       CASE WHEN r.hit THEN r.payload END AS payload,
       floor(round(date_part('epoch', r.recorded_at) * 1000000) / 1000)::bigint AS recorded_ms
FROM ranked r
WHERE r.hits_upto <= $6 AND r.bytes_before <= $7
ORDER BY r.tx_id, r.seq
