-- ---------------------------------------------------------------------------
-- Incremental materialized views (src/ivm/ivm_define.c, src/ivm/ivm_delta.c,
-- src/ivm/ivm_refresh.c).
--
-- A view "name" is a plain view over a storage table "name__ivm_data" that
-- holds the result rows plus hidden bookkeeping columns (__ep_count, sums,
-- non-null counts). Deferred views log base-table changes into
-- "name__ivm_log<k>" (one per base table); full views count changes in
-- "name__ivm_log". All of these belong to the role that created the view and
-- live in the view's schema. ep.ivm_views is the catalog: one row per view
-- with the SQL generated at creation time, the creator's search_path and
-- the view's time limit: maintenance and refreshes run as the view's owner
-- with that path (pg_temp last), never in a writer's name space.
-- ---------------------------------------------------------------------------

CREATE SEQUENCE ep.ivm_views_seq AS bigint;

CREATE TABLE ep.ivm_views (
    view_id           bigint      NOT NULL DEFAULT pg_catalog.nextval('ep.ivm_views_seq') PRIMARY KEY,
    name              text        NOT NULL,
    view_rel          regclass    NOT NULL UNIQUE,
    storage_rel       regclass    NOT NULL,
    query             text        NOT NULL,
    refresh           text        NOT NULL CHECK (refresh IN ('immediate', 'deferred', 'full')),
    kind              text        NOT NULL CHECK (kind IN ('project', 'distinct', 'aggregate', 'full')),
    owner             regrole     NOT NULL DEFAULT ep._role(CURRENT_USER),
    base_rels         regclass[]  NOT NULL,
    log_rels          regclass[]  NOT NULL,
    multi_occurrence  boolean     NOT NULL,
    keep_empty_group  boolean     NOT NULL,
    sql_insert        text[]      NOT NULL,
    sql_delete        text[]      NOT NULL,
    sql_update        text[]      NOT NULL,
    sql_log_insert    text[]      NOT NULL,
    sql_log_delete    text[]      NOT NULL,
    sql_log_update    text[]      NOT NULL,
    sql_remove        text,
    sql_recompute     text,
    sql_full_delete   text        NOT NULL,
    sql_full_insert   text        NOT NULL,
    sql_deferred      text,
    needs_full        boolean     NOT NULL DEFAULT false,
    last_refreshed_at timestamptz,
    last_refresh_ms   double precision,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    search_path       text        NOT NULL DEFAULT 'pg_catalog, pg_temp',
    handler_timeout   interval,
    strategy          text        GENERATED ALWAYS AS
                      (CASE WHEN kind OPERATOR(pg_catalog.=) 'full' THEN 'recompute' ELSE 'incremental' END) STORED,
    fast_path         text
);
COMMENT ON COLUMN ep.ivm_views.search_path IS 'search_path of the creator, recorded at creation: the view''s query, maintenance and refreshes run with it (pg_temp last)';
COMMENT ON COLUMN ep.ivm_views.strategy IS 'incremental: changes applied as deltas; recompute: the query is run again and only the difference written (full views, and immediate/deferred views of shapes without deltas)';
COMMENT ON COLUMN ep.ivm_views.fast_path IS 'Immediate views of the simplest aggregate shape: which columns the C fast path (src/ivm/ivm_fast.c) folds, written at creation; NULL: every statement runs the generated SQL';
COMMENT ON COLUMN ep.ivm_views.handler_timeout IS 'Time limit of each maintenance or refresh call of the view; NULL: event_patterns.handler_timeout';
COMMENT ON TABLE ep.ivm_views IS 'Catalog of incremental materialized views and their generated maintenance SQL (read it through ep.incremental_views)';
SELECT pg_catalog.pg_extension_config_dump('ep.ivm_views', '');
SELECT pg_catalog.pg_extension_config_dump('ep.ivm_views_seq', '');

-- Views belong to the role that created them; only that role (or a
-- superuser) sees or deletes the catalog row. Rows are written only by the
-- extension's C functions (as the extension owner): the generated SQL runs
-- as the row's owner and the drop event trigger removes the relations a row
-- names, so no role may insert or edit one.
ALTER TABLE ep.ivm_views ENABLE ROW LEVEL SECURITY;
CREATE POLICY ivm_views_owner ON ep.ivm_views
    USING (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)))
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)));
GRANT SELECT ON ep.ivm_views TO PUBLIC;  -- rows are removed through ep._catalog_delete()
GRANT USAGE ON SEQUENCE ep.ivm_views_seq TO PUBLIC;

