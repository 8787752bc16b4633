-- A page of a live stream, ascending from $2, at most $3 events and about $4 payload bytes.
-- A tombstoned stream returns one row with state 3 and no event (one round trip either way).
SELECT x.* FROM (
    SELECT 1::smallint AS state, e.stream_id, e.version, e.tx_id::text::bigint AS tx, e.seq, e.event_id, e.event_type,
           e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
           floor(round(date_part('epoch', e.recorded_at) * 1000000) / 1000)::bigint AS recorded_ms,
           sum(octet_length(e.payload)) OVER (ORDER BY e.version) - octet_length(e.payload) AS bytes_before
    FROM __SCHEMA__.events e
    JOIN __SCHEMA__.streams st ON st.stream_id = e.stream_id
    WHERE e.stream_id = $1 AND st.state = 1 AND e.version >= greatest($2, st.visible_from)
    ORDER BY e.version
    LIMIT $3
) x
WHERE x.bytes_before <= $4
UNION ALL
SELECT 3::smallint, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text,
       NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bytea, NULL::bigint, NULL::bigint
FROM __SCHEMA__.streams WHERE stream_id = $1 AND state = 3
