-- A corrupt stream head refuses appends, and nothing is written.
--
-- A head changed at rest (an operator's UPDATE, a bad restore) was written through. With a
-- negative version the fast path stored the event at the next negative version, and every
-- reader of the log then failed on that row. With a state code that is no state (not 0 to 3)
-- the full path's upsert overwrote it and appended. Now:
--
-- * The fast path's update also requires a version of at least 0 (one more comparison on
--   the row it already has; the statement of append_one.sql does the same), so any other
--   head takes the full path.
-- * The full path raises CQ005 (stream head corrupt) before it writes, for a state that is
--   no state, for a negative version (a tombstone stays CQ003 whatever its version: it is
--   never written to), and for state 0 (set by an operator, only on a stream without
--   events: set_stream_state refuses it otherwise) over a version or events, which the
--   ninth migration's function appended after as if the stream were new.
-- * A head behind its last stored event whose expectation holds fails on
--   events_stream_version_key, as before; the client now maps that to Corrupt (every writer
--   of events holds the stream lock and reads the head after taking it, so no race takes a
--   version first). When the expectation does not hold, the conflict would send the caller
--   to reload and retry forever, so before answering a conflict the full path compares the
--   head with the last stored version (one probe of the stream's index, on the conflict
--   branch only) and raises CQ005 if it is behind.
--
-- Nothing else changes. `append` (for clients of the sixth migration's release) runs this
-- function, so it refuses the same heads.

-- expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exact (expected_version).
-- outcome: 0 written, 1 already committed (idempotent re-send), 2 empty, 3 conflict. Raises
-- CQ002 (idempotency mismatch), CQ003 (stream deleted), CQ004 (a version beyond bigint) and
-- CQ005 (corrupt head).

CREATE OR REPLACE FUNCTION __SCHEMA__.append_events(
    p_stream text,
    p_expected_kind smallint,
    p_expected bigint,
    p_ids uuid[],
    p_types text[],
    p_schema_versions bigint[],
    p_content_types text[],
    p_encodings text[],
    p_metadata text[],
    p_payloads bytea[],
    p_bytes bigint
)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint := coalesce(cardinality(p_ids), 0);
    v_state smallint;
    v_version bigint;
    v_last bigint;
    v_stored bigint;
    v_ok boolean;
    r record;
BEGIN
    -- Before anything assigns a transaction id: within a stream, tx_id order is commit order.
    PERFORM pg_advisory_xact_lock(__SCHEMA__.stream_lock_key(p_stream));
    IF v_n > 0 THEN
        UPDATE __SCHEMA__.streams s SET state = 1, version = s.version + v_n, bytes = s.bytes + p_bytes
        WHERE s.stream_id = p_stream AND s.state IN (1, 2)
          AND s.version >= 0 AND s.version <= 9223372036854775807 - v_n
          AND CASE p_expected_kind
                WHEN 0 THEN true
                WHEN 1 THEN s.state = 2
                WHEN 2 THEN s.state = 1
                ELSE s.version = p_expected
              END
        RETURNING s.version INTO v_last;
    END IF;
    IF v_last IS NULL THEN
        -- The full path: a new stream, a conflict, a re-send, a tombstone, an empty batch.
        SELECT s.state, s.version INTO v_state, v_version
        FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream;
        IF NOT FOUND THEN
            v_state := 0;
            v_version := 0;
        ELSIF v_state = 0 THEN
            -- Only an operator sets state 0, and only on a stream without events; a rare
            -- row, so the probe costs no append of a live stream anything.
            SELECT coalesce(max(e.version), 0) INTO v_stored
            FROM __SCHEMA__.events e WHERE e.stream_id = p_stream;
            IF v_version <> 0 OR v_stored <> 0 THEN
                RAISE EXCEPTION 'its head has state 0 (no stream) at version %, over events up to version %',
                    v_version, v_stored USING ERRCODE = 'CQ005';
            END IF;
        END IF;
        IF v_state NOT IN (0, 1, 2, 3) THEN
            RAISE EXCEPTION 'its head has state %, which is no stream state (0 to 3)', v_state
                USING ERRCODE = 'CQ005';
        END IF;
        IF v_state = 3 THEN
            RAISE EXCEPTION 'stream is deleted' USING ERRCODE = 'CQ003';
        END IF;
        IF v_version < 0 THEN
            RAISE EXCEPTION 'its head has version %, below 0', v_version USING ERRCODE = 'CQ005';
        END IF;
        IF v_n > 0 AND v_state <> 0 THEN
            SELECT * INTO r FROM __SCHEMA__.append_resend(p_stream, p_ids);
            IF r.outcome IS NOT NULL THEN
                RETURN ARRAY[r.outcome, r.state, r.current_version, r.first_version, r.last_version,
                             r.tx_id, r.seq];
            END IF;
        END IF;
        v_ok := CASE p_expected_kind
            WHEN 0 THEN true
            WHEN 1 THEN v_state IN (0, 2)
            WHEN 2 THEN v_state = 1
            ELSE v_state IN (1, 2) AND v_version = p_expected
        END;
        IF NOT v_ok THEN
            SELECT coalesce(max(e.version), 0) INTO v_stored
            FROM __SCHEMA__.events e WHERE e.stream_id = p_stream;
            IF v_version < v_stored THEN
                RAISE EXCEPTION 'its head is at version %, behind its last stored event (version %)',
                    v_version, v_stored USING ERRCODE = 'CQ005';
            END IF;
            RETURN ARRAY[3, v_state, v_version, NULL, NULL, NULL, NULL];
        END IF;
        IF v_version > 9223372036854775807 - v_n THEN
            RAISE EXCEPTION 'the batch''s last version would exceed the largest bigint' USING ERRCODE = 'CQ004';
        END IF;
        IF v_n = 0 THEN
            RETURN ARRAY[2, v_state, v_version, v_version + 1, v_version, NULL, NULL];
        END IF;
        v_last := v_version + v_n;
        INSERT INTO __SCHEMA__.streams AS s (stream_id, state, version, bytes)
        VALUES (p_stream, 1, v_last, p_bytes)
        ON CONFLICT (stream_id) DO UPDATE SET state = 1, version = v_last, bytes = s.bytes + p_bytes;
    END IF;
    IF v_n = 1 THEN
        INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                                       content_type, content_encoding, metadata, payload)
        VALUES (p_stream, v_last, p_ids[1], p_types[1], p_schema_versions[1], p_content_types[1],
                p_encodings[1], p_metadata[1], p_payloads[1]);
    ELSE
        INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                                       content_type, content_encoding, metadata, payload)
        SELECT p_stream, v_last - v_n + u.ord, u.id, u.ty, u.sv, u.ct, u.ce, u.md, u.pl
        FROM unnest(p_ids, p_types, p_schema_versions, p_content_types, p_encodings, p_metadata, p_payloads)
             WITH ORDINALITY AS u(id, ty, sv, ct, ce, md, pl, ord)
        ORDER BY u.ord;
    END IF;
    RETURN ARRAY[0, 1, v_last, v_last - v_n + 1, v_last, pg_current_xact_id()::text::bigint,
                 currval('__SCHEMA__.events_seq')];
END;
$$;
