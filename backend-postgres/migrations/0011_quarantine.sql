-- Log entries an operator set aside with Admin::quarantine, keyed by the entry's log position
-- (the event row's tx_id and seq; the position is (tx_id, seq, 0) in partition 0).
--
-- read_all skips a row whose position is here and reports the position in
-- Batch::quarantined without decoding the row: the way out when one corrupt event row makes
-- every reader from before it fail with Corrupt. Stream reads ignore this table (an aggregate
-- is never loaded with a hole). The table is usually empty; read_all looks it up once per
-- statement, as a hash (src/sql/read_all.sql).
--
-- No foreign key: events has no unique (tx_id, seq) to refer to, and adding one would index
-- every row of the log for the sake of a table that is usually empty. Admin::quarantine checks
-- that the event exists in the same statement as its insert; no call deletes event rows.
-- quarantined_at is the server's clock, as recorded_at is.
CREATE TABLE __SCHEMA__.quarantine (
    tx_id xid8 NOT NULL,
    seq bigint NOT NULL,
    reason text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_id, seq)
);
