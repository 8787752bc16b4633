-- Stream locks are per schema.
--
-- Every append, delete, truncation and import took pg_advisory_xact_lock(hashtextextended(
-- stream_id, 0)). Advisory locks belong to the database, not to a schema, so two stores in one
-- database (two applications, two tests) that use the same stream id took the same lock: their
-- appends queued behind each other, and a transaction held open in one stalled the other. The
-- key is now the stream id hashed with a seed made from the schema's name.
--
-- Every holder of a stream lock changes at once, in this migration's transaction: both append
-- functions here, and the client's delete, truncation and import, which call stream_lock_key
-- too. Clients of the previous release still take the old key for delete, truncation and
-- import (their appends go through the functions below); run those after the upgrade.

-- The stream's lock key. An inlined SQL function: the seed is a constant folded at plan time,
-- so it costs the append nothing over the bare hashtextextended.
CREATE FUNCTION __SCHEMA__.stream_lock_key(p_stream text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended(p_stream, hashtext('__SCHEMA__'))
$$;

-- The eighth migration's append_events, taking the new key (nothing else changes).
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
    v_ok boolean;
    r record;
BEGIN
    -- Before anything assigns a transaction id: within a stream, tx_id order is commit order.
    PERFORM pg_advisory_xact_lock(__SCHEMA__.stream_lock_key(p_stream));
    IF v_n > 0 THEN
        UPDATE __SCHEMA__.streams s SET state = 1, version = s.version + v_n, bytes = s.bytes + p_bytes
        WHERE s.stream_id = p_stream AND s.state IN (1, 2)
          AND s.version <= 9223372036854775807 - v_n
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
        IF NOT FOUND OR v_state = 0 THEN
            v_state := 0;
            v_version := coalesce(v_version, 0);
        END IF;
        IF v_state = 3 THEN
            RAISE EXCEPTION 'stream is deleted' USING ERRCODE = 'CQ003';
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

-- The sixth migration's append, for clients of the previous release: it now runs
-- append_events, so both releases take the same lock and make the same decisions.
CREATE OR REPLACE FUNCTION __SCHEMA__.append(
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
    p_bytes bigint,
    OUT outcome smallint,
    OUT state smallint,
    OUT current_version bigint,
    OUT first_version bigint,
    OUT last_version bigint,
    OUT tx_id bigint,
    OUT seq bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    a bigint[];
BEGIN
    a := __SCHEMA__.append_events(p_stream, p_expected_kind, p_expected, p_ids, p_types,
                                  p_schema_versions, p_content_types, p_encodings, p_metadata,
                                  p_payloads, p_bytes);
    outcome := a[1];
    state := a[2];
    current_version := a[3];
    first_version := a[4];
    last_version := a[5];
    tx_id := a[6];
    seq := a[7];
END;
$$;
