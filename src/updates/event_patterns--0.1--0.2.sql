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
           SET status = CASE WHEN d.kind OPERATOR(pg_catalog.=) ANY ('{table,message}') AND d.last_lsn IS NULL
                             THEN 'rebuilding' ELSE 'running' END,
               consecutive_failures = 0
         WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    END IF;
END
$$;
COMMENT ON FUNCTION ep.resume_projection(text) IS 'Resume a paused projection, or a failed one once its cause is fixed';

-- Lag of a message handler (channels, 50_channel.sql): received messages
-- not handled yet, read through ep.messages (only readable channels).
CREATE FUNCTION ep._lag_messages(source regclass, after bigint, message_types text[])
    RETURNS bigint LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ BEGIN RETURN (SELECT pg_catalog.count(*) FROM ep.messages m
           WHERE m.channel OPERATOR(pg_catalog.=) (SELECT d.channel FROM ep.channel_defs d
                                                    WHERE d.partition OPERATOR(pg_catalog.=) $1)
             AND m.received_seq OPERATOR(pg_catalog.>) $2
             AND ($3 IS NULL OR m.message_type OPERATOR(pg_catalog.=) ANY ($3))); END $$;
COMMENT ON FUNCTION ep._lag_messages(regclass, bigint, text[]) IS 'Internal: received messages of a channel table not yet handled';

CREATE FUNCTION ep._lag_message_seconds(source regclass, after bigint, message_types text[])
    RETURNS double precision LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ BEGIN RETURN (SELECT pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(m.sent_at))
            FROM ep.messages m
           WHERE m.channel OPERATOR(pg_catalog.=) (SELECT d.channel FROM ep.channel_defs d
                                                    WHERE d.partition OPERATOR(pg_catalog.=) $1)
             AND m.received_seq OPERATOR(pg_catalog.>) $2
             AND ($3 IS NULL OR m.message_type OPERATOR(pg_catalog.=) ANY ($3))); END $$;
COMMENT ON FUNCTION ep._lag_message_seconds(regclass, bigint, text[]) IS 'Internal: age in seconds of the oldest received message not yet handled';

CREATE FUNCTION ep._check_message_source(source regclass, owner regrole)
    RETURNS void LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text;
BEGIN
    SELECT d.channel INTO ch FROM ep.channel_defs d
     WHERE d.partition OPERATOR(pg_catalog.=) $1 AND d.role OPERATOR(pg_catalog.=) 'consumer';
    IF ch IS NULL THEN
        RAISE EXCEPTION 'relation % is not the table of a subscribed channel', source
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT ep._channel_may(ch, owner, 'read') THEN
        RAISE EXCEPTION 'permission denied to read channel "%"', ch
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The channel''s owner can run ep.grant_channel(channel, role, ''{read}'').';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._check_message_source(regclass, regrole) IS
    'Internal: raises unless source is a subscribed channel''s table the role may read';

CREATE OR REPLACE VIEW ep.projections WITH (security_invoker = true) AS
    SELECT d.name, d.mode,
           d.status,
           CASE WHEN d.kind OPERATOR(pg_catalog.=) 'events' AND d.mode OPERATOR(pg_catalog.=) 'async'
                THEN d.last_position END AS last_position,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'inline' THEN 0::bigint
                WHEN d.kind OPERATOR(pg_catalog.=) 'events' THEN
                    ep._lag_events(d.last_position, d.event_types, d.category)
                WHEN d.kind OPERATOR(pg_catalog.=) 'message' THEN
                    ep._lag_messages(d.source, d.last_position, d.event_types)
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
                WHEN d.kind OPERATOR(pg_catalog.=) 'message' THEN
               ep._lag_message_seconds(d.source, d.last_position, d.event_types)
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
    -- a message handler reads a channel its owner may read (ep.grant_channel)
    IF NEW.kind OPERATOR(pg_catalog.=) 'message' THEN
        PERFORM ep._check_message_source(NEW.source, NEW.owner);
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
-- Immediate views of the simplest aggregate shape are maintained in C
-- (src/ivm/ivm_fast.c); views created before keep NULL: their generated SQL.
ALTER TABLE ep.ivm_views ADD COLUMN fast_path text;
COMMENT ON COLUMN ep.ivm_views.fast_path IS 'Immediate views of the simplest aggregate shape: which columns the C fast path (src/ivm/ivm_fast.c) folds, written at creation; NULL: every statement runs the generated SQL';

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
-- Catalog tables: no DELETE or table-wide UPDATE for PUBLIC (review F4b2:
-- either allows LOCK TABLE ... ACCESS EXCLUSIVE and stops the worker); job
-- names are per owner (review F6)
-- ---------------------------------------------------------------------------
CREATE FUNCTION ep._catalog_delete(kind text, key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'ep_catalog_delete';
COMMENT ON FUNCTION ep._catalog_delete(text, text) IS
    'Internal: remove the catalog rows of a projection, its parked events, a job, an incremental view or a subscription, if the current user has the privileges of its owner';

REVOKE UPDATE, DELETE ON ep.projection_defs, ep.parked FROM PUBLIC;
REVOKE INSERT ON ep.parked FROM PUBLIC;
GRANT UPDATE (status, consecutive_failures, last_position, last_lsn, last_error, generation)
    ON ep.projection_defs TO PUBLIC;
GRANT UPDATE (retry) ON ep.parked TO PUBLIC;
REVOKE UPDATE, DELETE ON ep.job_registry FROM PUBLIC;
GRANT UPDATE (schedule, command, owner, next_run_at, failures, search_path, time_limit)
    ON ep.job_registry TO PUBLIC;
ALTER TABLE ep.job_registry DROP CONSTRAINT job_registry_kind_target_key,
    ADD CONSTRAINT job_registry_owner_kind_target_key UNIQUE (owner, kind, target);
DROP POLICY subscriptions_drop ON ep.subscriptions;
REVOKE DELETE ON ep.subscriptions FROM PUBLIC;
REVOKE UPDATE ON ep.subscription_checkpoints FROM PUBLIC;
GRANT UPDATE (position, updated_at) ON ep.subscription_checkpoints TO PUBLIC;
REVOKE DELETE ON ep.ivm_views FROM PUBLIC;

-- Identity columns of the catalog tables roles may insert into: a role
-- cannot pick the id itself (INSERT ... OVERRIDING SYSTEM VALUE) to squat
-- the ids the next projections or jobs of other roles would get. Superuser
-- sessions (restores of a dump) may.
CREATE FUNCTION ep._identity_guard() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    seq text := pg_catalog.pg_get_serial_sequence(pg_catalog.format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_ARGV[0]);
    given bigint := (pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.->>) TG_ARGV[0])::pg_catalog.int8;
    last bigint;
BEGIN
    -- (the role the session acts as: SET ROLE, else the session user)
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r
         WHERE r.rolname OPERATOR(pg_catalog.=) COALESCE(NULLIF(pg_catalog.current_setting('role'), 'none'),
                                                     SESSION_USER)) THEN
        RETURN NEW;
    END IF;
    BEGIN
        last := pg_catalog.currval(seq);
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        last := NULL;
    END;
    IF last IS DISTINCT FROM given THEN
        RAISE EXCEPTION 'cannot choose the value of column "%" of table %.%', TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'generated_always',
                  DETAIL = 'Ids are given by the extension, in order.',
                  HINT = 'Leave the column out (do not use OVERRIDING SYSTEM VALUE).';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION ep._identity_guard() IS
    'Internal trigger: refuses ids chosen by the inserting role (OVERRIDING SYSTEM VALUE) in ep.projection_defs and ep.job_registry, except in sessions acting as a superuser';
CREATE TRIGGER job_registry_identity BEFORE INSERT ON ep.job_registry
    FOR EACH ROW EXECUTE FUNCTION ep._identity_guard('job_id');
CREATE TRIGGER projection_defs_identity BEFORE INSERT ON ep.projection_defs
    FOR EACH ROW EXECUTE FUNCTION ep._identity_guard('projection_id');

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
    ON CONFLICT ON CONSTRAINT job_registry_owner_kind_target_key DO UPDATE
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
    PERFORM ep._catalog_delete('parked', r.projection_id::pg_catalog.text);
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
    PERFORM ep._catalog_delete('projection', r.projection_id::pg_catalog.text);
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.drop_projection(text) IS 'Drop a projection and its parked events (its read model is left alone)';

