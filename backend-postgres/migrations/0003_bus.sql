-- The outbox event bus (DESIGN.md section 5): messages in an outbox table read under the same
-- transaction-id horizon as the event log, per-group offsets and ownership leases, pending
-- state, parked keys and dead letters. __SCHEMA__ is replaced by the quoted schema name.
-- Times are integer milliseconds of the database clock (clock_timestamp()).

CREATE SEQUENCE __SCHEMA__.outbox_seq;

-- One row per message. Read per (topic, partition) in (tx_id, seq) order, only below
-- pg_snapshot_xmin(pg_current_snapshot()), so a writer still in flight is never skipped.
CREATE TABLE __SCHEMA__.outbox (
    topic text COLLATE "C" NOT NULL,
    partition integer NOT NULL,
    key text COLLATE "C" NOT NULL,
    priority smallint NOT NULL,
    id uuid NOT NULL,
    headers text NOT NULL,
    content_type text NOT NULL,
    payload bytea NOT NULL,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq bigint NOT NULL DEFAULT nextval('__SCHEMA__.outbox_seq'),
    published_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_id_key UNIQUE (id)
);
CREATE INDEX outbox_read_idx ON __SCHEMA__.outbox (topic, partition, tx_id, seq);
-- For the notifier's "rows above the horizon?" probe (the newest tx ids only).
CREATE INDEX outbox_tx_idx ON __SCHEMA__.outbox (tx_id);

-- Messages trimmed per topic, so `published` still counts them.
CREATE TABLE __SCHEMA__.bus_topics (
    topic text COLLATE "C" PRIMARY KEY,
    trimmed bigint NOT NULL DEFAULT 0
);

-- Per group and partition: the offset (every row at or below (floor_tx, floor_seq) is
-- settled for the group) and the ownership lease (owner: a subscription's incarnation id;
-- epoch: bumped on every takeover and checked by every write of the owner).
CREATE TABLE __SCHEMA__.bus_partitions (
    topic text COLLATE "C" NOT NULL,
    grp text COLLATE "C" NOT NULL,
    partition integer NOT NULL,
    floor_tx xid8 NOT NULL,
    floor_seq bigint NOT NULL,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, grp, partition)
);

-- Live consumers of a group (liveness renewed by each consumer's heartbeat).
CREATE TABLE __SCHEMA__.bus_members (
    topic text COLLATE "C" NOT NULL,
    grp text COLLATE "C" NOT NULL,
    consumer text COLLATE "C" NOT NULL,
    incarnation text NOT NULL,
    alive_until bigint NOT NULL,
    PRIMARY KEY (topic, grp, consumer)
);

-- Per-group state of rows above the floor: our attempt counter, the claim (consumer and its
-- expiry), the retry due time, and `done` for a row settled out of order.
CREATE TABLE __SCHEMA__.bus_pending (
    topic text COLLATE "C" NOT NULL,
    grp text COLLATE "C" NOT NULL,
    partition integer NOT NULL,
    tx_id xid8 NOT NULL,
    seq bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    consumer text,
    claim_expires bigint,
    due_at bigint,
    first_at bigint,
    last_error text,
    done boolean NOT NULL DEFAULT false,
    PRIMARY KEY (topic, grp, partition, tx_id, seq)
);

-- Keys whose message was dead-lettered: later messages of the key are parked behind it.
CREATE TABLE __SCHEMA__.bus_parked (
    topic text COLLATE "C" NOT NULL,
    grp text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    partition integer NOT NULL,
    behind uuid NOT NULL,
    PRIMARY KEY (topic, grp, key)
);

-- Dead letters, with a copy of the row (the outbox row may be trimmed later). reason:
-- max_attempts, permanent, undecodable, parked.
CREATE TABLE __SCHEMA__.bus_dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text COLLATE "C" NOT NULL,
    grp text COLLATE "C" NOT NULL,
    partition integer NOT NULL,
    entry text NOT NULL,
    key text NOT NULL,
    priority smallint NOT NULL,
    headers text NOT NULL,
    content_type text NOT NULL,
    payload bytea NOT NULL,
    -- The outbox row's id; the dead letter shows it as original_id when the row decodes.
    msg_id uuid NOT NULL,
    reason text NOT NULL,
    error text,
    behind uuid,
    attempts integer NOT NULL,
    at_ms bigint NOT NULL
);
CREATE INDEX bus_dead_letters_group_idx ON __SCHEMA__.bus_dead_letters (topic, grp, id);

