-- A stream's head under its lock (taken by the statement before, so this one's snapshot sees
-- every commit before it), with the last version stored in its events: a call that writes
-- checks the two agree (backend::checked_head). One row, with a NULL state and version when
-- the stream has no row. FOR UPDATE: a truncation, which does not take the stream lock,
-- waits for the caller's commit before it changes the row.
WITH head AS (
    SELECT s.state, s.version FROM __SCHEMA__.streams s WHERE s.stream_id = $1 FOR UPDATE
)
SELECT (SELECT state FROM head) AS state,
       (SELECT version FROM head) AS version,
       (SELECT coalesce(max(e.version), 0) FROM __SCHEMA__.events e WHERE e.stream_id = $1) AS last
