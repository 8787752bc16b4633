-- The event store: streams, events in a gap-free (tx_id, seq) log, the store identity.
-- __SCHEMA__ is replaced by the quoted, validated schema name.

CREATE TABLE __SCHEMA__.meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id uuid NOT NULL,
    epoch bigint NOT NULL DEFAULT 1
);
INSERT INTO __SCHEMA__.meta (store_id) VALUES (gen_random_uuid());

-- state: 0 missing (operator-set), 1 live, 2 soft-deleted, 3 tombstoned.
CREATE TABLE __SCHEMA__.streams (
    stream_id text COLLATE "C" PRIMARY KEY,
    state smallint NOT NULL,
    version bigint NOT NULL,
    visible_from bigint NOT NULL DEFAULT 1
);

CREATE SEQUENCE __SCHEMA__.events_seq;

CREATE TABLE __SCHEMA__.events (
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq bigint NOT NULL DEFAULT nextval('__SCHEMA__.events_seq'),
    stream_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    schema_version bigint NOT NULL,
    content_type text NOT NULL,
    content_encoding text NOT NULL,
    metadata text NOT NULL,
    payload bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
CREATE INDEX events_tx_seq_idx ON __SCHEMA__.events (tx_id, seq);

-- Operators see JSON payloads as jsonb; a row that does not cast shows NULL.
CREATE FUNCTION __SCHEMA__.payload_jsonb(payload bytea, content_type text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF content_type <> 'json' THEN
        RETURN NULL;
    END IF;
    RETURN convert_from(payload, 'UTF8')::jsonb;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END;
$$;

CREATE VIEW __SCHEMA__.events_json AS
SELECT tx_id, seq, stream_id, version, event_id, event_type, schema_version, content_type,
       content_encoding, metadata, __SCHEMA__.payload_jsonb(payload, content_type) AS payload,
       recorded_at
FROM __SCHEMA__.events;

-- One append, one round trip. Takes the stream's advisory lock before anything assigns a
-- transaction id (so within a stream, tx_id order is commit order), then decides exactly as
-- cqrs_core::decide_append: tombstone, idempotency (per stream), expectation, write.
-- expected_kind: 0 any, 1 no stream, 2 stream exists, 3 exact (expected_version).
-- outcome: 0 written, 1 already committed (idempotent re-send), 2 empty, 3 conflict.
-- Raises CQ002 (idempotency mismatch), CQ003 (stream deleted) and CQ004 (a version beyond
-- bigint); a duplicate event id of
-- another stream fails on events_event_id_key.
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
    p_payloads bytea[]
) RETURNS TABLE (
    outcome smallint,
    state smallint,
    current_version bigint,
    first_version bigint,
    last_version bigint,
    tx_id bigint,
    seq bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    v_state smallint;
    v_version bigint;
    v_n bigint := coalesce(cardinality(p_ids), 0);
    v_hits bigint;
    v_spread bigint;
    v_first bigint;
    v_last bigint;
    v_ok boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_stream, 0));
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
        -- Fast path: one indexed probe; the ordinal check runs only when some id is there.
        PERFORM 1 FROM __SCHEMA__.events e WHERE e.event_id = ANY (p_ids) AND e.stream_id = p_stream;
        IF FOUND THEN
            SELECT count(e.version), max(e.version - u.ord) - min(e.version - u.ord),
                   min(e.version) FILTER (WHERE u.ord = 1), max(e.version) FILTER (WHERE u.ord = v_n)
            INTO v_hits, v_spread, v_first, v_last
            FROM unnest(p_ids) WITH ORDINALITY AS u(id, ord)
            LEFT JOIN __SCHEMA__.events e ON e.event_id = u.id AND e.stream_id = p_stream;
            IF v_hits > 0 THEN
                IF v_hits < v_n THEN
                    RAISE EXCEPTION '% of % event ids are already committed; the batch is neither new nor a re-send', v_hits, v_n
                        USING ERRCODE = 'CQ002';
                END IF;
                IF v_spread <> 0 THEN
                    RAISE EXCEPTION 'the event ids are committed, but not in this order' USING ERRCODE = 'CQ002';
                END IF;
                RETURN QUERY
                SELECT 1::smallint, v_state, v_version, v_first, v_last, e.tx_id::text::bigint, e.seq
                FROM __SCHEMA__.events e WHERE e.stream_id = p_stream AND e.version = v_last;
                RETURN;
            END IF;
        END IF;
    END IF;
    v_ok := CASE p_expected_kind
        WHEN 0 THEN true
        WHEN 1 THEN v_state IN (0, 2)
        WHEN 2 THEN v_state = 1
        ELSE v_state IN (1, 2) AND v_version = p_expected
    END;
    IF NOT v_ok THEN
        RETURN QUERY SELECT 3::smallint, v_state, v_version, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF v_version > 9223372036854775807 - v_n THEN
        RAISE EXCEPTION 'the batch''s last version would exceed the largest bigint' USING ERRCODE = 'CQ004';
    END IF;
    IF v_n = 0 THEN
        RETURN QUERY SELECT 2::smallint, v_state, v_version, v_version + 1, v_version, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version,
                                   content_type, content_encoding, metadata, payload)
    SELECT p_stream, v_version + u.ord, u.id, u.ty, u.sv, u.ct, u.ce, u.md, u.pl
    FROM unnest(p_ids, p_types, p_schema_versions, p_content_types, p_encodings, p_metadata, p_payloads)
         WITH ORDINALITY AS u(id, ty, sv, ct, ce, md, pl, ord)
    ORDER BY u.ord;
    INSERT INTO __SCHEMA__.streams AS s (stream_id, state, version)
    VALUES (p_stream, 1, v_version + v_n)
    ON CONFLICT (stream_id) DO UPDATE SET state = 1, version = v_version + v_n;
    RETURN QUERY SELECT 0::smallint, 1::smallint, v_version + v_n, v_version + 1, v_version + v_n,
                        pg_current_xact_id()::text::bigint, currval('__SCHEMA__.events_seq');
END;
$$;

CREATE TABLE __SCHEMA__.snapshots (
    stream_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    schema_revision bigint NOT NULL,
    payload bytea NOT NULL,
    content_type text NOT NULL,
    content_encoding text NOT NULL,
    taken_at bigint NOT NULL,
    PRIMARY KEY (stream_id, version)
);