-- One consumer's heartbeat and rebalance, in one round trip. Renews its membership (raises
-- CQ101 if it was replaced), expires dead members, renews its leases and claims, and (when
-- p_take) takes the free or expired partitions assigned to it: partition p belongs to the
-- member at index p % n of the live members ordered by name. The group's partition rows are
-- locked in partition order first, so concurrent rebalances neither deadlock nor both take a
-- partition. Returns the partitions it owns and the assignment (n, index).
CREATE FUNCTION __SCHEMA__.bus_rebalance(
    p_topic text,
    p_grp text,
    p_consumer text,
    p_owner text,
    p_ack_ms bigint,
    p_take boolean
) RETURNS TABLE (
    parts integer[],
    epochs bigint[],
    floors_tx text[],
    floors_seq bigint[],
    members integer,
    me integer
)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_n integer;
    v_me integer;
BEGIN
    PERFORM 1 FROM __SCHEMA__.bus_partitions b
    WHERE b.topic = p_topic AND b.grp = p_grp ORDER BY b.partition FOR UPDATE;
    UPDATE __SCHEMA__.bus_members m SET alive_until = v_now + p_ack_ms
    WHERE m.topic = p_topic AND m.grp = p_grp AND m.consumer = p_consumer AND m.incarnation = p_owner;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer % was replaced or removed', p_consumer USING ERRCODE = 'CQ101';
    END IF;
    DELETE FROM __SCHEMA__.bus_members m
    WHERE m.topic = p_topic AND m.grp = p_grp AND m.alive_until < v_now;
    SELECT count(*), count(*) FILTER (WHERE m.consumer < p_consumer) INTO v_n, v_me
    FROM __SCHEMA__.bus_members m WHERE m.topic = p_topic AND m.grp = p_grp;
    UPDATE __SCHEMA__.bus_partitions b SET expires_at = v_now + p_ack_ms
    WHERE b.topic = p_topic AND b.grp = p_grp AND b.owner = p_owner;
    UPDATE __SCHEMA__.bus_pending q SET claim_expires = v_now + p_ack_ms
    WHERE q.topic = p_topic AND q.grp = p_grp AND q.consumer = p_consumer AND q.claim_expires IS NOT NULL;
    IF p_take THEN
        UPDATE __SCHEMA__.bus_partitions b
        SET owner = p_owner, epoch = b.epoch + 1, expires_at = v_now + p_ack_ms
        WHERE b.topic = p_topic AND b.grp = p_grp AND b.partition % greatest(v_n, 1) = v_me
          AND (b.owner IS NULL OR b.expires_at < v_now);
    END IF;
    RETURN QUERY
    SELECT coalesce(array_agg(b.partition ORDER BY b.partition), '{}'),
           coalesce(array_agg(b.epoch ORDER BY b.partition), '{}'),
           coalesce(array_agg(b.floor_tx::text ORDER BY b.partition), '{}'),
           coalesce(array_agg(b.floor_seq ORDER BY b.partition), '{}'),
           v_n, v_me
    FROM __SCHEMA__.bus_partitions b
    WHERE b.topic = p_topic AND b.grp = p_grp AND b.owner = p_owner;
END;
$$;

-- Hands partitions back (p_parts NULL: all of the owner's) and ends their claims; with
-- p_leave also removes the member. Locks in partition order, as bus_rebalance does.
CREATE FUNCTION __SCHEMA__.bus_release(
    p_topic text,
    p_grp text,
    p_consumer text,
    p_owner text,
    p_parts integer[],
    p_leave boolean
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_released integer[];
BEGIN
    PERFORM 1 FROM __SCHEMA__.bus_partitions b
    WHERE b.topic = p_topic AND b.grp = p_grp ORDER BY b.partition FOR UPDATE;
    WITH r AS (
        UPDATE __SCHEMA__.bus_partitions b SET owner = NULL, expires_at = 0
        WHERE b.topic = p_topic AND b.grp = p_grp AND b.owner = p_owner
          AND (p_parts IS NULL OR b.partition = ANY (p_parts))
        RETURNING b.partition
    )
    SELECT coalesce(array_agg(r.partition), '{}') INTO v_released FROM r;
    UPDATE __SCHEMA__.bus_pending q SET consumer = NULL, claim_expires = NULL
    WHERE q.topic = p_topic AND q.grp = p_grp AND q.partition = ANY (v_released);
    IF p_leave THEN
        DELETE FROM __SCHEMA__.bus_members m
        WHERE m.topic = p_topic AND m.grp = p_grp AND m.consumer = p_consumer AND m.incarnation = p_owner;
    END IF;
    RETURN cardinality(v_released);
END;
$$;
