-- State store, read models, checkpoints and leases.

CREATE TABLE __SCHEMA__.states (
    kind text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE TABLE __SCHEMA__.documents (
    collection text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    body jsonb NOT NULL,
    expires_at bigint,
    PRIMARY KEY (collection, id)
);
CREATE INDEX documents_expiry_idx ON __SCHEMA__.documents (collection, expires_at)
    WHERE expires_at IS NOT NULL;

-- ty: 0 i64, 1 str, 2 bool, 3 time.
CREATE TABLE __SCHEMA__.indexes (
    collection text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    ty smallint NOT NULL,
    index_name text NOT NULL,
    PRIMARY KEY (collection, field)
);

CREATE TABLE __SCHEMA__.checkpoints (
    name text COLLATE "C" PRIMARY KEY,
    checkpoint text NOT NULL
);

CREATE TABLE __SCHEMA__.leases (
    name text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    epoch bigint NOT NULL,
    expires_at bigint NOT NULL
);

-- Typed index expressions: NULL for a value of another type, never an error, so an index
-- on one collection's field cannot break writes to another collection.
CREATE FUNCTION __SCHEMA__.json_i64(v jsonb) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF jsonb_typeof(v) IS DISTINCT FROM 'number' THEN
        RETURN NULL;
    END IF;
    RETURN (v #>> '{}')::bigint;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END;
$$;

CREATE FUNCTION __SCHEMA__.json_bool(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'boolean' THEN (v #>> '{}')::boolean END
$$;

CREATE FUNCTION __SCHEMA__.json_str(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' END
$$;