CREATE OR REPLACE FUNCTION ep._unschedule_job(kind text, target text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
    found_one boolean := false;
BEGIN
    -- the caller's own job of that name; a superuser's call, when it has
    -- none, removes the jobs of that name it sees (row-level security shows
    -- other roles nothing else)
    FOR id IN SELECT j.job_id FROM ep.job_registry j
               WHERE j.kind OPERATOR(pg_catalog.=) _unschedule_job.kind
                 AND j.target OPERATOR(pg_catalog.=) _unschedule_job.target
                 AND (j.owner OPERATOR(pg_catalog.=) ep._role(CURRENT_USER)
                      OR NOT EXISTS (SELECT 1 FROM ep.job_registry o
                                      WHERE o.kind OPERATOR(pg_catalog.=) _unschedule_job.kind
                                        AND o.target OPERATOR(pg_catalog.=) _unschedule_job.target
                                        AND o.owner OPERATOR(pg_catalog.=) ep._role(CURRENT_USER)))
    LOOP
        found_one := ep._catalog_delete('job', id::pg_catalog.text) OR found_one;
    END LOOP;
    RETURN found_one;
END
$$;
COMMENT ON FUNCTION ep._unschedule_job(text, text) IS 'Internal: remove the (kind, target) job';

CREATE OR REPLACE FUNCTION ep.drop_subscription(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep._subscription_check_owner(drop_subscription.name);
    IF NOT ep._catalog_delete('subscription', drop_subscription.name) THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
COMMENT ON FUNCTION ep.drop_subscription(text) IS 'Drop a persistent subscription and its checkpoints';

CREATE OR REPLACE FUNCTION ep._ivm_cleanup(v ep.ivm_views) RETURNS void
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


-- BEGIN sagas (src/sql/50_saga.sql)
-- ---------------------------------------------------------------------------
-- Sagas (src/saga.c): long-running business transactions made of steps, each
-- with a compensation; when a step fails for good, the completed steps are
-- compensated in reverse order.
--
-- ep.saga_types/ep.saga_steps hold the definitions (ep.define_saga), with
-- their owner and the search_path recorded at definition; every action and
-- compensation runs as that owner. ep.saga_instances holds the live state of
-- each saga; only the extension's own functions write it (as the extension
-- owner), and row-level security shows a role only the sagas of owners whose
-- privileges it has. Every state change is also an event of the saga's own
-- stream saga_<type>-<saga_id> (category saga_<type>, owned by the saga
-- type's owner).
-- ---------------------------------------------------------------------------

CREATE TABLE ep.saga_types (
    saga_type   text        NOT NULL PRIMARY KEY
                            CHECK (saga_type OPERATOR(pg_catalog.~) '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
    owner       regrole     NOT NULL,
    search_path text,
    definition  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.saga_types IS 'Saga definitions (ep.define_saga): owner, recorded search_path, steps as given';

CREATE TABLE ep.saga_steps (
    saga_type    text         NOT NULL REFERENCES ep.saga_types ON DELETE CASCADE,
    step_no      integer      NOT NULL CHECK (step_no OPERATOR(pg_catalog.>=) 1),
    name         text         NOT NULL CHECK (name OPERATOR(pg_catalog.<>) ''),
    action       regprocedure NOT NULL,
    compensation regprocedure,
    timeout      interval     CHECK (timeout OPERATOR(pg_catalog.>) '0'),
    retries      integer      NOT NULL DEFAULT 0 CHECK (retries BETWEEN 0 AND 100),
    retry_delay  interval     NOT NULL DEFAULT '1 second' CHECK (retry_delay OPERATOR(pg_catalog.>=) '0'),
    PRIMARY KEY (saga_type, step_no),
    UNIQUE (saga_type, name)
);
COMMENT ON TABLE ep.saga_steps IS 'Steps of each saga type, in order: action and compensation functions fn(saga_id text, data jsonb) RETURNS jsonb, timeout, retries and the first retry delay';

CREATE TABLE ep.saga_instances (
    saga_id     text        NOT NULL PRIMARY KEY,
    saga_type   text        NOT NULL REFERENCES ep.saga_types,
    owner       regrole     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'completed', 'compensating',
                                                       'compensated', 'failed')),
    step_no     integer,
    phase       text        CHECK (phase IN ('due', 'waiting')),
    attempts    integer     NOT NULL DEFAULT 0,
    next_run_at timestamptz,
    deadline    timestamptz,
    failed_step integer,
    data        jsonb       NOT NULL,
    input       jsonb,
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_error  text
);
COMMENT ON TABLE ep.saga_instances IS 'Live state of every saga (read it through ep.sagas); written only by the extension';
COMMENT ON COLUMN ep.saga_instances.step_no IS 'running: the step whose action runs or is awaited; compensating: the step being compensated; NULL once finished';
COMMENT ON COLUMN ep.saga_instances.phase IS 'due: the worker runs the step at next_run_at; waiting: the action returned NULL and ep.complete_step/ep.fail_step finish it (or its deadline fails it)';
COMMENT ON COLUMN ep.saga_instances.attempts IS 'Failed attempts of the current step (retries back off exponentially from the step''s retry_delay)';
CREATE INDEX saga_instances_due_idx ON ep.saga_instances (next_run_at)
    WHERE phase OPERATOR(pg_catalog.=) 'due';
CREATE INDEX saga_instances_deadline_idx ON ep.saga_instances (deadline)
    WHERE deadline IS NOT NULL;
CREATE INDEX saga_instances_type_idx ON ep.saga_instances (saga_type, status);

SELECT pg_catalog.pg_extension_config_dump('ep.saga_types', '');
SELECT pg_catalog.pg_extension_config_dump('ep.saga_steps', '');
SELECT pg_catalog.pg_extension_config_dump('ep.saga_instances', '');

-- Definitions are public (they name functions, not data); a saga's state
-- and data are visible only to roles with the privileges of its owner.
GRANT SELECT ON ep.saga_types, ep.saga_steps TO PUBLIC;
ALTER TABLE ep.saga_instances ENABLE ROW LEVEL SECURITY;
CREATE POLICY saga_instances_owner ON ep.saga_instances FOR SELECT
    USING (pg_catalog.pg_has_role(CURRENT_USER, owner, 'USAGE'));
GRANT SELECT ON ep.saga_instances TO PUBLIC;

CREATE VIEW ep.sagas WITH (security_invoker = true) AS
    SELECT i.saga_type, i.saga_id, i.status, s.name AS current_step, i.data,
           i.started_at, i.updated_at, i.deadline, i.last_error,
           i.phase, i.attempts, i.next_run_at, i.input,
           pg_catalog.pg_get_userbyid(i.owner::pg_catalog.oid) AS owner
      FROM ep.saga_instances i
      LEFT JOIN ep.saga_steps s
        ON s.saga_type OPERATOR(pg_catalog.=) i.saga_type
       AND s.step_no OPERATOR(pg_catalog.=) i.step_no;
COMMENT ON VIEW ep.sagas IS
    'Sagas and their live state (running, completed, compensating, compensated, failed); a role sees the sagas of owners whose privileges it has';
GRANT SELECT ON ep.sagas TO PUBLIC;

CREATE VIEW ep.saga_definitions AS
    SELECT t.saga_type, pg_catalog.pg_get_userbyid(t.owner::pg_catalog.oid) AS owner,
           t.definition AS steps, t.search_path, t.created_at, t.updated_at
      FROM ep.saga_types t;
COMMENT ON VIEW ep.saga_definitions IS 'Saga types defined with ep.define_saga, their owner and recorded search_path';
GRANT SELECT ON ep.saga_definitions TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Internal state machine. Called by the C functions as the extension owner,
-- with the instance row locked; never by users.
-- ---------------------------------------------------------------------------

-- The steps of a definition, checked for shape (names, types, ranges); the
-- functions are resolved by the caller under the definer's search_path.
CREATE FUNCTION ep._saga_parse_steps(steps jsonb,
        OUT step_no integer, OUT name text, OUT action text, OUT compensation text,
        OUT timeout interval, OUT retries integer, OUT retry_delay interval)
    RETURNS SETOF record LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e jsonb;
    n integer := 0;
    k text;
    v jsonb;
    seen text[] := '{}';
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' OR jsonb_array_length(steps) = 0 THEN
        RAISE EXCEPTION 'saga steps must be a non-empty JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give [{"name": ..., "action": ..., "compensation": ..., "timeout": ..., "retries": ...}, ...].';
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(steps) AS a(x) LOOP
        n := n + 1;
        IF jsonb_typeof(e) <> 'object' THEN
            RAISE EXCEPTION 'saga step % must be a JSON object', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR k IN SELECT jsonb_object_keys(e) LOOP
            IF k NOT IN ('name', 'action', 'compensation', 'timeout', 'retries', 'retry_delay') THEN
                RAISE EXCEPTION 'unknown key "%" in saga step %', k, n
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A step has name, action, compensation, timeout, retries and retry_delay.';
            END IF;
        END LOOP;
        step_no := n;
        IF jsonb_typeof(e->'name') IS DISTINCT FROM 'string' OR btrim(e->>'name') = '' THEN
            RAISE EXCEPTION 'saga step % needs a "name" (a non-empty string)', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        name := e->>'name';
        IF name = ANY (seen) THEN
            RAISE EXCEPTION 'saga step name "%" is used twice', name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Step names must be unique within a saga.';
        END IF;
        seen := seen || name;
        IF jsonb_typeof(e->'action') IS DISTINCT FROM 'string' OR btrim(e->>'action') = '' THEN
            RAISE EXCEPTION 'saga step "%" needs an "action" (a function name)', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        action := e->>'action';
        v := e->'compensation';
        IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
            compensation := NULL;
        ELSIF jsonb_typeof(v) <> 'string' OR btrim(v #>> '{}') = '' THEN
            RAISE EXCEPTION 'the "compensation" of saga step "%" must be a function name or null', name
                USING ERRCODE = 'invalid_parameter_value';
        ELSE
            compensation := v #>> '{}';
        END IF;
        timeout := ep._saga_interval(e->'timeout', name, 'timeout');
        IF timeout IS NOT NULL AND timeout <= interval '0' THEN
            RAISE EXCEPTION 'the "timeout" of saga step "%" must be positive', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        retry_delay := coalesce(ep._saga_interval(e->'retry_delay', name, 'retry_delay'), interval '1 second');
        IF retry_delay < interval '0' THEN
            RAISE EXCEPTION 'the "retry_delay" of saga step "%" must not be negative', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v := e->'retries';
        IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
            retries := 0;
        ELSIF jsonb_typeof(v) <> 'number' OR (v #>> '{}')::numeric <> trunc((v #>> '{}')::numeric)
              OR (v #>> '{}')::numeric NOT BETWEEN 0 AND 100 THEN
            RAISE EXCEPTION 'the "retries" of saga step "%" must be an integer from 0 to 100', name
                USING ERRCODE = 'invalid_parameter_value';
        ELSE
            retries := (v #>> '{}')::integer;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._saga_parse_steps(jsonb) IS 'Internal: the steps of a saga definition, checked for shape';

-- An interval given as a string ('30 seconds') or a number of seconds.
CREATE FUNCTION ep._saga_interval(v jsonb, step text, field text) RETURNS interval
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    ELSIF jsonb_typeof(v) = 'number' THEN
        RETURN make_interval(secs => (v #>> '{}')::double precision);
    ELSIF jsonb_typeof(v) = 'string' THEN
        BEGIN
            RETURN (v #>> '{}')::interval;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
            NULL;
        END;
    END IF;
    RAISE EXCEPTION 'the "%" of saga step "%" must be an interval (''30 seconds'') or a number of seconds', field, step
        USING ERRCODE = 'invalid_parameter_value';
END
$$;
COMMENT ON FUNCTION ep._saga_interval(jsonb, text, text) IS 'Internal: an interval of a saga step, given as text or seconds';

-- History: every state change is an event of the saga's stream.
CREATE FUNCTION ep._saga_history(saga_type text, saga_id text, event_type text, data jsonb,
                                 expected_version bigint DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep.append('saga_' OPERATOR(pg_catalog.||) saga_type OPERATOR(pg_catalog.||) '-'
                      OPERATOR(pg_catalog.||) saga_id, event_type, data, NULL, expected_version);
END
$$;
COMMENT ON FUNCTION ep._saga_history(text, text, text, jsonb, bigint) IS 'Internal: append an event to a saga''s stream (saga_<type>-<saga_id>)';

-- Data after a step: an object result is merged, anything else is kept
-- under the step's name.
CREATE FUNCTION ep._saga_merge(data jsonb, step text, result jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE WHEN result IS NULL OR jsonb_typeof(result) = 'null' THEN data
                WHEN jsonb_typeof(result) = 'object' THEN data || result
                ELSE data || jsonb_build_object(step, result) END;
END
$$;
COMMENT ON FUNCTION ep._saga_merge(jsonb, text, jsonb) IS 'Internal: merge a step''s result into the saga''s data';

CREATE FUNCTION ep._saga_start(saga_type text, saga_id text, input jsonb, owner regrole)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first ep.saga_steps;
    existing text;
BEGIN
    SELECT s.* INTO first FROM ep.saga_steps s
     WHERE s.saga_type = _saga_start.saga_type ORDER BY s.step_no LIMIT 1;
    INSERT INTO ep.saga_instances AS i (saga_id, saga_type, owner, status, step_no, phase,
                                        next_run_at, deadline, data, input)
    VALUES (saga_id, saga_type, owner, 'running', first.step_no, 'due', now(),
            now() + first.timeout, coalesce(input, '{}'), input)
    ON CONFLICT ON CONSTRAINT saga_instances_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT i.saga_type INTO existing FROM ep.saga_instances i WHERE i.saga_id = _saga_start.saga_id;
        IF existing IS DISTINCT FROM saga_type THEN
            RAISE EXCEPTION 'saga id "%" is already used by a saga of another type', saga_id
                USING ERRCODE = 'unique_violation',
                      HINT = 'Saga ids are unique across saga types.';
        END IF;
        RETURN false;
    END IF;
    PERFORM ep._saga_history(saga_type, saga_id, 'SagaStarted',
                             jsonb_build_object('input', input, 'owner', owner::text), 0);
    RETURN true;
END
$$;
COMMENT ON FUNCTION ep._saga_start(text, text, jsonb, regrole) IS 'Internal: create a saga instance (false when it exists already)';

-- One outcome of the current step of a saga:
--   ok       the action (or compensation) returned result, or complete_step
--   wait     the action returned NULL: wait for complete_step / fail_step
--   error    the call raised err: retry with backoff, then fail for good
--   fail     fail_step: the step failed for good
--   timeout  the step's deadline passed
CREATE FUNCTION ep._saga_advance(saga_id text, outcome text, result jsonb, err text)
    RETURNS text LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i ep.saga_instances;
    st ep.saga_steps;
    nxt ep.saga_steps;
    delay interval;
BEGIN
    SELECT * INTO i FROM ep.saga_instances s WHERE s.saga_id = _saga_advance.saga_id FOR UPDATE;
    IF NOT FOUND OR i.status NOT IN ('running', 'compensating') THEN
        RETURN i.status;
    END IF;
    SELECT * INTO st FROM ep.saga_steps s
     WHERE s.saga_type = i.saga_type AND s.step_no = i.step_no;

    IF i.status = 'running' THEN
        IF outcome = 'ok' THEN
            i.data := ep._saga_merge(i.data, st.name, result);
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepCompleted',
                                     jsonb_build_object('step', st.name, 'result', result));
            SELECT * INTO nxt FROM ep.saga_steps s
             WHERE s.saga_type = i.saga_type AND s.step_no > i.step_no
             ORDER BY s.step_no LIMIT 1;
            IF NOT FOUND THEN
                UPDATE ep.saga_instances s
                   SET status = 'completed', step_no = NULL, phase = NULL, attempts = 0,
                       next_run_at = NULL, deadline = NULL, data = i.data, updated_at = now()
                 WHERE s.saga_id = i.saga_id;
                PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaCompleted',
                                         jsonb_build_object('data', i.data));
                RETURN 'completed';
            END IF;
            UPDATE ep.saga_instances s
               SET step_no = nxt.step_no, phase = 'due', attempts = 0, next_run_at = now(),
                   deadline = now() + nxt.timeout, data = i.data, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            RETURN 'running';
        ELSIF outcome = 'wait' THEN
            UPDATE ep.saga_instances s
               SET phase = 'waiting', next_run_at = NULL, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepWaiting',
                                     jsonb_build_object('step', st.name, 'deadline', i.deadline));
            RETURN 'running';
        ELSIF outcome = 'error' AND i.attempts < st.retries THEN
            delay := least(st.retry_delay * power(2, least(i.attempts, 20))::integer, interval '1 hour');
            UPDATE ep.saga_instances s
               SET attempts = i.attempts + 1, phase = 'due', next_run_at = now() + delay,
                   last_error = err, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepAttemptFailed',
                                     jsonb_build_object('step', st.name, 'attempt', i.attempts + 1,
                                                        'error', err, 'retry_at', now() + delay));
            RETURN 'running';
        END IF;
        -- failed for good (error after the retries, fail_step, timeout):
        -- compensate the completed steps, last first
        IF outcome = 'timeout' THEN
            err := format('step "%s" timed out after %s s', st.name,
                          trim_scale(extract(epoch FROM st.timeout)));
        ELSIF outcome = 'error' AND st.retries > 0 THEN
            err := format('step "%s" failed after %s attempts: %s', st.name, i.attempts + 1, err);
        ELSE
            err := format('step "%s" failed: %s', st.name, err);
        END IF;
        PERFORM ep._saga_history(i.saga_type, i.saga_id,
                                 CASE WHEN outcome = 'timeout' THEN 'SagaStepTimedOut' ELSE 'SagaStepFailed' END,
                                 jsonb_build_object('step', st.name, 'error', err));
        i.failed_step := i.step_no;
    ELSE
        -- compensating
        IF outcome = 'ok' THEN
            i.data := ep._saga_merge(i.data, st.name || '_compensation', result);
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepCompensated',
                                     jsonb_build_object('step', st.name, 'result', result));
        ELSIF outcome = 'error' AND i.attempts < st.retries THEN
            delay := least(st.retry_delay * power(2, least(i.attempts, 20))::integer, interval '1 hour');
            UPDATE ep.saga_instances s
               SET attempts = i.attempts + 1, phase = 'due', next_run_at = now() + delay,
                   last_error = err, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaCompensationAttemptFailed',
                                     jsonb_build_object('step', st.name, 'attempt', i.attempts + 1,
                                                        'error', err, 'retry_at', now() + delay));
            RETURN 'compensating';
        ELSE
            err := format('compensation of step "%s" failed%s: %s', st.name,
                          CASE WHEN st.retries > 0 THEN format(' after %s attempts', i.attempts + 1) ELSE '' END,
                          err);
            UPDATE ep.saga_instances s
               SET status = 'failed', phase = NULL, next_run_at = NULL, deadline = NULL,
                   last_error = err, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaFailed',
                                     jsonb_build_object('step', st.name, 'error', err));
            RETURN 'failed';
        END IF;
        err := i.last_error;
    END IF;

    -- the next step to compensate: the last completed one below this one
    -- that has a compensation
    SELECT * INTO nxt FROM ep.saga_steps s
     WHERE s.saga_type = i.saga_type AND s.step_no < i.step_no AND s.compensation IS NOT NULL
     ORDER BY s.step_no DESC LIMIT 1;
    IF NOT FOUND THEN
        UPDATE ep.saga_instances s
           SET status = 'compensated', step_no = NULL, phase = NULL, attempts = 0,
               next_run_at = NULL, deadline = NULL, failed_step = i.failed_step,
               data = i.data, last_error = err, updated_at = now()
         WHERE s.saga_id = i.saga_id;
        PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaCompensated',
                                 jsonb_build_object('error', err));
        RETURN 'compensated';
    END IF;
    UPDATE ep.saga_instances s
       SET status = 'compensating', step_no = nxt.step_no, phase = 'due', attempts = 0,
           next_run_at = now(), deadline = NULL, failed_step = i.failed_step,
           data = i.data, last_error = err, updated_at = now()
     WHERE s.saga_id = i.saga_id;
    RETURN 'compensating';
END
$$;
COMMENT ON FUNCTION ep._saga_advance(text, text, jsonb, text) IS
    'Internal: apply one outcome (ok, wait, error, fail, timeout) of a saga''s current step; returns the new status';

-- A reply for a waiting step (complete_step, fail_step). Replies for a step
-- the saga is no longer waiting for (late, or repeated) are ignored.
CREATE FUNCTION ep._saga_reply(saga_id text, step text, ok boolean, result jsonb, err text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i ep.saga_instances;
    st ep.saga_steps;
BEGIN
    SELECT * INTO i FROM ep.saga_instances s WHERE s.saga_id = _saga_reply.saga_id FOR UPDATE;
    SELECT * INTO st FROM ep.saga_steps s WHERE s.saga_type = i.saga_type AND s.name = step;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'saga type "%" has no step "%"', i.saga_type, step
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status = 'running' AND i.step_no = st.step_no AND i.phase = 'waiting' THEN
        PERFORM ep._saga_advance(saga_id, CASE WHEN ok THEN 'ok' ELSE 'fail' END, result, err);
        RETURN true;
    END IF;
    IF i.status = 'running' AND st.step_no >= i.step_no THEN
        RAISE EXCEPTION 'saga "%" is not waiting for step "%"', saga_id, step
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN st.step_no > i.step_no THEN 'The step has not started yet.'
                                ELSE 'The step''s action has not returned NULL (it has not run yet, or it is being retried).' END;
    END IF;
    RAISE NOTICE 'saga "%" is no longer waiting for step "%": reply ignored', saga_id, step
        USING DETAIL = format('The saga is %s.', i.status);
    RETURN false;
END
$$;
COMMENT ON FUNCTION ep._saga_reply(text, text, boolean, jsonb, text) IS
    'Internal: finish a waiting step with a result or an error; false when the saga no longer waits for it';

REVOKE ALL ON FUNCTION ep._saga_parse_steps(jsonb), ep._saga_interval(jsonb, text, text),
    ep._saga_history(text, text, text, jsonb, bigint), ep._saga_start(text, text, jsonb, regrole),
    ep._saga_advance(text, text, jsonb, text), ep._saga_reply(text, text, boolean, jsonb, text)
    FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- API (C, src/saga.c)
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep.define_saga(saga_type text, steps jsonb)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_define_saga';
COMMENT ON FUNCTION ep.define_saga(text, jsonb) IS
    'Define (or redefine, when no saga of the type is active) a saga type: steps is an array of {"name", "action", "compensation", "timeout", "retries", "retry_delay"}; action and compensation name functions fn(saga_id text, data jsonb) RETURNS jsonb, resolved with the caller''s search_path; they run as the caller';

CREATE FUNCTION ep.drop_saga(saga_type text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_drop_saga';
COMMENT ON FUNCTION ep.drop_saga(text) IS
    'Remove a saga type and its finished sagas (refused while one is running or compensating); its history stays in the event store';

CREATE FUNCTION ep.start_saga(saga_type text, saga_id text, input jsonb)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_start_saga';
COMMENT ON FUNCTION ep.start_saga(text, text, jsonb) IS
    'Start a saga with input (a JSON object) in the caller''s transaction; idempotent per saga_id. Needs the privileges of the saga type''s owner';

CREATE FUNCTION ep.complete_step(saga_id text, step text, result jsonb DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_complete_step';
COMMENT ON FUNCTION ep.complete_step(text, text, jsonb) IS
    'Finish a waiting step (its action returned NULL) with a result, merged into the saga''s data; a reply for a step no longer awaited is ignored with a notice';

CREATE FUNCTION ep.fail_step(saga_id text, step text, error text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_fail_step';
COMMENT ON FUNCTION ep.fail_step(text, text, text) IS
    'Fail a waiting step for good: the completed steps are compensated in reverse order';

CREATE FUNCTION ep.run_sagas(max_steps integer DEFAULT 1000)
    RETURNS integer LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_run_sagas';
COMMENT ON FUNCTION ep.run_sagas(integer) IS
    'Run the due steps, retries, compensations and timeouts of the sagas the caller may drive (those of owners whose privileges it has), in this transaction, until none is due or max_steps ran; returns the number of steps run. The worker does the same in the background';
-- END sagas

-- BEGIN read nodes (src/sql/50_read_nodes.sql)
-- ---------------------------------------------------------------------------
-- Read nodes (DESIGN.md section 6): a writer publishes its store with native
-- logical replication, readers follow it (src/replica/)
-- ---------------------------------------------------------------------------

-- The writer's read horizon, published with the events: "every position at
-- or below position has committed or never will". Written by the writer's
-- worker after appending commits (ep.publish_horizon); replicated in commit
-- order, so on a reader it arrives after every event below it. On a reader
-- global reads stop at it.
CREATE TABLE ep.store_horizon (
    id           boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (id),
    "position"   bigint      NOT NULL DEFAULT 0,
    issued       bigint      NOT NULL DEFAULT 0,
    published_at timestamptz
);
INSERT INTO ep.store_horizon DEFAULT VALUES;
COMMENT ON TABLE ep.store_horizon IS 'The writer''s read horizon (one row), published with its store: every event at or below "position" has committed or never will';
COMMENT ON COLUMN ep.store_horizon."position" IS 'Highest position readers may read up to without ever skipping an event';
COMMENT ON COLUMN ep.store_horizon.issued IS 'Highest position the writer had handed out when it published this horizon';
COMMENT ON COLUMN ep.store_horizon.published_at IS 'When the writer published this horizon (writer''s clock)';
GRANT SELECT ON ep.store_horizon TO PUBLIC;

-- On a reader the apply worker's writes to ep.store_horizon wake the
-- reader's worker (its projections follow at once). ENABLE REPLICA: the
-- trigger fires only for replicated changes.
CREATE FUNCTION ep._store_horizon_applied() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_store_horizon_applied';
COMMENT ON FUNCTION ep._store_horizon_applied() IS 'Internal trigger: a replicated horizon wakes this database''s worker at commit';
CREATE TRIGGER store_horizon_applied AFTER INSERT OR UPDATE ON ep.store_horizon
    FOR EACH ROW EXECUTE FUNCTION ep._store_horizon_applied();
ALTER TABLE ep.store_horizon ENABLE REPLICA TRIGGER store_horizon_applied;

-- Publications of the store made by ep.publish_store (on a writer).
CREATE TABLE ep.store_publications (
    publication name        NOT NULL PRIMARY KEY,
    categories  text[],
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.store_publications IS 'Publications of the store made by ep.publish_store (writer side); categories NULL = every category';
SELECT pg_catalog.pg_extension_config_dump('ep.store_publications', '');

-- The store this database follows (at most one; reader side).
CREATE TABLE ep.store_follow (
    name         text        NOT NULL PRIMARY KEY,
    subscription name        NOT NULL,
    publication  name        NOT NULL,
    source       text,
    followed_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX store_follow_one ON ep.store_follow ((true));
COMMENT ON TABLE ep.store_follow IS 'The store this database follows (ep.follow_store): its subscription, publication and writer (connection string without password)';

CREATE FUNCTION ep.publish_horizon() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_publish_horizon';
COMMENT ON FUNCTION ep.publish_horizon() IS 'On a writer that publishes its store: publish its current read horizon to the readers now (the worker does it after appending commits); returns the horizon position, NULL when the store is not published';
REVOKE ALL ON FUNCTION ep.publish_horizon() FROM PUBLIC;

CREATE FUNCTION ep._is_reader() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'ep_is_reader';
COMMENT ON FUNCTION ep._is_reader() IS 'Internal: true when this database follows a store (its ep.events is a read-only copy)';

CREATE FUNCTION ep._readable_position() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_readable_position';
COMMENT ON FUNCTION ep._readable_position() IS 'Internal: the highest position global reads may return now in this database';

CREATE FUNCTION ep.publish_store(publication name DEFAULT 'ep_store', categories text[] DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    events_filter text := '';
    streams_filter text := '';
BEGIN
    IF publication IS NULL THEN
        RAISE EXCEPTION 'publication must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF categories IS NOT NULL AND (pg_catalog.cardinality(categories) OPERATOR(pg_catalog.=) 0
                                   OR pg_catalog.array_position(categories, NULL) IS NOT NULL
                                   OR '' OPERATOR(pg_catalog.=) ANY (categories)) THEN
        RAISE EXCEPTION 'categories must be NULL or a non-empty array of non-empty names'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ep._is_reader() THEN
        RAISE EXCEPTION 'this database follows another store and cannot publish its copy'
            USING ERRCODE = 'EP005',
                  HINT = 'Publish the store on its writer; every reader may follow the writer directly.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_publication p WHERE p.pubname OPERATOR(pg_catalog.=) publication) THEN
        RAISE EXCEPTION 'publication "%" already exists', publication USING ERRCODE = 'duplicate_object';
    END IF;
    IF categories IS NOT NULL THEN
        -- Row filters of UPDATE/DELETE may only use replica-identity columns:
        -- the events' category is not in their key. Redactions and deletions
        -- are rare, so the full old row is logged for them; ep.streams (updated
        -- by every append) is filtered on its key, the stream id.
        ALTER TABLE ep.events REPLICA IDENTITY FULL;
        ALTER TABLE ep.redactions REPLICA IDENTITY FULL;
        events_filter := pg_catalog.format(' WHERE (category OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.text[]))',
                                           categories);
        streams_filter := pg_catalog.format(' WHERE (pg_catalog.split_part(stream_id, %L, 1) OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.text[]))',
                                            '-', categories);
    END IF;
    EXECUTE pg_catalog.format('CREATE PUBLICATION %I FOR TABLE ep.events%s, ep.streams%s, ep.redactions%s, ep.store_horizon',
                              publication, events_filter, streams_filter, streams_filter);
    INSERT INTO ep.store_publications (publication, categories) VALUES (publication, categories);
    PERFORM ep.publish_horizon();
END
$$;
COMMENT ON FUNCTION ep.publish_store(name, text[]) IS 'On the writer: a native publication of the store (events, stream limits and deletions, redactions, the read horizon), optionally only of some categories';
REVOKE ALL ON FUNCTION ep.publish_store(name, text[]) FROM PUBLIC;

CREATE FUNCTION ep.unpublish_store(publication name DEFAULT 'ep_store')
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ep.store_publications s WHERE s.publication OPERATOR(pg_catalog.=) unpublish_store.publication) THEN
        RAISE EXCEPTION 'publication "%" is not a publication of the store', publication
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE pg_catalog.format('DROP PUBLICATION IF EXISTS %I', publication);
    DELETE FROM ep.store_publications s WHERE s.publication OPERATOR(pg_catalog.=) unpublish_store.publication;
END
$$;
COMMENT ON FUNCTION ep.unpublish_store(name) IS 'On the writer: drop a publication made by ep.publish_store (its followers stop receiving; their slots stay until they unfollow)';
REVOKE ALL ON FUNCTION ep.unpublish_store(name) FROM PUBLIC;

CREATE FUNCTION ep.follow_store(name text, conninfo text, publication name DEFAULT 'ep_store')
    RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_follow_store';
COMMENT ON FUNCTION ep.follow_store(text, text, name) IS 'On a reader: follow the store published by a writer (native subscription, its slot created first, also within one cluster); ep.events becomes a read-only copy (EP005); superusers only';
REVOKE ALL ON FUNCTION ep.follow_store(text, text, name) FROM PUBLIC;

CREATE FUNCTION ep.unfollow_store(name text)
    RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_unfollow_store';
COMMENT ON FUNCTION ep.unfollow_store(text) IS 'On a reader: stop following (drops the subscription and its slot on the writer); the copy stays and becomes writable';
REVOKE ALL ON FUNCTION ep.unfollow_store(text) FROM PUBLIC;

CREATE FUNCTION ep.last_position() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_last_position';
COMMENT ON FUNCTION ep.last_position() IS 'The global position of the last event this session appended (a read-your-writes token for ep.wait_for_position on a reader); NULL before the first append';

CREATE FUNCTION ep.wait_for_position("position" bigint, timeout interval DEFAULT '10 seconds')
    RETURNS boolean LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_wait_for_position';
COMMENT ON FUNCTION ep.wait_for_position(bigint, interval) IS 'True once every event up to position is readable in this database (on a reader: replicated and below the writer''s horizon); false after the timeout';

-- One row on a reader; on a writer one row per follower slot (logical slots
-- of this database using pgoutput), or one row when none follows.
CREATE VIEW ep.store_status AS
SELECT 'reader'::text AS role,
       f.source,
       ep._readable_position() AS readable_position,
       GREATEST(GREATEST(h.issued, (SELECT pg_catalog.max(e.global_position) FROM ep.events e))
                OPERATOR(pg_catalog.-) ep._readable_position(), 0)::bigint AS lag_events,
       CASE WHEN h.published_at IS NULL THEN NULL::double precision
            WHEN h.issued OPERATOR(pg_catalog.<=) h."position" THEN 0::double precision
            ELSE pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) h.published_at)
       END AS lag_seconds,
       f.name AS follower,
       NULL::name AS slot_name,
       NULL::bigint AS slot_lag_bytes,
       NULL::text AS wal_status,
       (s.pid IS NOT NULL) AS active,
       h.published_at AS horizon_published_at
  FROM ep.store_follow f
  LEFT JOIN ep.store_horizon h ON true
  LEFT JOIN pg_catalog.pg_stat_subscription s
         ON s.subname OPERATOR(pg_catalog.=) f.subscription AND s.relid IS NULL
UNION ALL
SELECT 'writer'::text,
       NULL::text,
       ep._readable_position(),
       NULL::bigint,
       CASE WHEN r.pid IS NULL THEN NULL::double precision
            ELSE COALESCE(pg_catalog.date_part('epoch', r.replay_lag), 0) END,
       r.application_name::text,
       sl.slot_name,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.confirmed_flush_lsn)::bigint,
       sl.wal_status,
       sl.active,
       h.published_at
  FROM ep.store_horizon h
  LEFT JOIN pg_catalog.pg_replication_slots sl
         ON sl.database OPERATOR(pg_catalog.=) pg_catalog.current_database()
        AND sl.plugin OPERATOR(pg_catalog.=) 'pgoutput'
        AND sl.slot_type OPERATOR(pg_catalog.=) 'logical'
  LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid OPERATOR(pg_catalog.=) sl.active_pid
 WHERE EXISTS (SELECT FROM ep.store_publications)
   AND NOT EXISTS (SELECT FROM ep.store_follow);
COMMENT ON VIEW ep.store_status IS 'Read nodes: on a reader its source, readable position and lag; on a writer each follower''s slot (lag in bytes and seconds, wal_status: lost means the follower must re-sync)';
GRANT SELECT ON ep.store_status TO PUBLIC;


CREATE FUNCTION ep.resync_store(name text)
    RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_resync_store';
COMMENT ON FUNCTION ep.resync_store(text) IS 'On a reader whose slot the writer lost or dropped: a new subscription and slot, the local copy emptied and copied again; projections keep their progress; superusers only';
REVOKE ALL ON FUNCTION ep.resync_store(text) FROM PUBLIC;

-- END read nodes

-- BEGIN async views (src/sql/45_ivm_async.sql)
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

-- END async views

-- Forwards check their owner's read privilege on each event's category
-- (review round 3)
CREATE FUNCTION ep._category_may_read(category text, role regrole) RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_category_may_read';
COMMENT ON FUNCTION ep._category_may_read(text, regrole) IS
    'Internal: may the role read the category (true for a NULL category)';

-- ---------------------------------------------------------------------------
-- Service channels (issue 16): message handlers are projections of kind
-- 'message'; the rest is src/sql/50_channel.sql.
-- ---------------------------------------------------------------------------
ALTER TABLE ep.projection_defs DROP CONSTRAINT projection_defs_kind_check;
ALTER TABLE ep.projection_defs ADD CONSTRAINT projection_defs_kind_check
    CHECK (kind IN ('events', 'table', 'message'));
ALTER TABLE ep.projection_defs DROP CONSTRAINT projection_defs_check;
ALTER TABLE ep.projection_defs ADD CONSTRAINT projection_defs_check
    CHECK ((kind IN ('table', 'message')) = (source IS NOT NULL));

-- BEGIN copy of src/sql/50_channel.sql
-- ---------------------------------------------------------------------------
-- Service channels (database per service): a transactional outbox on the
-- producer, native logical replication, exactly-once handlers on consumers.
--
-- Every channel's messages live in a partition of ep.messages named
-- ep_channels."<channel>", the same name on the producer and on every
-- consumer (native replication matches tables by name). Channel names are
-- global: by convention they start with the producing service's name
-- ("orders.events"), and a database cannot consume a channel of the same
-- name as one it produces. The producer publishes its partition with
-- publish = 'insert' (its pruning never deletes a consumer's copy).
--
-- Who may do what (the extension owner may do everything):
--   create_channel      roles with CREATE on the database; they own it
--   send, forward       the owner and roles granted 'send'
--   read messages       the owner and roles granted 'read' (ep.messages
--                       shows only channels the caller may read)
--   subscribe_channel   not PUBLIC (it connects to other servers and creates
--                       a subscription); granted explicitly; the caller owns
--                       the consumer side of the channel
--   message handlers    the owner and roles granted 'read' on the consumer
-- ---------------------------------------------------------------------------

CREATE SCHEMA ep_channels;
COMMENT ON SCHEMA ep_channels IS
    'event_patterns: one table per service channel (a partition of ep.messages), named after the channel on producer and consumers alike';

CREATE SEQUENCE ep.message_received_seq;
COMMENT ON SEQUENCE ep.message_received_seq IS
    'Internal: order in which a consumer received messages (ep.messages.received_seq)';

CREATE TABLE ep.messages (
    channel      text        NOT NULL,
    message_id   uuid        NOT NULL,
    position     bigint      NOT NULL,
    message_type text        NOT NULL,
    key          text,
    payload      jsonb,
    headers      jsonb,
    sent_at      timestamptz NOT NULL,
    received_seq bigint,
    PRIMARY KEY (channel, message_id)
) PARTITION BY LIST (channel);
COMMENT ON TABLE ep.messages IS
    'Messages of the service channels of this database, sent (producer) or received (consumer); position: commit-independent send order on the producer; received_seq: arrival order on a consumer (NULL on the producer); headers may carry reply_to and correlation_id';
CREATE INDEX messages_position_idx ON ep.messages (channel, position);

CREATE TABLE ep.channel_defs (
    channel       text        NOT NULL PRIMARY KEY,
    role          text        NOT NULL CHECK (role IN ('producer', 'consumer')),
    owner         regrole     NOT NULL,
    partition     regclass    NOT NULL,
    publication   name,
    subscription  name,
    slot_name     name,
    source        text,
    generation    integer     NOT NULL DEFAULT 0,
    senders       regrole[]   NOT NULL DEFAULT '{}',
    readers       regrole[]   NOT NULL DEFAULT '{}',
    pruned_below  bigint      NOT NULL DEFAULT 0,
    pruned_count  bigint      NOT NULL DEFAULT 0,
    pruned_before timestamptz,
    dedup_until   pg_lsn,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.channel_defs IS
    'Service channels of this database (read them through ep.channels): producer side (publication) or consumer side (subscription, slot on the producer, source without password); senders/readers: roles granted send/read; pruned_*: what retention removed; dedup_until: messages fetched at subscription may also be streamed until the subscription has applied the producer''s WAL to here (the receive trigger drops them)';

-- Backends cache the table (ep.send, message handlers): every change makes
-- them read it again.
CREATE FUNCTION ep._channel_defs_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_channel_defs_changed';
COMMENT ON FUNCTION ep._channel_defs_changed() IS
    'Internal: trigger on ep.channel_defs that makes every backend reload its cache of channel definitions';
REVOKE ALL ON FUNCTION ep._channel_defs_changed() FROM PUBLIC;
-- only what the cache holds: not the bookkeeping of retention and errors
CREATE TRIGGER channel_defs_changed
    AFTER INSERT OR UPDATE OF channel, role, owner, partition, senders, readers OR DELETE OR TRUNCATE
    ON ep.channel_defs
    FOR EACH STATEMENT EXECUTE FUNCTION ep._channel_defs_changed();

-- Producer: (horizon, lsn) marks. Every message with position < horizon
-- committed before lsn; once every consumer's slot confirmed lsn they all
-- have received them.
CREATE TABLE ep.channel_marks (
    channel   text        NOT NULL REFERENCES ep.channel_defs ON DELETE CASCADE,
    horizon   bigint      NOT NULL,
    lsn       pg_lsn      NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (channel, horizon)
);
COMMENT ON TABLE ep.channel_marks IS
    'Internal: points of the producer''s pruning: every message with position below horizon committed before lsn';

CREATE TABLE ep.channel_forwards (
    forward_id  integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text        NOT NULL REFERENCES ep.channel_defs ON DELETE CASCADE,
    category    text,
    event_types text[],
    owner       regrole     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE NULLS NOT DISTINCT (channel, category, event_types)
);
COMMENT ON TABLE ep.channel_forwards IS
    'Events forwarded to channels by ep.forward_events (category and/or event types; NULL: all)';

-- Definitions are not secret (no passwords: source has them masked);
-- messages are (ep.messages shows readable channels only).
GRANT SELECT ON ep.channel_forwards, ep.channel_defs, ep.channel_marks TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.channel_defs', '');
SELECT pg_catalog.pg_extension_config_dump('ep.channel_forwards', '');

-- Privilege checks --------------------------------------------------------

CREATE FUNCTION ep._channel_may(channel text, member regrole, privilege text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE((SELECT pg_catalog.pg_has_role($2::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER')
                            OR pg_catalog.pg_has_role($2::pg_catalog.oid,
                                   (SELECT e.extowner FROM pg_catalog.pg_extension e
                                     WHERE e.extname OPERATOR(pg_catalog.=) 'event_patterns'), 'MEMBER')
                            OR EXISTS (SELECT 1 FROM pg_catalog.unnest(CASE $3
                                                           WHEN 'send' THEN d.senders
                                                           ELSE d.readers END) g
                                        WHERE pg_catalog.pg_has_role($2::pg_catalog.oid, g::pg_catalog.oid, 'MEMBER'))
                       FROM ep.channel_defs d WHERE d.channel OPERATOR(pg_catalog.=) $1), false)
$$;
COMMENT ON FUNCTION ep._channel_may(text, regrole, text) IS
    'Internal: may the role send on (privilege ''send'') or read (''read'') the channel: its owner, the extension owner, and roles granted the privilege';

CREATE FUNCTION ep._readable_channels() RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.array_agg(d.channel), '{}')
      FROM ep.channel_defs d
     WHERE ep._channel_may(d.channel, ep._role(CURRENT_USER), 'read')
$$;
COMMENT ON FUNCTION ep._readable_channels() IS
    'Internal: the channels the current user may read (for row-level security; evaluate it once per query as a scalar subquery)';

CREATE FUNCTION ep._channel_check_name(channel text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF channel IS NULL OR channel OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'
       OR pg_catalog.length(channel) OPERATOR(pg_catalog.>) 48 THEN
        RAISE EXCEPTION 'invalid channel name "%"', channel
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'A channel name is lower-case letters, digits and underscores in dot-separated parts, at most 48 characters.',
                  HINT = 'Start it with the producing service''s name, e.g. ''orders.events'': channel names are shared by every service.';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._channel_check_name(text) IS 'Internal: raises 42602 for a malformed channel name';

-- Row-level security: ep.messages shows the channels the caller may read.
ALTER TABLE ep.messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY messages_read ON ep.messages FOR SELECT
    USING (channel OPERATOR(pg_catalog.=) ANY ((SELECT ep._readable_channels())::pg_catalog.text[]));
GRANT SELECT ON ep.messages TO PUBLIC;

-- The partition of a channel ------------------------------------------------

CREATE FUNCTION ep._channel_create_partition(channel text, consumer boolean) RETURNS regclass
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
    g oid;
BEGIN
    EXECUTE pg_catalog.format('CREATE TABLE ep_channels.%I PARTITION OF ep.messages FOR VALUES IN (%L)',
                              channel, channel);
    part := pg_catalog.format('ep_channels.%I', channel)::pg_catalog.regclass;
    -- read directly, a partition bypasses ep.messages' row-level security:
    -- nobody but its owner has privileges on it, whatever default
    -- privileges the extension owner has set up
    FOR g IN SELECT DISTINCT a.grantee
               FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid OPERATOR(pg_catalog.=) part AND a.grantee OPERATOR(pg_catalog.<>) c.relowner LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM %s', part,
                                  CASE WHEN g OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g)) END);
    END LOOP;
    EXECUTE pg_catalog.format('COMMENT ON TABLE ep_channels.%I IS %L', channel,
                              pg_catalog.format('Messages of channel %s (%s side)', channel,
                                                CASE WHEN consumer THEN 'consumer' ELSE 'producer' END));
    IF consumer THEN
        EXECUTE pg_catalog.format('ALTER TABLE ep_channels.%I ALTER COLUMN received_seq'
                                  ' SET DEFAULT pg_catalog.nextval(''ep.message_received_seq''::pg_catalog.regclass)',
                                  channel);
        EXECUTE pg_catalog.format('CREATE INDEX ON ep_channels.%I (received_seq)', channel);
        -- fires for the apply worker and the initial copy (replica mode)
        EXECUTE pg_catalog.format('CREATE TRIGGER receive BEFORE INSERT ON ep_channels.%I'
                                  ' FOR EACH ROW EXECUTE FUNCTION ep._message_receive(''dedup'')', channel);
        EXECUTE pg_catalog.format('ALTER TABLE ep_channels.%I ENABLE ALWAYS TRIGGER receive', channel);
    END IF;
    RETURN part;
END
$$;
COMMENT ON FUNCTION ep._channel_create_partition(text, boolean) IS
    'Internal: create the partition ep_channels."<channel>" of ep.messages (on a consumer with arrival order and the receive trigger)';

CREATE FUNCTION ep._message_receive() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_message_receive';
COMMENT ON FUNCTION ep._message_receive() IS
    'Internal trigger on a consumer''s channel table: wakes the worker at commit; with the argument ''dedup'' (only while the messages fetched at subscription may arrive again) drops a message whose id is present';

CREATE FUNCTION ep._channel_set_dedup(channel text, dedup boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format('DROP TRIGGER receive ON ep_channels.%I', channel);
    EXECUTE pg_catalog.format('CREATE TRIGGER receive BEFORE INSERT ON ep_channels.%I'
                              ' FOR EACH ROW EXECUTE FUNCTION ep._message_receive(%s)', channel,
                              CASE WHEN dedup THEN '''dedup''' ELSE '' END);
    EXECUTE pg_catalog.format('ALTER TABLE ep_channels.%I ENABLE ALWAYS TRIGGER receive', channel);
END
$$;
COMMENT ON FUNCTION ep._channel_set_dedup(text, boolean) IS
    'Internal: switch the receive trigger of a consumer''s channel table between checking for messages received twice and only waking the worker';
REVOKE ALL ON FUNCTION ep._channel_set_dedup(text, boolean) FROM PUBLIC;

-- Producer ------------------------------------------------------------------

CREATE FUNCTION ep._create_channel(caller regrole, channel text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
    pub name;
BEGIN
    PERFORM ep._channel_check_name(channel);
    IF NOT pg_catalog.has_database_privilege(caller::pg_catalog.oid, pg_catalog.current_database(), 'CREATE') THEN
        RAISE EXCEPTION 'permission denied to create channel "%"', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Creating a channel creates a publication, which needs CREATE on the database.';
    END IF;
    IF EXISTS (SELECT 1 FROM ep.channel_defs d WHERE d.channel OPERATOR(pg_catalog.=) _create_channel.channel) THEN
        RAISE EXCEPTION 'channel "%" already exists', channel USING ERRCODE = 'duplicate_object';
    END IF;
    part := ep._channel_create_partition(channel, false);
    pub := ('ep_channel:' OPERATOR(pg_catalog.||) channel)::name;
    EXECUTE pg_catalog.format('CREATE PUBLICATION %I FOR TABLE ep_channels.%I'
                              ' (channel, message_id, position, message_type, key, payload, headers, sent_at)'
                              ' WITH (publish = ''insert'')', pub, channel);
    INSERT INTO ep.channel_defs (channel, role, owner, partition, publication)
    VALUES (channel, 'producer', caller, part, pub);
END
$$;
COMMENT ON FUNCTION ep._create_channel(regrole, text) IS 'Internal: ep.create_channel() for the calling role (run as the extension owner by ep.create_channel)';
REVOKE ALL ON FUNCTION ep._create_channel(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep.create_channel(channel text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.create_channel(text) IS
    'On the producer: create a channel (its outbox table ep_channels."<channel>" and a publication of its inserts); the caller owns it. Name it after the producing service, e.g. ''orders.events''';

CREATE FUNCTION ep.send(channel text, message_type text, payload jsonb, key text DEFAULT NULL,
                        headers jsonb DEFAULT NULL)
    RETURNS uuid LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_send';
COMMENT ON FUNCTION ep.send(text, text, jsonb, text, jsonb) IS
    'Send a message on a channel in the caller''s transaction (outbox): delivered to every consumer if and only if the transaction commits, in commit order; returns the message id. Headers reply_to (a channel) and correlation_id (text) are the request/reply convention';

CREATE FUNCTION ep.reply(request ep.messages, message_type text, payload jsonb,
                         headers jsonb DEFAULT NULL)
    RETURNS uuid LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF request.headers IS NULL OR request.headers OPERATOR(pg_catalog.->>) 'reply_to' IS NULL THEN
        RAISE EXCEPTION 'the request has no reply_to header'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Send requests with headers {"reply_to": "<channel>"}.';
    END IF;
    RETURN ep.send(request.headers OPERATOR(pg_catalog.->>) 'reply_to', message_type, payload, request.key,
                   COALESCE(headers, '{}'::jsonb) OPERATOR(pg_catalog.||)
                   pg_catalog.jsonb_build_object('correlation_id',
                       COALESCE(request.headers OPERATOR(pg_catalog.->>) 'correlation_id', request.message_id::text),
                       'in_reply_to', request.message_id));
END
$$;
COMMENT ON FUNCTION ep.reply(ep.messages, text, jsonb, jsonb) IS
    'Answer a request: send on the channel named by its reply_to header, with its correlation_id (or its message id) and in_reply_to; the caller must be allowed to send on that channel';

CREATE FUNCTION ep._channel_privileges(caller regrole, channel text, grantee regrole, privileges text[],
                                       grant_them boolean)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
BEGIN
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _channel_privileges.channel FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER')
       AND NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                     WHERE e.extname OPERATOR(pg_catalog.=) 'event_patterns'), 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Only the channel''s owner can %s privileges on it.',
                                             CASE WHEN grant_them THEN 'grant' ELSE 'revoke' END);
    END IF;
    -- the same for grant and revoke: a NULL takes nothing back silently
    IF grantee IS NULL THEN
        RAISE EXCEPTION 'grantee must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF privileges IS NULL OR pg_catalog.cardinality(privileges) OPERATOR(pg_catalog.=) 0
       OR NOT (privileges OPERATOR(pg_catalog.<@) '{send,read}'::text[])
       OR pg_catalog.array_position(privileges, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'privileges must be a non-empty subset of {send,read}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE ep.channel_defs c
       SET senders = CASE WHEN NOT 'send' OPERATOR(pg_catalog.=) ANY (privileges) THEN c.senders
                          WHEN NOT grant_them THEN pg_catalog.array_remove(c.senders, grantee)
                          WHEN grantee OPERATOR(pg_catalog.=) ANY (c.senders) THEN c.senders
                          ELSE c.senders OPERATOR(pg_catalog.||) grantee END,
           readers = CASE WHEN NOT 'read' OPERATOR(pg_catalog.=) ANY (privileges) THEN c.readers
                          WHEN NOT grant_them THEN pg_catalog.array_remove(c.readers, grantee)
                          WHEN grantee OPERATOR(pg_catalog.=) ANY (c.readers) THEN c.readers
                          ELSE c.readers OPERATOR(pg_catalog.||) grantee END
     WHERE c.channel OPERATOR(pg_catalog.=) _channel_privileges.channel;
END
$$;
COMMENT ON FUNCTION ep._channel_privileges(regrole, text, regrole, text[], boolean) IS
    'Internal: grant (true) or revoke (false) send/read on a channel for the calling role: only the channel''s owner or the extension owner';
REVOKE ALL ON FUNCTION ep._channel_privileges(regrole, text, regrole, text[], boolean) FROM PUBLIC;

-- ep.grant_channel and ep.revoke_channel call ep._<name> (ep_channel_api)
CREATE FUNCTION ep._grant_channel(caller regrole, channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._channel_privileges(caller, channel, grantee, privileges, true) $$;
COMMENT ON FUNCTION ep._grant_channel(regrole, text, regrole, text[]) IS 'Internal: ep.grant_channel() for the calling role (run as the extension owner by ep.grant_channel)';
REVOKE ALL ON FUNCTION ep._grant_channel(regrole, text, regrole, text[]) FROM PUBLIC;

CREATE FUNCTION ep.grant_channel(channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.grant_channel(text, regrole, text[]) IS
    'Let a role send on (''send'') or read and handle (''read'') a channel; only the channel''s owner (or the extension owner) may call it';

CREATE FUNCTION ep._revoke_channel(caller regrole, channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._channel_privileges(caller, channel, grantee, privileges, false) $$;
COMMENT ON FUNCTION ep._revoke_channel(regrole, text, regrole, text[]) IS 'Internal: ep.revoke_channel() for the calling role (run as the extension owner by ep.revoke_channel)';
REVOKE ALL ON FUNCTION ep._revoke_channel(regrole, text, regrole, text[]) FROM PUBLIC;

CREATE FUNCTION ep.revoke_channel(channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.revoke_channel(text, regrole, text[]) IS
    'Take back privileges granted with ep.grant_channel (message handlers of a role that can no longer read stop with status failed)';

-- Forwarding events: an AFTER INSERT trigger on ep.events that exists only
-- while some forward does (appends pay nothing otherwise).
CREATE FUNCTION ep._forward_events_trigger() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- it runs as the extension owner: only on the store's own table
    IF TG_RELID OPERATOR(pg_catalog.<>) 'ep.events'::pg_catalog.regclass
       OR TG_WHEN OPERATOR(pg_catalog.<>) 'AFTER' OR TG_OP OPERATOR(pg_catalog.<>) 'INSERT'
       OR TG_LEVEL OPERATOR(pg_catalog.<>) 'ROW' THEN
        RAISE EXCEPTION 'ep._forward_events_trigger() fires only as the AFTER INSERT row trigger of ep.events'
            USING ERRCODE = 'triggered_action_exception';
    END IF;
    INSERT INTO ep.messages (channel, message_id, position, message_type, key, payload, headers, sent_at)
    SELECT DISTINCT ON (f.channel) f.channel, NEW.event_id, NEW.global_position, NEW.event_type, NEW.stream_id, NEW.data,
           (CASE WHEN pg_catalog.jsonb_typeof(NEW.metadata) OPERATOR(pg_catalog.=) 'object'
                 THEN NEW.metadata ELSE '{}'::jsonb END)
           OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('stream_id', NEW.stream_id,
                                                                 'stream_version', NEW.stream_version,
                                                                 'global_position', NEW.global_position),
           pg_catalog.clock_timestamp()
      FROM ep.channel_forwards f
     WHERE (f.category IS NULL OR f.category OPERATOR(pg_catalog.=) NEW.category)
       AND (f.event_types IS NULL OR NEW.event_type OPERATOR(pg_catalog.=) ANY (f.event_types))
       -- privileges are checked on every event, not only when the forward
       -- was made: a forward whose owner lost send on the channel or read
       -- on the category sends nothing (the append itself goes on)
       AND ep._category_may_read(NEW.category, f.owner)
       AND ep._channel_may(f.channel, f.owner, 'send')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION ep._forward_events_trigger() IS
    'Internal trigger on ep.events: sends every appended event that a forward matches on its channel, in the appending transaction (message id = event id, position = global position, key = stream id)';
REVOKE ALL ON FUNCTION ep._forward_events_trigger() FROM PUBLIC;

CREATE FUNCTION ep._sync_forward_trigger()
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted boolean;
    present boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM ep.channel_forwards) INTO wanted;
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid OPERATOR(pg_catalog.=) 'ep.events'::regclass
                      AND t.tgname OPERATOR(pg_catalog.=) 'events_forward_to_channels')
      INTO present;
    IF wanted AND NOT present THEN
        CREATE TRIGGER events_forward_to_channels AFTER INSERT ON ep.events
            FOR EACH ROW EXECUTE FUNCTION ep._forward_events_trigger();
    ELSIF present AND NOT wanted THEN
        DROP TRIGGER events_forward_to_channels ON ep.events;
    END IF;
END
$$;
COMMENT ON FUNCTION ep._sync_forward_trigger() IS 'Internal: create or drop the forwarding trigger on ep.events';
REVOKE ALL ON FUNCTION ep._sync_forward_trigger() FROM PUBLIC;

CREATE FUNCTION ep._forward_events(caller regrole, channel text, category text, event_types text[])
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me regrole := caller;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ep.channel_defs d WHERE d.channel OPERATOR(pg_catalog.=) _forward_events.channel
                                                   AND d.role OPERATOR(pg_catalog.=) 'producer') THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel
            USING ERRCODE = 'undefined_object', HINT = 'Create it with ep.create_channel() on this database.';
    END IF;
    IF NOT ep._channel_may(channel, me, 'send') THEN
        RAISE EXCEPTION 'permission denied to send on channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF event_types IS NOT NULL AND (pg_catalog.array_position(event_types, NULL) IS NOT NULL
                                    OR pg_catalog.cardinality(event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- forwarding publishes what the caller reads: an owned category needs read
    PERFORM ep._category_check_read(category, me);
    IF category IS NULL AND EXISTS (SELECT 1 FROM ep.categories c
                                     WHERE NOT pg_catalog.pg_has_role(me::pg_catalog.oid, c.owner::pg_catalog.oid, 'MEMBER'))
       AND NOT pg_catalog.pg_has_role(me::pg_catalog.oid, (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                          WHERE e.extname OPERATOR(pg_catalog.=) 'event_patterns'), 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to forward every category'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Some categories are owned by other roles.',
                  HINT = 'Forward one category at a time.';
    END IF;
    INSERT INTO ep.channel_forwards (channel, category, event_types, owner)
    VALUES (channel, category, event_types, me)
    ON CONFLICT DO NOTHING;
    PERFORM ep._sync_forward_trigger();
END
$$;
COMMENT ON FUNCTION ep._forward_events(regrole, text, text, text[]) IS 'Internal: ep.forward_events() for the calling role (run as the extension owner by ep.forward_events)';
REVOKE ALL ON FUNCTION ep._forward_events(regrole, text, text, text[]) FROM PUBLIC;

CREATE FUNCTION ep.forward_events(channel text, category text DEFAULT NULL, event_types text[] DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.forward_events(text, text, text[]) IS
    'On the producer: from now on every appended event of the category (NULL: all) and event types (NULL: all) is also sent on the channel, in the appending transaction; message id = event id, key = stream id, headers = metadata plus stream_id, stream_version, global_position';

CREATE FUNCTION ep._unforward_events(caller regrole, channel text, category text, event_types text[])
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT ep._channel_may(channel, caller, 'send') THEN
        RAISE EXCEPTION 'permission denied to send on channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM ep.channel_forwards f
     WHERE f.channel OPERATOR(pg_catalog.=) _unforward_events.channel
       AND f.category IS NOT DISTINCT FROM _unforward_events.category
       AND f.event_types IS NOT DISTINCT FROM _unforward_events.event_types;
    PERFORM ep._sync_forward_trigger();
END
$$;
COMMENT ON FUNCTION ep._unforward_events(regrole, text, text, text[]) IS 'Internal: ep.unforward_events() for the calling role (run as the extension owner by ep.unforward_events)';
REVOKE ALL ON FUNCTION ep._unforward_events(regrole, text, text, text[]) FROM PUBLIC;

CREATE FUNCTION ep.unforward_events(channel text, category text DEFAULT NULL, event_types text[] DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.unforward_events(text, text, text[]) IS 'Stop a forward created by ep.forward_events';

-- Consumer ------------------------------------------------------------------

CREATE FUNCTION ep._channel_slot_base(channel text) RETURNS name
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(channel), 10) OPERATOR(pg_catalog.||) '_'
            OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(s.system_identifier::text OPERATOR(pg_catalog.||) ':'
                                         OPERATOR(pg_catalog.||) d.oid::text), 10))::name
      FROM pg_catalog.pg_control_system() s, pg_catalog.pg_database d
     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
$$;
COMMENT ON FUNCTION ep._channel_slot_base(text) IS
    'Internal: name of a consumer''s slots on the producer (epch_<channel hash>_<consumer hash>, then _<generation>); the producer finds its consumers by the channel hash';

CREATE FUNCTION ep._channel_remote_slot(conninfo text, slot_name name, create_it boolean)
    RETURNS boolean LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_remote_slot';
COMMENT ON FUNCTION ep._channel_remote_slot(text, name, boolean) IS
    'Internal: create (true) a pgoutput slot on the producer now, dropped again if the (sub)transaction aborts, or drop (false) one just before commit (the slot part of the native-subscription primitive); creating must run before the transaction writes (same-cluster slots wait for writing transactions)';
REVOKE ALL ON FUNCTION ep._channel_remote_slot(text, name, boolean) FROM PUBLIC;

CREATE FUNCTION ep._channel_fetch(conninfo text, of_channel text,
                                  OUT channel text, OUT message_id uuid, OUT "position" bigint,
                                  OUT message_type text, OUT key text, OUT payload jsonb, OUT headers jsonb,
                                  OUT sent_at timestamptz)
    RETURNS SETOF record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_fetch';
COMMENT ON FUNCTION ep._channel_fetch(text, text) IS
    'Internal: the messages the producer has on a channel (ep.channel_messages there), through a connection to it';
REVOKE ALL ON FUNCTION ep._channel_fetch(text, text) FROM PUBLIC;

CREATE FUNCTION ep._channel_remote_lsn(conninfo text) RETURNS pg_lsn
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_remote_lsn';
COMMENT ON FUNCTION ep._channel_remote_lsn(text) IS 'Internal: the producer''s current WAL insert position';
REVOKE ALL ON FUNCTION ep._channel_remote_lsn(text) FROM PUBLIC;

CREATE FUNCTION ep._channel_remote_state(conninfo text, channel text, slot_name name,
                                         OUT channel_exists boolean, OUT slot_exists boolean,
                                         OUT pruned_below bigint, OUT pruned_count bigint,
                                         OUT min_position bigint)
    RETURNS record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_remote_state';
COMMENT ON FUNCTION ep._channel_remote_state(text, text, name) IS
    'Internal: ask the producer whether the channel and the slot exist and what its retention removed';
REVOKE ALL ON FUNCTION ep._channel_remote_state(text, text, name) FROM PUBLIC;

CREATE FUNCTION ep._channel_check_conninfo(caller regrole, conninfo text) RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_check_conninfo';
COMMENT ON FUNCTION ep._channel_check_conninfo(regrole, text) IS
    'Internal: the connection string the extension owner uses for the caller: as given for a superuser; any other caller must give a password the producer asks for (a test connection checks) and one server by socket directory or numeric address, and the result presents none of the server''s own credentials';
REVOKE ALL ON FUNCTION ep._channel_check_conninfo(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep._channel_conninfo_shown(conninfo text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT
    AS 'MODULE_PATHNAME', 'ep_channel_conninfo_shown';
COMMENT ON FUNCTION ep._channel_conninfo_shown(text) IS
    'Internal: a connection string as keyword=value pairs without its passwords (ep.channel_defs.source)';
REVOKE ALL ON FUNCTION ep._channel_conninfo_shown(text) FROM PUBLIC;

CREATE FUNCTION ep._subscribe_channel(caller regrole, channel text, conninfo text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
    st record;
    slot name;
    gen integer := 0;
    sub name;
    part regclass;
    local_max bigint;
    shown text;
BEGIN
    PERFORM ep._channel_check_name(channel);
    IF conninfo IS NULL THEN
        RAISE EXCEPTION 'conninfo must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
    IF FOUND AND d.role OPERATOR(pg_catalog.=) 'producer' THEN
        RAISE EXCEPTION 'channel "%" is produced by this database', channel
            USING ERRCODE = 'duplicate_object',
                  DETAIL = 'A database cannot consume a channel of the same name as one it produces.';
    END IF;
    IF FOUND AND NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- the extension owner connects: for a role that is not a superuser,
    -- with a checked password and none of the server's own credentials;
    -- every connection below uses this connection string (and the
    -- definition shows it, without passwords: a socket directory as used)
    conninfo := ep._channel_check_conninfo(caller, conninfo);
    shown := ep._channel_conninfo_shown(conninfo);
    -- nothing is written before the slot exists (see ep._channel_remote_slot)
    st := ep._channel_remote_state(conninfo, channel, d.slot_name);
    IF NOT st.channel_exists THEN
        RAISE EXCEPTION 'channel "%" does not exist on the producer', channel
            USING ERRCODE = 'undefined_object', HINT = 'Run ep.create_channel() on the producer first.';
    END IF;
    IF d.channel IS NOT NULL AND st.slot_exists THEN
        RAISE NOTICE 'channel "%" is already subscribed', channel;
        RETURN;
    END IF;
    IF d.channel IS NOT NULL THEN
        gen := d.generation OPERATOR(pg_catalog.+) 1;
    END IF;
    slot := (ep._channel_slot_base(channel) OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) gen::text)::name;
    -- if anything below fails, the abort drops the slot again: it does not
    -- stay behind pinning the producer's WAL
    PERFORM ep._channel_remote_slot(conninfo, slot, true);
    sub := ('ep_channel:' OPERATOR(pg_catalog.||) channel)::name;
    IF d.channel IS NULL THEN
        part := ep._channel_create_partition(channel, true);
        INSERT INTO ep.channel_defs (channel, role, owner, partition, subscription, slot_name, source)
        VALUES (channel, 'consumer', caller, part, sub, slot,
                shown);
    ELSE
        -- re-synchronization: the old slot is gone; what the producer still
        -- has is copied again (messages received before are dropped by the
        -- receive trigger), what its retention removed is lost
        SELECT pg_catalog.max(m.position) INTO local_max FROM ep.messages m
         WHERE m.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
        local_max := GREATEST(COALESCE(local_max, 0), d.pruned_below OPERATOR(pg_catalog.-) 1);
        IF st.pruned_below OPERATOR(pg_catalog.>) (local_max OPERATOR(pg_catalog.+) 1) THEN
            UPDATE ep.channel_defs c
               SET last_error = pg_catalog.format('re-synchronized at %s: the producer had already removed messages with positions below %s (%s removed in all); those sent after position %s that this consumer had not received are lost',
                                                  pg_catalog.now(), st.pruned_below, st.pruned_count, local_max)
             WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
            RAISE WARNING 'channel "%": messages may have been lost', channel
                USING DETAIL = pg_catalog.format('The producer removed messages with positions below %s before this consumer received them; this consumer has everything up to position %s.',
                                                 st.pruned_below, local_max);
        END IF;
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', sub);
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', sub);
        EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', sub);
        UPDATE ep.channel_defs c
           SET slot_name = slot, generation = gen,
               source = shown
         WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
    END IF;
    -- what the producer has now, in send order: everything committed
    -- before the slot's start is among it; what also arrives through
    -- the slot is dropped by the receive trigger until the subscription
    -- has applied the producer's WAL past the fetch (dedup_until). On a
    -- re-synchronization, messages this consumer handled and removed
    -- (sent before pruned_before) are not taken again.
    PERFORM ep._channel_set_dedup(channel, true);
    -- into the partition itself: its default numbers the arrivals
    EXECUTE pg_catalog.format(
        'INSERT INTO %s (channel, message_id, position, message_type, key, payload, headers, sent_at)'
        ' SELECT f.channel, f.message_id, f.position, f.message_type, f.key, f.payload, f.headers, f.sent_at'
        '   FROM ep._channel_fetch($1, $2) f'
        '  WHERE f.channel OPERATOR(pg_catalog.=) $2'
        '    AND ($3 IS NULL OR f.sent_at OPERATOR(pg_catalog.>=) $3)'
        '  ORDER BY f.position', COALESCE(part, d.partition))
      USING conninfo, channel, d.pruned_before;
    UPDATE ep.channel_defs c SET dedup_until = ep._channel_remote_lsn(conninfo)
     WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
    EXECUTE pg_catalog.format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I'
                              ' WITH (create_slot = false, slot_name = %L, copy_data = false)',
                              sub, conninfo, 'ep_channel:' OPERATOR(pg_catalog.||) channel, slot);
    -- the subscription takes every table the producer's publication lists,
    -- by name, and applies into it as the extension owner: a producer that
    -- published anything but the channel's table would write this
    -- database's tables. Refused (the abort undoes everything above).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                 JOIN pg_catalog.pg_subscription s ON s.oid OPERATOR(pg_catalog.=) r.srsubid
                WHERE s.subname OPERATOR(pg_catalog.=) sub
                  AND s.subdbid OPERATOR(pg_catalog.=) (SELECT b.oid FROM pg_catalog.pg_database b
                                                         WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                  AND r.srrelid OPERATOR(pg_catalog.<>) COALESCE(part, d.partition)::pg_catalog.oid) THEN
        RAISE EXCEPTION 'the producer''s publication of channel "%" lists other tables than the channel''s', channel
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = pg_catalog.format('Publication %I on the producer must contain only table ep_channels.%I; a subscription would write every table it lists.',
                                             'ep_channel:' OPERATOR(pg_catalog.||) channel, channel),
                  HINT = 'Remove the other tables from the publication on the producer (ALTER PUBLICATION ... DROP TABLE).';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._subscribe_channel(regrole, text, text) IS 'Internal: ep.subscribe_channel() for the calling role (run as the extension owner by ep.subscribe_channel)';
REVOKE ALL ON FUNCTION ep._subscribe_channel(regrole, text, text) FROM PUBLIC;

CREATE FUNCTION ep.subscribe_channel(channel text, conninfo text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.subscribe_channel(text, text) IS
    'On a consumer: receive a channel from its producer (native subscription; works between databases of one cluster: the slot is created first, outside the transaction''s writes). Call it as the first statement of a transaction. Called again after the consumer''s slot was lost, it re-synchronizes from what the producer still has and warns about what retention removed';
REVOKE ALL ON FUNCTION ep.subscribe_channel(text, text) FROM PUBLIC;

CREATE FUNCTION ep._unsubscribe_channel(caller regrole, channel text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
    conn text;
BEGIN
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _unsubscribe_channel.channel
                                            AND c.role OPERATOR(pg_catalog.=) 'consumer';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" is not subscribed', channel USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM ep.projection_defs p WHERE p.kind OPERATOR(pg_catalog.=) 'message'
                                                   AND p.source OPERATOR(pg_catalog.=) d.partition) THEN
        RAISE EXCEPTION 'channel "%" still has message handlers', channel
            USING ERRCODE = 'dependent_objects_still_exist', HINT = 'Drop them with ep.drop_projection() first.';
    END IF;
    SELECT s.subconninfo INTO conn FROM pg_catalog.pg_subscription s
     WHERE s.subname OPERATOR(pg_catalog.=) d.subscription
       AND s.subdbid OPERATOR(pg_catalog.=) (SELECT b.oid FROM pg_catalog.pg_database b
                                              WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database());
    -- the slot on the producer is dropped just before commit, through a
    -- connection of its own (DROP SUBSCRIPTION would need to run outside
    -- any transaction to drop it); an aborted transaction keeps it
    EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', d.subscription);
    EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', d.subscription);
    EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', d.subscription);
    EXECUTE pg_catalog.format('DROP TABLE %s', d.partition);
    DELETE FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _unsubscribe_channel.channel;
    IF conn IS NOT NULL THEN
        PERFORM ep._channel_remote_slot(conn, d.slot_name, false);
    END IF;
END
$$;
COMMENT ON FUNCTION ep._unsubscribe_channel(regrole, text) IS 'Internal: ep.unsubscribe_channel() for the calling role (run as the extension owner by ep.unsubscribe_channel)';
REVOKE ALL ON FUNCTION ep._unsubscribe_channel(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep.unsubscribe_channel(channel text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.unsubscribe_channel(text) IS
    'On a consumer: stop receiving a channel (drops the subscription, its slot on the producer and the received messages)';
REVOKE ALL ON FUNCTION ep.unsubscribe_channel(text) FROM PUBLIC;

CREATE FUNCTION ep._drop_channel(caller regrole, channel text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
BEGIN
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _drop_channel.channel
                                            AND c.role OPERATOR(pg_catalog.=) 'producer';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM ep.channel_forwards f WHERE f.channel OPERATOR(pg_catalog.=) _drop_channel.channel;
    PERFORM ep._sync_forward_trigger();
    EXECUTE pg_catalog.format('DROP PUBLICATION %I', d.publication);
    EXECUTE pg_catalog.format('DROP TABLE %s', d.partition);
    DELETE FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _drop_channel.channel;
END
$$;
COMMENT ON FUNCTION ep._drop_channel(regrole, text) IS 'Internal: ep.drop_channel() for the calling role (run as the extension owner by ep.drop_channel)';
REVOKE ALL ON FUNCTION ep._drop_channel(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep.drop_channel(channel text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.drop_channel(text) IS
    'On the producer: drop a channel, its outbox and its publication (consumers'' slots stay until they unsubscribe)';

CREATE FUNCTION ep.create_message_handler(name text, channel text, handler regprocedure,
                                          message_types text[], search_path text,
                                          handler_timeout interval DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'projection name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF handler IS NULL THEN
        RAISE EXCEPTION 'handler must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.partition INTO part FROM ep.channel_defs d
     WHERE d.channel OPERATOR(pg_catalog.=) create_message_handler.channel
       AND d.role OPERATOR(pg_catalog.=) 'consumer';
    IF part IS NULL THEN
        RAISE EXCEPTION 'channel "%" is not subscribed in this database', channel
            USING ERRCODE = 'undefined_object', HINT = 'Run ep.subscribe_channel() first.';
    END IF;
    PERFORM ep._check_projection_options(create_message_handler.search_path,
                                         create_message_handler.handler_timeout);
    BEGIN
        -- 'rebuilding': the first round hands over the messages received so far
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, event_types, source, status,
                                        search_path, handler_timeout)
        VALUES (create_message_handler.name, 'message', create_message_handler.handler,
                ep._role(CURRENT_USER), 'async', message_types, part, 'rebuilding',
                create_message_handler.search_path, create_message_handler.handler_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
END
$$;
COMMENT ON FUNCTION ep.create_message_handler(text, text, regprocedure, text[], text, interval) IS
    'Create a message handler whose handler runs with the given search_path and time limit per call (NULL: event_patterns.handler_timeout)';

-- No SET clause, so that current_setting() sees the caller's search_path.
CREATE FUNCTION ep.create_message_handler(name text, channel text, handler regprocedure,
                                          message_types text[] DEFAULT NULL)
    RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT ep.create_message_handler(name, channel, handler, message_types,
                                       pg_catalog.current_setting('search_path'), NULL::pg_catalog.interval) $$;
COMMENT ON FUNCTION ep.create_message_handler(text, text, regprocedure, text[]) IS
    'On a consumer: handler(message ep.messages) RETURNS void is called once for every message of the channel (of message_types, NULL: all) received so far and from now on, in arrival order (the producer''s commit order), exactly once, as the creating role with the creator''s search_path; retried, parked and listed in ep.projections like projections (drop it with ep.drop_projection)';

-- Maintenance: marks and pruning (the worker calls it about once a second) --

CREATE FUNCTION ep._channel_mark_point(OUT horizon bigint, OUT lsn pg_lsn)
    RETURNS record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_mark_point';
COMMENT ON FUNCTION ep._channel_mark_point() IS
    'Internal: a position horizon and a WAL position such that every message below the horizon committed before that position';
REVOKE ALL ON FUNCTION ep._channel_mark_point() FROM PUBLIC;

CREATE FUNCTION ep._channel_maintain(retention interval)
    RETURNS bigint LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
    mp record;
    m ep.channel_marks;
    received pg_lsn;
    n bigint;
    total bigint := 0;
    handled bigint;
    cut timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) retention;
    oldest_seq bigint;
    oldest_at timestamptz;
    young bigint;
BEGIN
    FOR d IN SELECT * FROM ep.channel_defs ORDER BY channel LOOP
        IF d.role OPERATOR(pg_catalog.=) 'producer' THEN
            -- a new mark when messages were sent since the last one
            mp := ep._channel_mark_point();
            IF EXISTS (SELECT 1 FROM ep.messages x WHERE x.channel OPERATOR(pg_catalog.=) d.channel
                          AND x.position OPERATOR(pg_catalog.>=) COALESCE((SELECT pg_catalog.max(k.horizon) FROM ep.channel_marks k
                                                        WHERE k.channel OPERATOR(pg_catalog.=) d.channel), 0)
                          AND x.position OPERATOR(pg_catalog.<) mp.horizon) THEN
                INSERT INTO ep.channel_marks (channel, horizon, lsn) VALUES (d.channel, mp.horizon, mp.lsn)
                ON CONFLICT DO NOTHING;
            END IF;
            -- what every consumer whose slot is usable has received
            SELECT pg_catalog.min(s.confirmed_flush_lsn) INTO received
              FROM pg_catalog.pg_replication_slots s
             WHERE s.slot_name OPERATOR(pg_catalog.~~) ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(d.channel), 10) OPERATOR(pg_catalog.||) '\_%')
               AND s.wal_status IS DISTINCT FROM 'lost';
            SELECT * INTO m FROM ep.channel_marks k
             WHERE k.channel OPERATOR(pg_catalog.=) d.channel
               AND k.taken_at OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.-) retention)
               AND (received IS NULL OR k.lsn OPERATOR(pg_catalog.<=) received)
             ORDER BY k.horizon DESC LIMIT 1;
            IF FOUND THEN
                DELETE FROM ep.messages x WHERE x.channel OPERATOR(pg_catalog.=) d.channel
                                          AND x.position OPERATOR(pg_catalog.<) m.horizon;
                GET DIAGNOSTICS n = ROW_COUNT;
                DELETE FROM ep.channel_marks k WHERE k.channel OPERATOR(pg_catalog.=) d.channel
                                                AND k.horizon OPERATOR(pg_catalog.<) m.horizon;
                IF n OPERATOR(pg_catalog.>) 0 THEN
                    UPDATE ep.channel_defs c
                       SET pruned_below = GREATEST(c.pruned_below, m.horizon),
                           pruned_count = c.pruned_count OPERATOR(pg_catalog.+) n,
                           pruned_before = m.taken_at
                     WHERE c.channel OPERATOR(pg_catalog.=) d.channel;
                    total := total OPERATOR(pg_catalog.+) n;
                END IF;
            END IF;
        ELSE
            -- consumer: once the subscription applied the producer's WAL past
            -- the fetch at subscription, nothing can arrive twice
            IF d.dedup_until IS NOT NULL
               AND pg_catalog.pg_replication_origin_progress(
                       'pg_' OPERATOR(pg_catalog.||) (SELECT s.oid FROM pg_catalog.pg_subscription s
                                                       WHERE s.subname OPERATOR(pg_catalog.=) d.subscription
                                                         AND s.subdbid OPERATOR(pg_catalog.=) (SELECT b.oid FROM pg_catalog.pg_database b
                                                                                                WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))::text,
                       true) OPERATOR(pg_catalog.>=) d.dedup_until THEN
                PERFORM ep._channel_set_dedup(d.channel, false);
                UPDATE ep.channel_defs c SET dedup_until = NULL WHERE c.channel OPERATOR(pg_catalog.=) d.channel;
            END IF;
            -- consumer: what every message handler of the channel has
            -- handled; a handler whose owner may no longer read the channel
            -- holds nothing back (revoking read releases its messages)
            handled := ep._channel_handled(d.partition);
            -- in arrival order, from the oldest, up to the first one sent
            -- after the cut (arrival follows sending closely; what a
            -- re-synchronization copied late goes once the younger ones do):
            -- while the oldest message is young this is one index probe
            oldest_seq := NULL;
            IF handled IS NOT NULL THEN
                EXECUTE pg_catalog.format('SELECT x.received_seq, x.sent_at FROM ONLY %s x'
                                          ' WHERE x.received_seq IS NOT NULL ORDER BY x.received_seq LIMIT 1',
                                          d.partition)
                   INTO oldest_seq, oldest_at;
            END IF;
            IF oldest_seq OPERATOR(pg_catalog.<=) handled AND oldest_at OPERATOR(pg_catalog.<) cut THEN
                EXECUTE pg_catalog.format('SELECT x.received_seq FROM ONLY %s x'
                                          ' WHERE x.received_seq OPERATOR(pg_catalog.>) $1'
                                          '   AND x.received_seq OPERATOR(pg_catalog.<=) $2'
                                          '   AND x.sent_at OPERATOR(pg_catalog.>=) $3'
                                          ' ORDER BY x.received_seq LIMIT 1', d.partition)
                   INTO young USING oldest_seq, handled, cut;
                EXECUTE pg_catalog.format('DELETE FROM ONLY %s x'
                                          ' WHERE x.received_seq OPERATOR(pg_catalog.<=) $1'
                                          '   AND x.sent_at OPERATOR(pg_catalog.<) $2', d.partition)
                   USING COALESCE(young OPERATOR(pg_catalog.-) 1, handled), cut;
                GET DIAGNOSTICS n = ROW_COUNT;
                IF n OPERATOR(pg_catalog.>) 0 THEN
                    UPDATE ep.channel_defs c
                       SET pruned_count = c.pruned_count OPERATOR(pg_catalog.+) n,
                           pruned_before = cut
                     WHERE c.channel OPERATOR(pg_catalog.=) d.channel;
                    total := total OPERATOR(pg_catalog.+) n;
                END IF;
            END IF;
        END IF;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ep._channel_maintain(interval) IS
    'Internal: producer: mark what was sent, remove messages older than retention that every consumer''s slot has confirmed; consumer: remove handled messages sent more than retention ago; returns how many were removed';
REVOKE ALL ON FUNCTION ep._channel_maintain(interval) FROM PUBLIC;

CREATE FUNCTION ep.maintain_channels()
    RETURNS bigint LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_maintain_channels';
COMMENT ON FUNCTION ep.maintain_channels() IS
    'Run the channels'' clean-up now (the worker runs it about once a second): returns how many messages were removed';
REVOKE ALL ON FUNCTION ep.maintain_channels() FROM PUBLIC;

-- Views ---------------------------------------------------------------------

CREATE FUNCTION ep._channel_handled(source regclass) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.min(p.last_position) FROM ep.projection_defs p, ep.channel_defs d
     WHERE p.kind OPERATOR(pg_catalog.=) 'message' AND p.source OPERATOR(pg_catalog.=) $1
       AND d.partition OPERATOR(pg_catalog.=) $1
       AND ep._channel_may(d.channel, p.owner, 'read')
$$;
COMMENT ON FUNCTION ep._channel_handled(regclass) IS
    'Internal: arrival order (received_seq) up to which every message handler of a channel table whose owner may read the channel has handled the messages (NULL: none)';

CREATE FUNCTION ep._messages_pending(source regclass, after bigint, upto bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text;
BEGIN
    SELECT d.channel INTO ch FROM ep.channel_defs d
     WHERE d.partition OPERATOR(pg_catalog.=) $1 AND d.role OPERATOR(pg_catalog.=) 'consumer';
    IF ch IS NULL THEN
        RETURN false;
    END IF;
    -- as the caller: row-level security shows only the channels it may read
    RETURN EXISTS (SELECT 1 FROM ep.messages m
                    WHERE m.channel OPERATOR(pg_catalog.=) ch
                      AND m.received_seq OPERATOR(pg_catalog.>) $2
                      AND m.received_seq OPERATOR(pg_catalog.<=) $3);
END
$$;
COMMENT ON FUNCTION ep._messages_pending(regclass, bigint, bigint) IS
    'Internal: are messages numbered (after, upto] visible in a consumer''s channel table (ep.wait_for_projection of a message handler)';

CREATE FUNCTION ep._channel_status()
    RETURNS TABLE (channel text, role text, owner regrole, source text, backlog bigint,
                   lag_seconds double precision, lag_bytes bigint, consumers integer,
                   wal_status text, subscription_active boolean, pruned_below bigint, pruned_count bigint,
                   last_error text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
    WITH slots AS (
        SELECT d.channel, s.*
          FROM ep.channel_defs d
          JOIN pg_catalog.pg_replication_slots s
            ON s.slot_name OPERATOR(pg_catalog.~~) ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(d.channel), 10) OPERATOR(pg_catalog.||) '\_%')
         WHERE d.role OPERATOR(pg_catalog.=) 'producer'),
    received AS (
        SELECT d.channel,
               (SELECT pg_catalog.max(k.horizon) FROM ep.channel_marks k
                 WHERE k.channel OPERATOR(pg_catalog.=) d.channel
                   AND k.lsn OPERATOR(pg_catalog.<=) (SELECT pg_catalog.min(s.confirmed_flush_lsn) FROM slots s
                                                        WHERE s.channel OPERATOR(pg_catalog.=) d.channel)) AS horizon
          FROM ep.channel_defs d WHERE d.role OPERATOR(pg_catalog.=) 'producer'),
    handled AS (
        SELECT d.channel, ep._channel_handled(d.partition) AS upto
          FROM ep.channel_defs d
         WHERE d.role OPERATOR(pg_catalog.=) 'consumer')
    SELECT d.channel, d.role, d.owner,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN d.publication::text ELSE d.source END,
           b.backlog, b.lag_seconds,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN
               (SELECT pg_catalog.max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn))::bigint
                  FROM slots s WHERE s.channel OPERATOR(pg_catalog.=) d.channel)
           END,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN
               (SELECT pg_catalog.count(*)::integer FROM slots s WHERE s.channel OPERATOR(pg_catalog.=) d.channel)
           END,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN
               (SELECT s.wal_status FROM slots s WHERE s.channel OPERATOR(pg_catalog.=) d.channel
                 ORDER BY CASE s.wal_status WHEN 'lost' THEN 0 WHEN 'unreserved' THEN 1 WHEN 'extended' THEN 2 ELSE 3 END
                 LIMIT 1)
           END,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'consumer' THEN
               EXISTS (SELECT 1 FROM pg_catalog.pg_stat_subscription ss
                        WHERE ss.subname OPERATOR(pg_catalog.=) d.subscription AND ss.pid IS NOT NULL AND ss.relid IS NULL)
           END,
           d.pruned_below, d.pruned_count, d.last_error
      FROM ep.channel_defs d
      LEFT JOIN received r ON r.channel OPERATOR(pg_catalog.=) d.channel
      LEFT JOIN handled h ON h.channel OPERATOR(pg_catalog.=) d.channel
      LEFT JOIN LATERAL (
          SELECT pg_catalog.count(*) AS backlog,
                 pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(x.sent_at)) AS lag_seconds
            FROM ep.messages x
           WHERE x.channel OPERATOR(pg_catalog.=) d.channel
             AND CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer'
                      THEN x.position OPERATOR(pg_catalog.>=) COALESCE(r.horizon, 0)
                      ELSE x.received_seq OPERATOR(pg_catalog.>) COALESCE(h.upto, 0) END) b ON true
     WHERE ep._channel_may(d.channel, ep._role(CURRENT_USER), 'read')
$$;
COMMENT ON FUNCTION ep._channel_status() IS 'Internal: rows of ep.channels for the channels the caller may read (it runs as the caller: backlog counts the messages the caller may read)';

CREATE VIEW ep.channels AS SELECT * FROM ep._channel_status();
COMMENT ON VIEW ep.channels IS
    'Service channels: role producer (source: its publication; backlog: messages not yet confirmed by every consumer''s slot, lag_seconds: age of the oldest, lag_bytes and wal_status of the slowest consumer''s slot, consumers: their number — a dead consumer shows as growing lag and a slot wal_status of extended/unreserved/lost) or consumer (source: producer connection without password; backlog: received messages not yet handled by every message handler; subscription_active); pruned_*: what retention removed';
GRANT SELECT ON ep.channels TO PUBLIC;

CREATE VIEW ep.channel_consumers AS
    SELECT d.channel, s.slot_name, s.active, s.confirmed_flush_lsn,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
           s.wal_status, s.safe_wal_size
      FROM ep.channel_defs d
      JOIN pg_catalog.pg_replication_slots s
        ON s.slot_name OPERATOR(pg_catalog.~~) ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(d.channel), 10) OPERATOR(pg_catalog.||) '\_%')
     WHERE d.role OPERATOR(pg_catalog.=) 'producer';
COMMENT ON VIEW ep.channel_consumers IS
    'On the producer: the slot of every consumer of each channel (active, confirmed position, lag in bytes, wal_status, safe_wal_size)';
GRANT SELECT ON ep.channel_consumers TO PUBLIC;

CREATE FUNCTION ep.channel_messages(of_channel text)
    RETURNS TABLE (channel text, message_id text, "position" bigint, message_type text, key text,
                   payload text, headers text, sent_at text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the current role: the consumer's connection, or the owner of whatever
    -- code calls it (never the session's user: owner code runs in sessions
    -- of other roles, the worker's among them)
    IF NOT ep._channel_may($1, ep._role(CURRENT_USER), 'read') THEN
        RAISE EXCEPTION 'permission denied to read channel "%"', $1
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Consumers connect as a role granted read: ep.grant_channel(channel, role, ''{read}'').';
    END IF;
    RETURN QUERY
        SELECT m.channel, m.message_id::text, m.position, m.message_type, m.key, m.payload::text,
               m.headers::text, pg_catalog.to_char(m.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
          FROM ep.messages m WHERE m.channel OPERATOR(pg_catalog.=) $1 ORDER BY m.position;
END
$$;
COMMENT ON FUNCTION ep.channel_messages(text) IS
    'On the producer: the messages it still has on a channel, for a consumer that (re-)subscribes; the current role (the consumer''s connection) needs read on the channel';

CREATE FUNCTION ep.channel_info(channel text, OUT pruned_below bigint, OUT pruned_count bigint,
                                OUT min_position bigint)
    RETURNS record LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(d.pruned_below, 0), COALESCE(d.pruned_count, 0),
           (SELECT pg_catalog.min(m.position) FROM ep.messages m WHERE m.channel OPERATOR(pg_catalog.=) $1)
      FROM (SELECT 1) one
      LEFT JOIN ep.channel_defs d ON d.channel OPERATOR(pg_catalog.=) $1 AND d.role OPERATOR(pg_catalog.=) 'producer'
$$;
COMMENT ON FUNCTION ep.channel_info(text) IS
    'On the producer: what retention removed from a channel (messages below pruned_below, pruned_count in all) and the lowest position it still has; consumers ask it when they re-synchronize';
-- END copy of src/sql/50_channel.sql

SELECT ep._objects_changed();
