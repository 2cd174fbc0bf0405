-- event_patterns 0.1 -> 0.2
\echo Use "ALTER EXTENSION event_patterns UPDATE TO '0.2'" to load this file. \quit

-- Every change to the extension's SQL objects since 0.1 is made here as well
-- as in src/sql/*.sql (the full 0.2 install script); TAP test
-- 060_upgrade.pl checks that both give the same objects.

-- ---------------------------------------------------------------------------
-- Incremental views (security, issue 11): the creator's search_path and a
-- per-view time limit are recorded; views created before 0.2 run with
-- pg_catalog, pg_temp. Full views that cannot count changes report NULL.
-- ---------------------------------------------------------------------------
ALTER TABLE ep.ivm_views ADD COLUMN search_path text NOT NULL DEFAULT 'pg_catalog, pg_temp';
ALTER TABLE ep.ivm_views ADD COLUMN handler_timeout interval;
COMMENT ON COLUMN ep.ivm_views.search_path IS 'search_path of the creator, recorded at creation: the view''s query, maintenance and refreshes run with it (pg_temp last)';
COMMENT ON COLUMN ep.ivm_views.handler_timeout IS 'Time limit of each maintenance or refresh call of the view; NULL: event_patterns.handler_timeout';
CREATE OR REPLACE FUNCTION ep._ivm_pending(view_id bigint) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v ep.ivm_views;
    total bigint := 0;
    n bigint;
    lr regclass;
BEGIN
    SELECT * INTO v FROM ep.ivm_views i WHERE i.view_id OPERATOR(pg_catalog.=) _ivm_pending.view_id;
    IF NOT FOUND OR v.refresh OPERATOR(pg_catalog.=) 'immediate' THEN
        RETURN 0;
    END IF;
    -- a full view whose owner may not add triggers to its base tables
    -- counts no changes: unknown
    IF v.refresh OPERATOR(pg_catalog.=) 'full'
       AND pg_catalog.cardinality(v.base_rels) OPERATOR(pg_catalog.>) 0
       AND pg_catalog.cardinality(v.log_rels) OPERATOR(pg_catalog.=) 0 THEN
        RETURN NULL;
    END IF;
    FOREACH lr IN ARRAY v.log_rels LOOP
        IF v.refresh OPERATOR(pg_catalog.=) 'full' THEN
            EXECUTE format('SELECT coalesce(sum(n), 0)::bigint FROM %s', lr) INTO n;
        ELSE
            EXECUTE format('SELECT count(*) FROM %s', lr) INTO n;
        END IF;
        total := total OPERATOR(pg_catalog.+) n;
    END LOOP;
    IF v.needs_full THEN
        total := total OPERATOR(pg_catalog.+) 1;
    END IF;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ep._ivm_pending(bigint) IS 'Internal: exact count of change records not yet applied to an incremental view (NULL when a full view cannot count them)';
