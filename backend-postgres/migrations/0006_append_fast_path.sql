-- A faster append with the same decisions as the first migration's.
--
-- The common append (a live or soft-deleted stream whose expectation holds) now runs three
-- statements: the advisory lock, one UPDATE of the stream row that both checks the expectation
-- and moves the version, and the INSERT. The idempotency probe of every event id moved off that
-- path: a re-send whose expectation still holds (say `Any`) collides with events_event_id_key,
-- and the client then asks append_resend, which decides exactly as the probe did. Every other
-- case (new stream, conflict, tombstone, overflow, empty batch) takes the full path below,
-- which probes before it checks the expectation, so idempotency still comes first.
-- One record instead of a set: no tuplestore per call.
--
-- Streams also keep the sum of their payload bytes, so a read of a stream that fits the byte
-- limit is one plain index range scan. Finding the cut on narrow rows first (read_stream.sql)
-- reads every row twice: a 10,000-event load spent about half its time in that pass.
--
-- `bytes` is an upper bound of the payload bytes the stream holds (soft-deleted events still
-- count), NULL where unknown; readers take the two-pass read for NULL or for more than their
-- limit. Appends add the batch's bytes (p_bytes, computed by the client: a wrong figure only
-- makes the server send more or less than the limit before the client cuts the page);
-- imports recount the stream.

ALTER TABLE __SCHEMA__.streams ADD COLUMN bytes bigint;
UPDATE __SCHEMA__.streams s
SET bytes = coalesce((SELECT sum(octet_length(e.payload)) FROM __SCHEMA__.events e
                      WHERE e.stream_id = s.stream_id), 0);

DROP FUNCTION __SCHEMA__.append(text, smallint, bigint, uuid[], text[], bigint[], text[], text[], text[], bytea[]);

-- Whether p_ids are already committed in p_stream, in order: outcome 1 with the positions
-- of that commit if all are; NULL outcome if none is; CQ002 if only some are, or out of order.
CREATE FUNCTION __SCHEMA__.append_resend(
    p_stream text,
    p_ids uuid[],
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
    v_n bigint := coalesce(cardinality(p_ids), 0);
    v_hits bigint;
    v_spread bigint;
BEGIN
    PERFORM 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_ids) AND e.stream_id = p_stream;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT count(e.version), max(e.version - u.ord) - min(e.version - u.ord),
           min(e.version) FILTER (WHERE u.ord = 1), max(e.version) FILTER (WHERE u.ord = v_n)
    INTO v_hits, v_spread, first_version, last_version
    FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
    LEFT JOIN __SCHEMA__.events e ON e.event_id = u.id AND e.stream_id = p_stream;
    IF v_hits < v_n THEN
        RAISE EXCEPTION '% of % event ids are already committed; the batch is neither new nor a re-send', v_hits, v_n
            USING ERRCODE = 'CQ002';
    END IF;
    IF v_spread <> 0 THEN
        RAISE EXCEPTION 'the event ids are committed, but not in this order' USING ERRCODE = 'CQ002';
    END IF;
    SELECT s.state, s.version INTO state, current_version
    FROM __SCHEMA__.streams s WHERE s.stream_id = p_stream;
    SELECT e.tx_id::text::bigint, e.seq INTO tx_id, seq
    FROM __SCHEMA__.events e WHERE e.stream_id = p_stream AND e.version = last_version;
    outcome := 1;
END;
$$;

-- expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exact (expected_version).
-- outcome: 0 written, 1 already committed (idempotent re-send), 2 empty, 3 conflict.
-- Raises CQ002 (idempotency mismatch), CQ003 (stream deleted) and CQ004 (a version beyond
-- bigint); a duplicate event id fails on events_event_id_key (the caller then asks
-- append_resend whether it was a re-send).
CREATE FUNCTION __SCHEMA__.append(
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
    v_n bigint := coalesce(cardinality(p_ids), 0);
    v_state smallint;
    v_version bigint;
    v_ok boolean;
BEGIN
    -- Before anything assigns a transaction id: within a stream, tx_id order is commit order.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream, 0));
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
        RETURNING s.version INTO last_version;
        IF FOUND THEN
            INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                                           content_type, content_encoding, metadata, payload)
            SELECT p_stream, last_version - v_n + u.ord, u.id, u.ty, u.sv, u.ct, u.ce, u.md, u.pl
            FROM unnest(p_ids, p_types, p_schema_versions, p_content_types, p_encodings, p_metadata, p_payloads)
                 WITH ORDINALITY AS u(id, ty, sv, ct, ce, md, pl, ord)
            ORDER BY u.ord;
            outcome := 0;
            state := 1;
            current_version := last_version;
            first_version := last_version - v_n + 1;
            tx_id := pg_current_xact_id()::text::bigint;
            seq := currval('__SCHEMA__.events_seq');
            RETURN;
        END IF;
    END IF;
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
        SELECT * INTO outcome, state, current_version, first_version, last_version, tx_id, seq
        FROM __SCHEMA__.append_resend(p_stream, p_ids);
        IF outcome IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    v_ok := CASE p_expected_kind
        WHEN 0 THEN true
        WHEN 1 THEN v_state IN (0, 2)
        WHEN 2 THEN v_state = 1
        ELSE v_state IN (1, 2) AND v_version = p_expected
    END;
    state := v_state;
    current_version := v_version;
    IF NOT v_ok THEN
        outcome := 3;
        RETURN;
    END IF;
    IF v_version > 9223372036854775807 - v_n THEN
        RAISE EXCEPTION 'the batch''s last version would exceed the largest bigint' USING ERRCODE = 'CQ004';
    END IF;
    IF v_n = 0 THEN
        outcome := 2;
        first_version := v_version + 1;
        last_version := v_version;
        RETURN;
    END IF;
    INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                                   content_type, content_encoding, metadata, payload)
    SELECT p_stream, v_version + u.ord, u.id, u.ty, u.sv, u.ct, u.ce, u.md, u.pl
    FROM unnest(p_ids, p_types, p_schema_versions, p_content_types, p_encodings, p_metadata, p_payloads)
         WITH ORDINALITY AS u(id, ty, sv, ct, ce, md, pl, ord)
    ORDER BY u.ord;
    INSERT INTO __SCHEMA__.streams AS s (stream_id, state, version, bytes)
    VALUES (p_stream, 1, v_version + v_n, p_bytes)
    ON CONFLICT (stream_id) DO UPDATE SET state = 1, version = v_version + v_n, bytes = s.bytes + p_bytes;
    outcome := 0;
    state := 1;
    current_version := v_version + v_n;
    first_version := v_version + 1;
    last_version := v_version + v_n;
    tx_id := pg_current_xact_id()::text::bigint;
    seq := currval('__SCHEMA__.events_seq');
END;
$$;
