-- event_patterns 0.1 -> 0.2
\echo Use "ALTER EXTENSION event_patterns UPDATE TO '0.2'" to load this file. \quit

-- Every change to the extension's SQL objects since 0.1 is made here as well
-- as in src/sql/*.sql (the full 0.2 install script); TAP test
-- 060_upgrade.pl checks that both give the same objects.

-- ---------------------------------------------------------------------------
-- Trust boundary (issue 11) and projections (issue 12): handlers, upcasters
-- and reducers behind shared snapshots run as their owners with the
-- search_path recorded when they were created; the API never waits for an
-- apply round (generation), failures are classified and counted.
-- ---------------------------------------------------------------------------
ALTER TABLE ep.projection_defs
    ADD COLUMN search_path text NOT NULL DEFAULT 'pg_catalog, pg_temp',
    ADD COLUMN handler_timeout interval CHECK (handler_timeout >= '0'),
    ADD COLUMN generation integer NOT NULL DEFAULT 0,
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;
COMMENT ON TABLE ep.projection_defs IS
    'Projections and their progress (read them through ep.projections). last_position: every event at or below it has been applied (async event projections); last_lsn: commit LSN of the last change applied (table projections); search_path: what the handler runs with (recorded at creation); handler_timeout: time limit of one handler call (NULL: event_patterns.handler_timeout)';
ALTER TABLE ep.parked DROP CONSTRAINT parked_projection_id_fkey;
DROP FUNCTION ep._projection_lock();

CREATE OR REPLACE FUNCTION ep._check_projection_options(search_path text, handler_timeout interval)
    RETURNS void LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF search_path IS NULL THEN
        RAISE EXCEPTION 'search_path must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the schemas the handler''s unqualified names live in, e.g. ''public''.';
    END IF;
    IF handler_timeout OPERATOR(pg_catalog.<) '0'::pg_catalog.interval THEN
        RAISE EXCEPTION 'handler_timeout must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._check_projection_options(text, interval) IS 'Internal: validate the search_path and handler_timeout of a new projection';

CREATE OR REPLACE FUNCTION ep.create_projection(name text, handler regprocedure,
                                     event_types text[],
                                     category text,
                                     mode text,
                                     search_path text,
                                     handler_timeout interval DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'projection name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF handler IS NULL THEN
        RAISE EXCEPTION 'projection handler must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode IS NULL OR mode NOT IN ('async', 'inline') THEN
        RAISE EXCEPTION 'invalid projection mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The mode is "async" (applied from the WAL by the worker) or "inline" (in the appending transaction).';
    END IF;
    IF category OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'category must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF event_types IS NOT NULL AND (pg_catalog.array_position(event_types, NULL) IS NOT NULL
                                    OR pg_catalog.cardinality(event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ep._check_handler(handler, 'events');
    PERFORM ep._check_projection_options(create_projection.search_path, create_projection.handler_timeout);
    -- an inline handler runs inside every appender's transaction
    IF mode OPERATOR(pg_catalog.=) 'inline'
       AND NOT pg_catalog.has_table_privilege('ep.events'::pg_catalog.regclass, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied to create inline projection "%"', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An inline projection runs its handler in the transaction of every role that appends events.',
                  HINT = 'The owner of the event_patterns extension can GRANT TRIGGER ON ep.events to this role, or create the projection as async.';
    END IF;
    BEGIN
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, event_types, category,
                                        search_path, handler_timeout)
        VALUES (create_projection.name, 'events', create_projection.handler, ep._role(CURRENT_USER),
                create_projection.mode, create_projection.event_types, create_projection.category,
                create_projection.search_path, create_projection.handler_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.create_projection(text, regprocedure, text[], text, text, text, interval) IS
    'Create a projection whose handler runs with the given search_path and time limit per call (NULL: event_patterns.handler_timeout)';

-- The contract's form: the handler resolves names with the caller's
-- search_path. No SET clause, so that current_setting() sees the caller's;
-- every name in the body is qualified.
CREATE OR REPLACE FUNCTION ep.create_projection(name text, handler regprocedure,
                                     event_types text[] DEFAULT NULL,
                                     category text DEFAULT NULL,
                                     mode text DEFAULT 'async')
    RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT ep.create_projection(name, handler, event_types, category, mode,
                                  pg_catalog.current_setting('search_path'), NULL::pg_catalog.interval) $$;
COMMENT ON FUNCTION ep.create_projection(text, regprocedure, text[], text, text) IS
    'Create a projection: handler(event ep.events) RETURNS void is called for every matching event, in commit order, exactly once, as the creating role with the creator''s search_path; async (from the WAL, starting with the events already stored) or inline (in the appending transaction; needs TRIGGER on ep.events)';

CREATE OR REPLACE FUNCTION ep.create_table_projection(name text, source regclass, handler regprocedure,
                                           search_path text,
                                           handler_timeout interval DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'projection name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF source IS NULL OR handler IS NULL THEN
        RAISE EXCEPTION 'source and handler must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ep._check_table_source(source);
    PERFORM ep._check_handler(handler, 'table');
    PERFORM ep._check_projection_options(create_table_projection.search_path,
                                         create_table_projection.handler_timeout);
    BEGIN
        -- 'rebuilding': the next round loads the current rows, then follows changes
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, source, status,
                                        search_path, handler_timeout)
        VALUES (create_table_projection.name, 'table', create_table_projection.handler,
                ep._role(CURRENT_USER), 'async', create_table_projection.source, 'rebuilding',
                create_table_projection.search_path, create_table_projection.handler_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.create_table_projection(text, regclass, regprocedure, text, interval) IS
    'Create a table projection whose handler runs with the given search_path and time limit per call (NULL: event_patterns.handler_timeout)';

CREATE OR REPLACE FUNCTION ep.create_table_projection(name text, source regclass, handler regprocedure)
    RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT ep.create_table_projection(name, source, handler,
                                        pg_catalog.current_setting('search_path'), NULL::pg_catalog.interval) $$;
COMMENT ON FUNCTION ep.create_table_projection(text, regclass, regprocedure) IS
    'Change data capture of a table: handler(op text, old_row jsonb, new_row jsonb) is called with INSERT for every existing row, then for every INSERT, UPDATE, DELETE and TRUNCATE in commit order, as the creating role with the creator''s search_path; the handler''s own writes to the table are not fed back';

CREATE OR REPLACE FUNCTION ep._projection_defs_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.event_types IS NOT NULL AND (pg_catalog.array_position(NEW.event_types, NULL) IS NOT NULL
                                        OR pg_catalog.cardinality(NEW.event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.kind OPERATOR(pg_catalog.=) 'table' THEN
        PERFORM ep._check_table_source(NEW.source);
    END IF;
    PERFORM ep._check_handler(NEW.handler, NEW.kind);
    -- an inline handler runs inside every appender's transaction
    IF NEW.mode OPERATOR(pg_catalog.=) 'inline'
       AND NOT pg_catalog.has_table_privilege(NEW.owner::pg_catalog.oid, 'ep.events'::pg_catalog.regclass, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied to create inline projection "%"', NEW.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An inline projection runs its handler in the transaction of every role that appends events.',
                  HINT = 'The owner of the event_patterns extension can GRANT TRIGGER ON ep.events to this role, or create the projection as async.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION ep._projection_defs_check() IS
    'Trigger: validates every projection row (handler signature and rights, source, event types), also on direct writes';

CREATE OR REPLACE FUNCTION ep._projection_row(name text) RETURNS ep.projection_defs
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'projection name must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM ep.projection_defs d WHERE d.name OPERATOR(pg_catalog.=) _projection_row.name
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection "%" does not exist', name
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ep._projection_row(text) IS 'Internal: lock and return a projection visible to the caller, or raise undefined_object';

CREATE OR REPLACE FUNCTION ep.pause_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    UPDATE ep.projection_defs d SET status = 'paused'
     WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
END
$$;
COMMENT ON FUNCTION ep.pause_projection(text) IS
    'Stop applying a projection; an async one resumes where it stopped (a paused table projection keeps its changes in the WAL)';

CREATE OR REPLACE FUNCTION ep.resume_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    IF r.status OPERATOR(pg_catalog.=) ANY ('{paused,failed}') THEN
        -- a table projection that never loaded its source does it now
        UPDATE ep.projection_defs d
           SET status = CASE WHEN d.kind OPERATOR(pg_catalog.=) 'table' AND d.last_lsn IS NULL
                             THEN 'rebuilding' ELSE 'running' END,
               consecutive_failures = 0
         WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    END IF;
END
$$;
COMMENT ON FUNCTION ep.resume_projection(text) IS 'Resume a paused projection, or a failed one once its cause is fixed';

CREATE OR REPLACE FUNCTION ep.rebuild_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    IF r.mode OPERATOR(pg_catalog.=) 'inline' THEN
        RAISE EXCEPTION 'cannot rebuild inline projection "%"', name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Replay the events yourself with ep.read_all(), or recreate the projection as async.';
    END IF;
    DELETE FROM ep.parked p WHERE p.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    -- a round still applying the old run gives way (its work is undone)
    UPDATE ep.projection_defs d
       SET status = 'rebuilding', last_position = 0, last_lsn = NULL, last_error = NULL,
           generation = d.generation OPERATOR(pg_catalog.+) 1, consecutive_failures = 0
     WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
END
$$;
COMMENT ON FUNCTION ep.rebuild_projection(text) IS
    'Replay every matching event from the store (a table projection: every current row after a TRUNCATE call), then continue live; the handler''s owner resets the read model first';

CREATE OR REPLACE FUNCTION ep.drop_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    DELETE FROM ep.projection_defs d WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    DELETE FROM ep.parked p WHERE p.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.drop_projection(text) IS 'Drop a projection and its parked events (its read model is left alone)';

CREATE OR REPLACE VIEW ep.projections WITH (security_invoker = true) AS
    SELECT d.name, d.mode,
           d.status,
           CASE WHEN d.kind OPERATOR(pg_catalog.=) 'events' AND d.mode OPERATOR(pg_catalog.=) 'async'
                THEN d.last_position END AS last_position,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'inline' THEN 0::bigint
                WHEN d.kind OPERATOR(pg_catalog.=) 'events' THEN
                    ep._lag_events(d.last_position, d.event_types, d.category)
           END AS lag_events,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'async' THEN
               (SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint
                  FROM pg_catalog.pg_replication_slots s
                 WHERE s.slot_name OPERATOR(pg_catalog.=) ep._slot_name())
           END AS lag_bytes,
           d.last_applied_at, d.last_error,
           (SELECT pg_catalog.count(*) FROM ep.parked p
             WHERE p.projection_id OPERATOR(pg_catalog.=) d.projection_id) AS parked,
           -- extra columns
           d.kind,
           CASE WHEN d.kind OPERATOR(pg_catalog.=) 'events' AND d.mode OPERATOR(pg_catalog.=) 'async' THEN
               ep._lag_seconds(d.last_position, d.event_types, d.category)
           END AS lag_seconds,
           d.handler, d.owner, d.event_types, d.category, d.source, d.last_lsn,
           d.applied_count, d.decoded_count,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'async' THEN
               (SELECT s.wal_status FROM pg_catalog.pg_replication_slots s
                 WHERE s.slot_name OPERATOR(pg_catalog.=) ep._slot_name())
           END AS wal_status,
           d.search_path, d.handler_timeout
      FROM ep.projection_defs d;
COMMENT ON VIEW ep.projections IS
    'Projections with their progress: last_position (every event at or below it applied), lag in events, WAL bytes and seconds, parked events, the slot''s wal_status, and the search_path and time limit their handler runs with';

ALTER TABLE ep.upcasters ADD COLUMN search_path text NOT NULL DEFAULT 'pg_catalog, pg_temp';
COMMENT ON COLUMN ep.upcasters.search_path IS 'search_path the upcaster runs with (the registering session''s); it runs as its function''s owner';
ALTER TABLE ep.snapshot_policies ADD COLUMN search_path text NOT NULL DEFAULT 'pg_catalog, pg_temp';
COMMENT ON COLUMN ep.snapshot_policies.search_path IS 'search_path the reducer runs with (as its function''s owner) in every fold that reads or writes the shared snapshots';

-- ---------------------------------------------------------------------------
-- Backends reload their cache of the extension's objects and version.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ep._objects_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_objects_changed';
COMMENT ON FUNCTION ep._objects_changed() IS 'Internal: make every backend reload its cache of the extension''s objects (after an update)';
REVOKE ALL ON FUNCTION ep._objects_changed() FROM PUBLIC;


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

-- ---------------------------------------------------------------------------
-- Jobs run in a session of their owner (issue 11): the search_path recorded
-- when the job was scheduled, a time limit per job; subscriptions are
-- changed by the role whose code runs (current_user), never by whoever the
-- session belongs to.
-- ---------------------------------------------------------------------------
ALTER TABLE ep.job_registry
    ADD COLUMN search_path text,
    ADD COLUMN time_limit interval CHECK (time_limit > '0');
COMMENT ON COLUMN ep.job_registry.search_path IS
    'search_path the command runs with, recorded when the job was scheduled (NULL: pg_catalog, pg_temp)';
COMMENT ON COLUMN ep.job_registry.time_limit IS
    'Time limit of one run (NULL: event_patterns.handler_timeout for custom jobs, at least an hour for the extension''s own kinds)';

CREATE OR REPLACE VIEW ep.jobs WITH (security_invoker = true) AS
    SELECT job_id, kind, target, schedule, next_run_at, last_run_at, last_status,
           last_error, pg_catalog.pg_get_userbyid(owner) AS owner, failures, command,
           search_path, time_limit
      FROM ep.job_registry;
COMMENT ON VIEW ep.jobs IS 'Scheduled background jobs: view refreshes, scavenging, snapshots, partition maintenance';

CREATE OR REPLACE FUNCTION ep._schedule_job(kind text, target text, every interval, command text,
                                 search_path text, time_limit interval)
    RETURNS bigint LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
BEGIN
    IF kind IS NULL OR kind NOT IN ('view_refresh', 'scavenge', 'snapshot',
                                    'partition_maintenance', 'custom') THEN
        RAISE EXCEPTION 'unknown job kind "%"', kind
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use view_refresh, scavenge, snapshot, partition_maintenance or custom.';
    END IF;
    IF target IS NULL OR btrim(target) = '' THEN
        RAISE EXCEPTION 'job target must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF every IS NULL OR every <= interval '0' THEN
        RAISE EXCEPTION 'schedule must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an interval such as ''5 minutes''.';
    END IF;
    IF command IS NULL OR btrim(command) = '' THEN
        RAISE EXCEPTION 'job command must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF time_limit <= interval '0' THEN
        RAISE EXCEPTION 'time_limit must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an interval such as ''10 minutes'', or NULL for the default.';
    END IF;
    INSERT INTO ep.job_registry AS j (kind, target, schedule, command, owner, next_run_at,
                                      search_path, time_limit)
    VALUES (kind, target, every, command, ep._role(current_user), now() + every,
            _schedule_job.search_path, _schedule_job.time_limit)
    ON CONFLICT ON CONSTRAINT job_registry_kind_target_key DO UPDATE
        SET schedule = excluded.schedule, command = excluded.command,
            owner = excluded.owner, next_run_at = excluded.next_run_at, failures = 0,
            search_path = excluded.search_path, time_limit = excluded.time_limit
    RETURNING j.job_id INTO id;
    IF NOT ep._worker_runtime_loaded() THEN
        RAISE WARNING 'job "%" will not run: the event_patterns background workers are not running', target
            USING HINT = 'Add event_patterns to shared_preload_libraries and restart the server.';
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION ep._schedule_job(text, text, interval, text, text, interval) IS
    'Internal: create or replace the (kind, target) job; it runs command every interval as the calling role, with search_path and time_limit (NULL: defaults)';

CREATE OR REPLACE FUNCTION ep._schedule_job(kind text, target text, every interval, command text)
    RETURNS bigint LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._schedule_job(kind, target, every, command, NULL, NULL) $$;
COMMENT ON FUNCTION ep._schedule_job(text, text, interval, text) IS
    'Internal: create or replace the (kind, target) job; it runs command every interval as the calling role';

CREATE OR REPLACE FUNCTION ep.schedule_job(name text, every interval, command text)
    RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT ep._schedule_job('custom', name, every, command,
                              pg_catalog.current_setting('search_path'), NULL) $$;
COMMENT ON FUNCTION ep.schedule_job(text, interval, text) IS
    'Run command every interval in the background, in a session of the calling role, with the caller''s search_path; returns the job id';

CREATE OR REPLACE FUNCTION ep.schedule_job(name text, every interval, command text, time_limit interval)
    RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT ep._schedule_job('custom', name, every, command,
                              pg_catalog.current_setting('search_path'), time_limit) $$;
COMMENT ON FUNCTION ep.schedule_job(text, interval, text, interval) IS
    'Run command every interval in the background, as the calling role, cancelling a run after time_limit; returns the job id';

ALTER TABLE ep.subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY subscriptions_read ON ep.subscriptions FOR SELECT USING (true);
CREATE POLICY subscriptions_create ON ep.subscriptions FOR INSERT
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)));
CREATE POLICY subscriptions_drop ON ep.subscriptions FOR DELETE
    USING (pg_catalog.pg_has_role(CURRENT_USER, owner::pg_catalog.oid, 'MEMBER'));
GRANT INSERT, DELETE ON ep.subscriptions TO PUBLIC;

ALTER TABLE ep.subscription_checkpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY subscription_checkpoints_read ON ep.subscription_checkpoints FOR SELECT USING (true);
CREATE POLICY subscription_checkpoints_ack ON ep.subscription_checkpoints FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM ep.subscriptions s
                         WHERE s.name OPERATOR(pg_catalog.=) subscription
                           AND pg_catalog.pg_has_role(CURRENT_USER, s.owner::pg_catalog.oid, 'MEMBER')));
CREATE POLICY subscription_checkpoints_move ON ep.subscription_checkpoints FOR UPDATE
    USING (EXISTS (SELECT 1 FROM ep.subscriptions s
                    WHERE s.name OPERATOR(pg_catalog.=) subscription
                      AND pg_catalog.pg_has_role(CURRENT_USER, s.owner::pg_catalog.oid, 'MEMBER')));
GRANT INSERT, UPDATE ON ep.subscription_checkpoints TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Category ownership (issue 11): owned categories, grants, row-level
-- security on the store's tables, destructive functions not PUBLIC
-- (src/sql/15_category.sql, 20_subscription.sql, 40_event_store_history.sql,
-- 40_projection.sql).
-- ---------------------------------------------------------------------------

CREATE TABLE ep.category_owners (
    category   text        NOT NULL PRIMARY KEY CHECK (category <> '' AND pg_catalog.strpos(category, '-') = 0),
    owner      regrole     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.category_owners IS 'Owned categories (set with ep.set_category_owner); only the owner and the roles it grants may use their streams';

CREATE TABLE ep.category_grants (
    category   text        NOT NULL,
    grantee    regrole     NOT NULL,
    may_read   boolean     NOT NULL DEFAULT false,
    may_append boolean     NOT NULL DEFAULT false,
    may_admin  boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (category, grantee)
);
COMMENT ON TABLE ep.category_grants IS 'Privileges on owned categories granted to other roles (ep.grant_category, ep.revoke_category)';
COMMENT ON COLUMN ep.category_grants.may_admin IS 'delete_stream, set_stream_metadata and redact_stream on the category''s streams';

GRANT SELECT ON ep.category_owners, ep.category_grants TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.category_owners', '');
SELECT pg_catalog.pg_extension_config_dump('ep.category_grants', '');

-- Every backend caches both tables; a change makes them reload.
CREATE FUNCTION ep._category_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_category_changed';
COMMENT ON FUNCTION ep._category_changed() IS
    'Internal: trigger on ep.category_owners and ep.category_grants that makes every backend reload its category cache';
CREATE TRIGGER category_owners_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ep.category_owners
    FOR EACH STATEMENT EXECUTE FUNCTION ep._category_changed();
CREATE TRIGGER category_grants_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ep.category_grants
    FOR EACH STATEMENT EXECUTE FUNCTION ep._category_changed();

CREATE FUNCTION ep._unreadable_categories() RETURNS text[]
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_unreadable_categories';
COMMENT ON FUNCTION ep._unreadable_categories() IS
    'Internal: the owned categories the current user may not read (for row-level security; evaluate it once per query as a scalar subquery)';

CREATE FUNCTION ep._category_check_read(category text, role regrole) RETURNS void
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_category_check_read';
COMMENT ON FUNCTION ep._category_check_read(text, regrole) IS
    'Internal: raises 42501 unless the role may read the category (subscriptions, projections)';

CREATE FUNCTION ep.set_category_owner(category text, owner regrole)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_set_category_owner';
COMMENT ON FUNCTION ep.set_category_owner(text, regrole) IS
    'Give a category an owner: from then on only the owner and the roles it grants may append to, read, delete, set metadata on, redact, subscribe to or project its streams (NULL: open to every role again). The extension owner or the current owner may call it';

CREATE FUNCTION ep.grant_category(category text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_grant_category';
COMMENT ON FUNCTION ep.grant_category(text, regrole, text[]) IS
    'Grant privileges on an owned category: read, append, admin (delete, metadata, redact) or all; the owner or the extension owner may call it';

CREATE FUNCTION ep.revoke_category(category text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_revoke_category';
COMMENT ON FUNCTION ep.revoke_category(text, regrole, text[]) IS
    'Revoke privileges (read, append, admin or all) on an owned category; the owner or the extension owner may call it';

CREATE VIEW ep.categories AS
    SELECT o.category, o.owner,
           COALESCE((SELECT pg_catalog.jsonb_object_agg(g.grantee::pg_catalog.text,
                                pg_catalog.to_jsonb(pg_catalog.array_remove(ARRAY[
                                    CASE WHEN g.may_read THEN 'read' END,
                                    CASE WHEN g.may_append THEN 'append' END,
                                    CASE WHEN g.may_admin THEN 'admin' END]::pg_catalog.text[], NULL)))
                       FROM ep.category_grants g
                      WHERE g.category OPERATOR(pg_catalog.=) o.category),
                    '{}'::pg_catalog.jsonb) AS grants
      FROM ep.category_owners o;
COMMENT ON VIEW ep.categories IS 'Owned categories, their owners and the privileges granted on them ({"role": ["read", "append", "admin"]})';
GRANT SELECT ON ep.categories TO PUBLIC;

-- Reads of the store's tables hide owned categories from roles without
-- read. The policy's subquery is evaluated once per query; per row it is
-- one comparison with each unreadable category (none in a database without
-- owned categories). The extension's own statements run as the tables'
-- owner, which row-level security does not restrict.
ALTER TABLE ep.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_category_read ON ep.events FOR SELECT
    USING (category OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[]));
ALTER TABLE ep.streams ENABLE ROW LEVEL SECURITY;
CREATE POLICY streams_category_read ON ep.streams FOR SELECT
    USING (category OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[]));

-- Destructive functions are not PUBLIC (DESIGN.md §1, "Trust model"):
-- GRANT EXECUTE them to the roles that may use them; category ownership
-- limits them further.
COMMENT ON FUNCTION ep.delete_stream(text, bigint, boolean) IS
    'Soft delete (reads hide the events; a later append continues the numbering) or hard delete (events removed, id tombstoned: appends raise EP002). Not PUBLIC: GRANT EXECUTE it to the roles that may delete; an owned category also needs its admin privilege';
REVOKE ALL ON FUNCTION ep.delete_stream(text, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION ep.set_stream_metadata(text, bigint, interval, bigint) IS
    'Set a stream''s read limits (NULL removes one); every read honours them at once and a scavenge removes what they hide. Not PUBLIC: GRANT EXECUTE it to the roles that may set them; an owned category also needs its admin privilege';
REVOKE ALL ON FUNCTION ep.set_stream_metadata(text, bigint, interval, bigint) FROM PUBLIC;

-- Snapshots hold folds of events: hidden like the events.
ALTER TABLE ep.snapshots ENABLE ROW LEVEL SECURITY;
CREATE POLICY snapshots_category_read ON ep.snapshots FOR SELECT
    USING (pg_catalog.split_part(stream_id, '-', 1)
           OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[]));
REVOKE ALL ON FUNCTION ep.register_upcaster(text, integer, regprocedure) FROM PUBLIC;
REVOKE ALL ON FUNCTION ep.unregister_upcaster(text, integer) FROM PUBLIC;



CREATE FUNCTION ep._ivm_guard() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_ivm_guard';
COMMENT ON FUNCTION ep._ivm_guard() IS
    'Internal trigger on the storage of incremental views: refuses writes other than the view''s maintenance and refreshes (SQLSTATE 55000)';

-- Views created at 0.1: their storage is guarded like a new view's, and
-- immediate views over one table reference note their statements in
-- flight (ep._ivm_before) like those over several, so that a statement
-- nested in another one on the same table (a trigger writing its own
-- table) is detected and the view recomputed.
DO $$
DECLARE
    v record;
    b regclass;
    k int;
BEGIN
    FOR v IN SELECT i.view_id, i.storage_rel, i.refresh, i.kind, i.multi_occurrence, i.base_rels
               FROM ep.ivm_views i ORDER BY i.view_id LOOP
        IF pg_catalog.to_regclass(v.storage_rel::text) IS NULL THEN
            CONTINUE;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                        WHERE t.tgrelid OPERATOR(pg_catalog.=) v.storage_rel::pg_catalog.oid
                          AND t.tgname OPERATOR(pg_catalog.=) ('__ep_ivm_' OPERATOR(pg_catalog.||) v.view_id OPERATOR(pg_catalog.||) '_w')) THEN
            EXECUTE pg_catalog.format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s'
                                      ' FOR EACH STATEMENT EXECUTE FUNCTION ep._ivm_guard(%L)',
                                      '__ep_ivm_' OPERATOR(pg_catalog.||) v.view_id OPERATOR(pg_catalog.||) '_w',
                                      v.storage_rel, v.view_id);
        END IF;
        IF v.refresh OPERATOR(pg_catalog.=) 'immediate' AND NOT v.multi_occurrence THEN
            k := -1;
            FOREACH b IN ARRAY v.base_rels LOOP
                k := k OPERATOR(pg_catalog.+) 1;
                -- (views created by the 0.2 library before the update have it)
                CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                                       WHERE t.tgrelid OPERATOR(pg_catalog.=) b::pg_catalog.oid
                                         AND t.tgname OPERATOR(pg_catalog.=) ('__ep_ivm_' OPERATOR(pg_catalog.||) v.view_id OPERATOR(pg_catalog.||) '_b'));
                EXECUTE pg_catalog.format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %s'
                                          ' FOR EACH STATEMENT EXECUTE FUNCTION ep._ivm_before(%L, %L, %L)',
                                          '__ep_ivm_' OPERATOR(pg_catalog.||) v.view_id OPERATOR(pg_catalog.||) '_b',
                                          b, v.view_id, k, 1);
            END LOOP;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ep._projection_defs_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.event_types IS NOT NULL AND (pg_catalog.array_position(NEW.event_types, NULL) IS NOT NULL
                                        OR pg_catalog.cardinality(NEW.event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.kind OPERATOR(pg_catalog.=) 'table' THEN
        PERFORM ep._check_table_source(NEW.source);
    END IF;
    PERFORM ep._check_handler(NEW.handler, NEW.kind);
    -- an inline handler runs inside every appender's transaction
    IF NEW.mode OPERATOR(pg_catalog.=) 'inline'
       AND NOT pg_catalog.has_table_privilege(NEW.owner::pg_catalog.oid, 'ep.events'::pg_catalog.regclass, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied to create inline projection "%"', NEW.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An inline projection runs its handler in the transaction of every role that appends events.',
                  HINT = 'The owner of the event_patterns extension can GRANT TRIGGER ON ep.events to this role, or create the projection as async.';
    END IF;
    -- an owned category needs its read privilege (events of categories the
    -- owner cannot read are never delivered in any case)
    PERFORM ep._category_check_read(NEW.category, NEW.owner);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION ep._projection_defs_check() IS
    'Trigger: validates every projection row (handler signature and rights, source, event types, read privilege on an owned category), also on direct writes';
DROP TRIGGER projection_defs_check ON ep.projection_defs;
CREATE TRIGGER projection_defs_check
    BEFORE INSERT OR UPDATE OF kind, handler, owner, mode, event_types, category, source ON ep.projection_defs
    FOR EACH ROW EXECUTE FUNCTION ep._projection_defs_check();


-- the subscription functions as they end up (run as their caller, check current_user and an owned category's read privilege)
CREATE OR REPLACE FUNCTION ep.create_subscription(name text, category text DEFAULT NULL,
                                       event_types text[] DEFAULT NULL,
                                       from_position bigint DEFAULT 0)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF from_position IS NULL OR from_position < 0 THEN
        RAISE EXCEPTION 'from_position must be a non-negative position'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF category = '' THEN
        RAISE EXCEPTION 'category must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ep.subscriptions (name, category, event_types, from_position, owner)
    VALUES (create_subscription.name, create_subscription.category,
            create_subscription.event_types, create_subscription.from_position, ep._role(current_user))
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END IF;
    -- an owned category needs its read privilege (the insert goes with the error)
    PERFORM ep._category_check_read(create_subscription.category, ep._role(current_user));
END
$$;
COMMENT ON FUNCTION ep.create_subscription(text, text, text[], bigint) IS
    'Create a persistent subscription with a server-side checkpoint';

CREATE OR REPLACE FUNCTION ep.ack(subscription text, "position" bigint, consumer_member integer DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ack."position" IS NULL OR ack."position" < 0 THEN
        RAISE EXCEPTION 'position must be a non-negative position'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF consumer_member < 0 THEN
        RAISE EXCEPTION 'consumer_member must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM ep.subscriptions s WHERE s.name = ack.subscription;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', subscription
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM ep._subscription_check_owner(ack.subscription);
    INSERT INTO ep.subscription_checkpoints AS c (subscription, consumer_member, position)
    VALUES (ack.subscription, coalesce(ack.consumer_member, -1), ack."position")
    ON CONFLICT ON CONSTRAINT subscription_checkpoints_pkey
    DO UPDATE SET position = excluded.position, updated_at = now();
END
$$;
COMMENT ON FUNCTION ep.ack(text, bigint, integer) IS
    'Move a subscription''s checkpoint (of a consumer member) to a position';

CREATE OR REPLACE FUNCTION ep.drop_subscription(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep._subscription_check_owner(drop_subscription.name);
    DELETE FROM ep.subscriptions s WHERE s.name = drop_subscription.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
COMMENT ON FUNCTION ep.drop_subscription(text) IS 'Drop a persistent subscription and its checkpoints';

CREATE OR REPLACE FUNCTION ep._subscription_check_owner(name text)
    RETURNS void LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o regrole;
BEGIN
    SELECT s.owner INTO o FROM ep.subscriptions s WHERE s.name = _subscription_check_owner.name;
    IF o IS NOT NULL AND NOT pg_has_role(current_user, o, 'MEMBER') THEN
        RAISE EXCEPTION 'must be a member of role "%" to change subscription "%"', o, name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._subscription_check_owner(text) IS 'Internal: raises 42501 unless the current user (a member of its owner) may change the subscription';
-- ---------------------------------------------------------------------------
-- Shapes maintained by recompute-and-diff (issue 13): immediate and deferred
-- views of kind 'full'; a deferred one counts its changes like a full view;
-- ep.ivm_views.strategy tells which.
-- ---------------------------------------------------------------------------
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
ALTER TABLE ep.ivm_views ADD COLUMN strategy text GENERATED ALWAYS AS
    (CASE WHEN kind OPERATOR(pg_catalog.=) 'full' THEN 'recompute' ELSE 'incremental' END) STORED;
COMMENT ON COLUMN ep.ivm_views.strategy IS 'incremental: changes applied as deltas; recompute: the query is run again and only the difference written (full views, and immediate/deferred views of shapes without deltas)';

-- Snapshots: only roles with the privileges of the reducer's owner see them
-- (review finding F2)
ALTER POLICY snapshots_category_read ON ep.snapshots
    USING (pg_catalog.split_part(stream_id, '-', 1)
           OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[])
           AND pg_catalog.pg_has_role(CURRENT_USER,
                                      (SELECT p.proowner FROM pg_catalog.pg_proc p
                                        WHERE p.oid OPERATOR(pg_catalog.=) reducer::pg_catalog.oid),
                                      'USAGE'));

-- ---------------------------------------------------------------------------
-- Async incremental views (src/ivm_async.c): refresh => 'async'.
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

SELECT ep._objects_changed();
