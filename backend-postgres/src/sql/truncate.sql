-- Hides the events of stream $1 below version $2, in one statement. A stream without events
-- (no row, or state 0) has nothing to hide. A tombstone, and a head that no write stores (a
-- state that is no state, a negative version, a version behind the last stored event:
-- backend::checked_head makes the same decision and names it), are left as they are. The one row answered (NULL state and version when the stream has no row)
-- carries what the client needs to say why nothing was written.
WITH cur AS (
    SELECT s.state, s.version,
           (SELECT coalesce(max(e.version), 0) FROM __SCHEMA__.events e WHERE e.stream_id = $1) AS last
    FROM (VALUES (1)) AS one (x)
    LEFT JOIN __SCHEMA__.streams s ON s.stream_id = $1
),
upd AS (
    UPDATE __SCHEMA__.streams s SET visible_from = greatest(s.visible_from, $2)
    FROM cur
    WHERE s.stream_id = $1 AND cur.state IN (1, 2) AND cur.version >= 0
      AND cur.version >= cur.last
    RETURNING 1
)
SELECT state, version, last FROM cur
