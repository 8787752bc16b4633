SELECT * FROM (
    SELECT e.stream_id, e.version, e.tx_id AS tx, e.seq, e.event_id, e.event_type,
           e.schema_version, e.content_type, e.content_encoding, e.metadata, e.payload,
           e.recorded_at,
           sum(octet_length(e.payload)) OVER (ORDER BY e.version) - octet_length(e.payload) AS bytes_before
    FROM __SCHEMA__.events e
    WHERE e.stream_id = $1 AND e.version >= $2
    ORDER BY e.version
    LIMIT $3
) x
WHERE x.bytes_before <= $4
ORDER BY x.version