-- One row per view with several table references: a deferred refresh of
-- such a view updates it before applying its batch, which serializes
-- concurrent refreshes of the view. (Immediate writers serialize on an
-- advisory lock instead; see ivm_delta.c.)
CREATE TABLE ep.ivm_stamps (
    view_id bigint NOT NULL PRIMARY KEY REFERENCES ep.ivm_views ON DELETE CASCADE,
    n       bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE ep.ivm_stamps IS 'Internal: per-view row that serializes deferred refreshes of incremental views over several tables';
SELECT pg_catalog.pg_extension_config_dump('ep.ivm_stamps', '');

CREATE FUNCTION ep.create_incremental_view(name text, query text, refresh text DEFAULT 'immediate')
    RETURNS void LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_create_incremental_view';
COMMENT ON FUNCTION ep.create_incremental_view(text, text, text) IS
    'Create view "name" holding the result of query, maintained immediate (in the writing transaction), deferred (by refresh_view or a schedule) or full (recomputed on refresh)';

CREATE FUNCTION ep.refresh_view(name text, "full" boolean DEFAULT false)
    RETURNS void LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_refresh_view';
COMMENT ON FUNCTION ep.refresh_view(text, boolean) IS
    'Apply the pending changes of an incremental view in one batch, or recompute it (full => true); only the difference is written';

CREATE FUNCTION ep._ivm_maintain() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_ivm_maintain';
COMMENT ON FUNCTION ep._ivm_maintain() IS
    'Internal trigger on base tables of incremental views: applies or logs each statement''s changes';

CREATE FUNCTION ep._ivm_before() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_ivm_before';
COMMENT ON FUNCTION ep._ivm_before() IS
    'Internal trigger on base tables of immediate join views: notes a statement about to change a base table, so overlapping statements recompute the view';

CREATE FUNCTION ep._ivm_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_ivm_guard';
COMMENT ON FUNCTION ep._ivm_guard() IS
    'Internal trigger on the storage of incremental views: refuses writes other than the view''s maintenance and refreshes (SQLSTATE 55000)';

-- Find the catalog row of a view by the name given to any of the functions.
CREATE FUNCTION ep._ivm_lookup(name text) RETURNS ep.ivm_views
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v ep.ivm_views;
BEGIN
    SELECT * INTO v FROM ep.ivm_views i
     WHERE i.view_rel OPERATOR(pg_catalog.=) pg_catalog.to_regclass(_ivm_lookup.name)
        OR i.name OPERATOR(pg_catalog.=) _ivm_lookup.name
     ORDER BY (i.view_rel OPERATOR(pg_catalog.=) pg_catalog.to_regclass(_ivm_lookup.name)) DESC NULLS LAST
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'incremental view "%" does not exist', name
            USING ERRCODE = 'undefined_table',
                  HINT = 'List the incremental views with SELECT name FROM ep.incremental_views.';
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION ep._ivm_lookup(text) IS 'Internal: the catalog row of an incremental view given by name';

-- Exact number of change records waiting to be applied.
CREATE FUNCTION ep._ivm_pending(view_id bigint) RETURNS bigint
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
        -- kind full: a counter (full views, and views maintained by recompute)
        IF v.kind OPERATOR(pg_catalog.=) 'full' THEN
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

CREATE VIEW ep.incremental_views WITH (security_invoker = true) AS
    SELECT v.name, v.query, v.refresh, j.schedule, v.last_refreshed_at,
           p.pending AS pending_changes,
           (p.pending OPERATOR(pg_catalog.>) 0) AS is_stale,
           v.last_refresh_ms,
           j.last_error
      FROM ep.ivm_views v
      LEFT JOIN ep.job_registry j
             ON j.kind OPERATOR(pg_catalog.=) 'view_refresh'
            AND j.target OPERATOR(pg_catalog.=) v.name
     CROSS JOIN LATERAL (SELECT ep._ivm_pending(v.view_id) AS pending) p;
COMMENT ON VIEW ep.incremental_views IS
    'Incremental materialized views: refresh mode, schedule, freshness (pending changes, staleness) and the last scheduled refresh error';
GRANT SELECT ON ep.incremental_views TO PUBLIC;

-- Triggers on ep.events were created as the extension owner; they can be
-- removed by anybody once their view is gone from the catalog.
CREATE FUNCTION ep._ivm_drop_event_triggers(view_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tg name;
BEGIN
    IF EXISTS (SELECT 1 FROM ep.ivm_views i WHERE i.view_id OPERATOR(pg_catalog.=) _ivm_drop_event_triggers.view_id) THEN
        RAISE EXCEPTION 'incremental view % still exists', view_id
            USING ERRCODE = 'object_in_use';
    END IF;
    FOR tg IN
        SELECT t.tgname FROM pg_trigger t
         WHERE t.tgrelid OPERATOR(pg_catalog.=) 'ep.events'::regclass
           AND t.tgname OPERATOR(pg_catalog.=) ANY (ARRAY(
               SELECT format('__ep_%s_%s_%s', p, _ivm_drop_event_triggers.view_id, x)
                 FROM unnest(ARRAY['ivm', 'ivj']) p, unnest(ARRAY['i', 'u', 'd', 't', 'b']) x))
    LOOP
        EXECUTE format('DROP TRIGGER %I ON ep.events', tg);
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._ivm_drop_event_triggers(bigint) IS 'Internal: drop the triggers on ep.events of a dropped incremental view';

-- Remove whatever is left of a view (triggers, storage, logs, schedule,
-- catalog row), with the rights of the caller: the view's owner, or the
-- extension owner when called from the sql_drop event trigger.
CREATE FUNCTION ep._ivm_cleanup(v ep.ivm_views) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b regclass;
    r regclass;
    tg name;
BEGIN
    -- the row and the refresh schedule of the same owner (never another
    -- role's job that happens to bear the view's name)
    PERFORM ep._catalog_delete('view', v.view_id::pg_catalog.text);
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) v.view_rel::oid) THEN
        EXECUTE format('DROP VIEW %s', v.view_rel);
    END IF;
    FOREACH b IN ARRAY v.base_rels LOOP
        IF b::oid OPERATOR(pg_catalog.=) 'ep.events'::regclass::oid THEN
            PERFORM ep._ivm_drop_event_triggers(v.view_id);
        ELSIF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) b::oid) THEN
            FOR tg IN
                SELECT t.tgname FROM pg_trigger t
                 WHERE t.tgrelid OPERATOR(pg_catalog.=) b::oid
                   AND t.tgname OPERATOR(pg_catalog.=) ANY (ARRAY(
                       SELECT format('__ep_%s_%s_%s', p, v.view_id, x)
                         FROM unnest(ARRAY['ivm', 'ivj']) p, unnest(ARRAY['i', 'u', 'd', 't', 'b']) x))
            LOOP
                EXECUTE format('DROP TRIGGER %I ON %s', tg, b);
            END LOOP;
        END IF;
    END LOOP;
    FOREACH r IN ARRAY v.log_rels || v.storage_rel LOOP
        IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid OPERATOR(pg_catalog.=) r::oid) THEN
            EXECUTE format('DROP TABLE %s', r);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._ivm_cleanup(ep.ivm_views) IS 'Internal: drop every object of an incremental view and its catalog row';

