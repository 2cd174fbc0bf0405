-- ---------------------------------------------------------------------------
-- Async incremental views (src/ivm/ivm_async.c): refresh => 'async'.
--
-- An async view has the objects of a deferred view (storage, change logs,
-- batch SQL) but no trigger on any base table: the per-database worker
-- decodes the base tables' changes from the WAL (slot ep_ivm_<database
-- oid>), fills the logs with them and applies the batch, as the view's
-- owner, in commit order. ep.ivm_async holds each view's progress: the WAL
-- position through which its changes are applied, written in the same
-- transaction as the view's rows (exactly once across crashes).
-- ---------------------------------------------------------------------------

ALTER TABLE ep.ivm_views DROP CONSTRAINT ivm_views_refresh_check,
    ADD CONSTRAINT ivm_views_refresh_check
        CHECK (refresh IN ('immediate', 'deferred', 'full', 'async'));

CREATE TABLE ep.ivm_async (
    view_id         bigint       NOT NULL PRIMARY KEY REFERENCES ep.ivm_views ON DELETE CASCADE,
    applied_lsn     pg_lsn,
    applied_at      timestamptz,
    needs_full      boolean      NOT NULL DEFAULT true,
    last_error      text,
    applied_changes bigint       NOT NULL DEFAULT 0,
    recomputes      bigint       NOT NULL DEFAULT 0
);
COMMENT ON TABLE ep.ivm_async IS
    'Progress of async incremental views: every change committed at or before applied_lsn is applied (written with the view''s rows); needs_full: the next round recomputes the view';
COMMENT ON COLUMN ep.ivm_async.applied_lsn IS 'End of the last transaction whose changes the view reflects (NULL: not yet computed by the worker)';
COMMENT ON COLUMN ep.ivm_async.applied_at IS 'Time of the snapshot the view was last brought to';
-- Rows are visible to whoever sees the view's catalog row (its owner).
ALTER TABLE ep.ivm_async ENABLE ROW LEVEL SECURITY;
CREATE POLICY ivm_async_owner ON ep.ivm_async
    USING (EXISTS (SELECT 1 FROM ep.ivm_views v WHERE v.view_id OPERATOR(pg_catalog.=) ivm_async.view_id));
GRANT SELECT ON ep.ivm_async TO PUBLIC;

CREATE FUNCTION ep._ivm_async_decoded(OUT decoded_lsn pg_lsn, OUT decoded_at timestamptz)
    RETURNS record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_ivm_async_decoded';
COMMENT ON FUNCTION ep._ivm_async_decoded() IS
    'Internal: WAL position and time through which the last committed round of async views of this database decoded';

-- Lag of an async view: WAL bytes and seconds it may be behind. A view
-- that applied its last round without error is as far as that round.
CREATE FUNCTION ep._ivm_async_lag(refresh text, applied_lsn pg_lsn, applied_at timestamptz,
                                  needs_full boolean, last_error text,
                                  OUT lag_bytes numeric, OUT lag_seconds double precision)
    RETURNS record LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pos IS NULL OR pg_catalog.pg_is_in_recovery() THEN NULL
                ELSE GREATEST(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), pos), 0) END,
           CASE WHEN at IS NULL OR pg_catalog.pg_is_in_recovery() THEN NULL
                ELSE GREATEST(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) at), 0) END
      FROM (SELECT CASE WHEN refresh OPERATOR(pg_catalog.<>) 'async' THEN NULL
                        WHEN needs_full OR applied_lsn IS NULL THEN NULL
                        WHEN last_error IS NULL THEN GREATEST(applied_lsn, d.decoded_lsn)
                        ELSE applied_lsn END AS pos,
                   CASE WHEN refresh OPERATOR(pg_catalog.<>) 'async' THEN NULL
                        WHEN needs_full OR applied_lsn IS NULL THEN NULL
                        WHEN last_error IS NULL THEN GREATEST(applied_at, d.decoded_at)
                        ELSE applied_at END AS at
              FROM ep._ivm_async_decoded() d) s
$$;
COMMENT ON FUNCTION ep._ivm_async_lag(text, pg_lsn, timestamptz, boolean, text) IS
    'Internal: lag in WAL bytes and seconds of an async incremental view (NULL for other views, and before the worker first computed it)';

CREATE OR REPLACE VIEW ep.incremental_views WITH (security_invoker = true) AS
    SELECT v.name, v.query, v.refresh, j.schedule, v.last_refreshed_at,
           CASE WHEN v.refresh OPERATOR(pg_catalog.=) 'async' THEN NULL ELSE p.pending END AS pending_changes,
           CASE WHEN v.refresh OPERATOR(pg_catalog.=) 'async'
                THEN COALESCE(a.needs_full, true) OR a.last_error IS NOT NULL
                     OR COALESCE(l.lag_seconds OPERATOR(pg_catalog.>) 1, true)
                ELSE p.pending OPERATOR(pg_catalog.>) 0 END AS is_stale,
           v.last_refresh_ms,
           COALESCE(a.last_error, j.last_error) AS last_error,
           l.lag_seconds,
           l.lag_bytes
      FROM ep.ivm_views v
      LEFT JOIN ep.job_registry j
             ON j.kind OPERATOR(pg_catalog.=) 'view_refresh'
            AND j.target OPERATOR(pg_catalog.=) v.name
      LEFT JOIN ep.ivm_async a ON a.view_id OPERATOR(pg_catalog.=) v.view_id
     CROSS JOIN LATERAL (SELECT CASE WHEN v.refresh OPERATOR(pg_catalog.=) 'async' THEN NULL
                                     ELSE ep._ivm_pending(v.view_id) END AS pending) p
     CROSS JOIN LATERAL ep._ivm_async_lag(v.refresh, a.applied_lsn, a.applied_at,
                                          COALESCE(a.needs_full, true), a.last_error) l;
COMMENT ON VIEW ep.incremental_views IS
    'Incremental materialized views: refresh mode, schedule, freshness (pending changes, staleness; lag in seconds and WAL bytes for async views) and the last error';
GRANT SELECT ON ep.incremental_views TO PUBLIC;

CREATE FUNCTION ep.wait_for_view(name text, timeout interval DEFAULT '10 seconds')
    RETURNS boolean LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_wait_for_view';
COMMENT ON FUNCTION ep.wait_for_view(text, interval) IS
    'Read-your-writes for an async incremental view: true once it reflects everything committed before the call, false on timeout (at once for other refresh modes: true)';

CREATE FUNCTION ep.apply_async_views() RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_apply_async_views';
COMMENT ON FUNCTION ep.apply_async_views() IS
    'Run one round of the async incremental views in this transaction (what the worker does on its own): returns the number of changes applied';
REVOKE ALL ON FUNCTION ep.apply_async_views() FROM PUBLIC;
