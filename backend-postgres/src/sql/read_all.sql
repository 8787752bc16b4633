-- One statement, one snapshot: rows below the xmin horizon after the checkpoint, scanned up
-- to $3 rows, then filtered ($4 stream prefix, $5 event types), at most $6 hits and about
-- $7 payload bytes. Every scanned row comes back in order, a refused one without its data, so
-- `next` can move past rows the filter refused; `cut` marks the rows past the hit or byte
-- limit (a suffix: the client stops at the first one). Rows stream out as the window
-- produces them, so the client decodes a page while the server is still reading it.
--
-- Quarantine (Admin::quarantine, migration 0011): a scanned row whose position an operator
-- set aside comes back with `held` true and `hit` NULL, whatever the filter or its stream's
-- visibility: NULL is not true, so it counts toward no limit and comes back without metadata
-- or payload, and the client reads only its position (the rest may be what is corrupt).
-- Otherwise `hit` is never NULL (every term of it is non-null for the client's binds). The
-- table is usually empty, and then costs one EXISTS per statement (`any_held`, in h) and a
-- test of that flag per row: a separate `held` column computed in the scan cost 7-10% more
-- server CPU on a page of 1000 (a projection of every scanned row, or a second test per row).
-- While anything is quarantined, every scanned row probes the quarantine's primary key.
--
-- Visibility: only streams in streams_hidden_idx (not live, or revived after a delete or a
-- truncation) are looked up, behind a hash of that index built once per statement. Joining
-- every row to its stream cost as much as the scan and forced a sort. If very many streams
-- are hidden the planner probes the partial index per row instead of hashing it.
--
-- One window pass counts hits and bytes. Large payloads stay TOAST pointers until sent
-- (octet_length does not detoast them), so a page is cut by bytes before anything big is
-- read. `hits_upto + 0`: PostgreSQL 15 fails to plan a window filter it pushes down as a run
-- condition ("WindowFunc not found in subplan target lists").
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(s) AS horizon,
           pg_snapshot_xmax(s)::text::bigint - pg_snapshot_xmin(s)::text::bigint AS lag,
           EXISTS (SELECT 1 FROM __SCHEMA__.quarantine) AS any_held
    FROM (SELECT pg_current_snapshot() AS s) snap
),
scan AS (
    SELECT e.*,
           CASE WHEN (SELECT any_held FROM h)
                     AND EXISTS (SELECT 1 FROM __SCHEMA__.quarantine q
                                 WHERE q.tx_id = e.tx_id AND q.seq = e.seq)
                THEN NULL
                ELSE CASE WHEN e.stream_id IN (SELECT x.stream_id FROM __SCHEMA__.streams x
                                               WHERE x.state <> 1 OR x.visible_from > 1)
                          THEN coalesce((SELECT st.state = 1 AND e.version >= st.visible_from
                                         FROM __SCHEMA__.streams st WHERE st.stream_id = e.stream_id),
                                        false)
                          ELSE true
                     END
                     AND ($4::text IS NULL OR starts_with(e.stream_id, $4::text COLLATE "C"))
                     AND (cardinality($5::text[]) = 0 OR e.event_type = ANY ($5::text[]))
           END AS hit
    FROM (
        SELECT * FROM __SCHEMA__.events e
        WHERE (e.tx_id, e.seq) > ($1::text::xid8, $2::bigint)
          -- Implied by the line above; a range gives the generic plan a small row estimate,
          -- so PostgreSQL keeps one plan for every page instead of planning each page anew
          -- (0.46 ms of a 1.6 ms page of 1000 events). The plan test checks that plan.
          AND e.tx_id >= $1::text::xid8
          AND e.tx_id < (SELECT horizon FROM h)
        ORDER BY e.tx_id, e.seq
        LIMIT $3
    ) e
    -- A fence: without it the planner inlines `hit` into each of its four uses (two window
    -- filters, bytes_before, the output), evaluating it four times per row and building the
    -- hidden-streams hash four times per statement. The ORDER BY keeps the scan's order
    -- known above the fence, so no sort is added.
    ORDER BY e.tx_id, e.seq
    OFFSET 0
),
ranked AS (
    SELECT s.*,
           count(*) FILTER (WHERE s.hit) OVER w AS hits_upto,
           coalesce(sum(octet_length(s.payload)) FILTER (WHERE s.hit) OVER w, 0)
               - CASE WHEN s.hit THEN octet_length(s.payload) ELSE 0 END AS bytes_before
    FROM scan s
    WINDOW w AS (ORDER BY s.tx_id, s.seq ROWS UNBOUNDED PRECEDING)
)
SELECT r.tx_id AS tx, r.seq, r.hit, r.hit IS NULL AS held, NOT r.kept AS cut, (SELECT lag FROM h) AS lag,
       r.stream_id, r.version, r.event_id, r.event_type, r.schema_version, r.content_type,
       r.content_encoding, CASE WHEN r.hit AND r.kept THEN r.metadata END AS metadata,
       CASE WHEN r.hit AND r.kept THEN r.payload END AS payload,
       r.recorded_at
FROM (SELECT q.*, q.hits_upto + 0 <= $6 AND q.bytes_before <= $7 AS kept FROM ranked q) r
ORDER BY r.tx_id, r.seq