CREATE FUNCTION ep.drop_incremental_view(name text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v ep.ivm_views := ep._ivm_lookup(name);
BEGIN
    IF NOT pg_has_role(v.owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of incremental view "%"', name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM ep._ivm_cleanup(v);
END
$$;
COMMENT ON FUNCTION ep.drop_incremental_view(text) IS
    'Drop an incremental view: its view, storage, change logs, triggers on the base tables and schedule';

CREATE FUNCTION ep.schedule_refresh(name text, every interval) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v ep.ivm_views := ep._ivm_lookup(name);
BEGIN
    IF every IS NULL OR every OPERATOR(pg_catalog.<=) interval '0' THEN
        RAISE EXCEPTION 'refresh interval must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the command names the view schema-qualified: the worker's search_path
    -- is not the caller's
    PERFORM ep._schedule_job('view_refresh', v.name, every,
                             format('SELECT ep.refresh_view(%L)',
                                    (SELECT format('%I.%I', n.nspname, c.relname)
                                       FROM pg_class c JOIN pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                                      WHERE c.oid OPERATOR(pg_catalog.=) v.view_rel::oid)));
END
$$;
COMMENT ON FUNCTION ep.schedule_refresh(text, interval) IS
    'Refresh an incremental view every interval from the background worker, as the calling role (replaces an existing schedule)';

CREATE FUNCTION ep.unschedule_refresh(name text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v ep.ivm_views := ep._ivm_lookup(name);
BEGIN
    PERFORM ep._unschedule_job('view_refresh', v.name);
END
$$;
COMMENT ON FUNCTION ep.unschedule_refresh(text) IS 'Remove the refresh schedule of an incremental view (no error when there is none)';

-- DROP VIEW name, DROP TABLE name__ivm_data or DROP TABLE base CASCADE leave
-- no half-dead view behind: the rest is removed with the catalog row.
CREATE FUNCTION ep._ivm_on_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v ep.ivm_views;
BEGIN
    FOR v IN
        SELECT i.* FROM ep.ivm_views i
         WHERE EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_class'::regclass
                          AND d.objid OPERATOR(pg_catalog.=) ANY (ARRAY[i.view_rel::oid, i.storage_rel::oid]))
    LOOP
        PERFORM ep._ivm_cleanup(v);
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._ivm_on_drop() IS 'Internal event trigger: cleans up an incremental view whose view or storage was dropped';
CREATE EVENT TRIGGER ep_ivm_on_drop ON sql_drop EXECUTE FUNCTION ep._ivm_on_drop();
