-- json_i64 without a plpgsql EXCEPTION block: that block opened a subtransaction for every
-- row an integer index was computed on (a commit of 500 documents with one integer index
-- spent most of its time there). Same results: the integer a JSON number holds when it is an
-- integer within bigint, else NULL. A SQL function is inlined into index expressions and
-- queries alike, so existing indexes stay valid (equal values for every input).
-- Nested CASEs because AND does not fix the order its operands run in.
CREATE OR REPLACE FUNCTION __SCHEMA__.json_i64(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN
        CASE WHEN (v #>> '{}') ~ '^-?[0-9]+$' THEN
            CASE WHEN (v #>> '{}')::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
                 THEN (v #>> '{}')::bigint
            END
        END
    END
$$;
