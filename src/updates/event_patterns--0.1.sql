/*
 * event_patterns install script, assembled by the Makefile from the files of src/sql
 * in name order. Every name is schema-qualified so that no search_path can
 * hijack what the extension runs.
 */
\echo Use "CREATE EXTENSION event_patterns" to load this file. \quit

CREATE SCHEMA ep;
COMMENT ON SCHEMA ep IS 'event_patterns: event store, CQRS projections and incremental materialized views';
GRANT USAGE ON SCHEMA ep TO PUBLIC;

-- The role named r, by OID. (A cast r::regrole would parse the name as an
-- identifier: a role named "10" would become OID 10, the bootstrap
-- superuser, and "Bob" would become bob.)
CREATE FUNCTION ep._role(r name) RETURNS regrole
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT a.oid::pg_catalog.regrole FROM pg_catalog.pg_roles a WHERE a.rolname OPERATOR(pg_catalog.=) r $$;
COMMENT ON FUNCTION ep._role(name) IS 'Internal: the role of that exact name as regrole (never parses the name)';
-- ---------------------------------------------------------------------------
-- Event store: tables
-- ---------------------------------------------------------------------------

-- CACHE 1 is required: positions must be handed out in increasing order
-- across backends (see src/position.c).
CREATE SEQUENCE ep.events_global_position_seq AS bigint CACHE 1;

CREATE TABLE ep.events (
    global_position bigint      NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb,
    schema_version  integer     NOT NULL DEFAULT 1,
    recorded_at     timestamptz NOT NULL,
    category        text        NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (global_position),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_check CHECK (stream_version >= 1),
    CONSTRAINT events_schema_version_check CHECK (schema_version >= 1)
);
CREATE INDEX events_category_idx ON ep.events (category, global_position);

COMMENT ON TABLE ep.events IS 'Immutable events of every stream, in global position order; written only through ep.append and ep.append_events';
COMMENT ON COLUMN ep.events.global_position IS 'Position in the global order; increasing, not gapless; global reads never skip one';
COMMENT ON COLUMN ep.events.stream_version IS 'Version of the stream after this event (1-based, gapless within a stream)';
COMMENT ON COLUMN ep.events.category IS 'Part of stream_id before the first "-" (the whole id when it has none)';

CREATE TABLE ep.streams (
    stream_id       text        NOT NULL PRIMARY KEY,
    category        text        NOT NULL,
    version         bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz,
    tombstoned      boolean     NOT NULL DEFAULT false,
    deleted_before  bigint,
    deleted_at      timestamptz,
    max_count       bigint CHECK (max_count >= 0),
    max_age         interval,
    truncate_before bigint CHECK (truncate_before >= 0),
    metadata        jsonb
);
-- Streams whose reads must hide something; global reads consult only these.
CREATE INDEX streams_limited_idx ON ep.streams (stream_id)
    WHERE (truncate_before IS NOT NULL OR deleted_before IS NOT NULL
           OR max_count IS NOT NULL OR max_age IS NOT NULL);

COMMENT ON TABLE ep.streams IS 'One row per stream: current version, deletion state and read limits';
COMMENT ON COLUMN ep.streams.deleted_before IS 'Soft delete: events with a lower version are hidden';
COMMENT ON COLUMN ep.streams.tombstoned IS 'Hard-deleted: events removed, appends fail with EP002';

-- Immutability: only the extension's own functions may change events.
-- Users hold only SELECT on ep.events, so they cannot insert directly; the
-- trigger stops UPDATE, DELETE and TRUNCATE even by the table's owner. It
-- does not fire on INSERT, which keeps the append path free of per-row
-- trigger calls.
CREATE FUNCTION ep.events_immutable() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_events_immutable';
COMMENT ON FUNCTION ep.events_immutable() IS 'Trigger: raises EP004 on UPDATE, DELETE or TRUNCATE of ep.events outside the extension''s functions';
CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON ep.events
    FOR EACH ROW EXECUTE FUNCTION ep.events_immutable();
CREATE TRIGGER events_immutable_truncate BEFORE TRUNCATE ON ep.events
    FOR EACH STATEMENT EXECUTE FUNCTION ep.events_immutable();

GRANT SELECT ON ep.events, ep.streams TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('ep.events', '');
SELECT pg_catalog.pg_extension_config_dump('ep.streams', '');
SELECT pg_catalog.pg_extension_config_dump('ep.events_global_position_seq', '');

-- ---------------------------------------------------------------------------
-- Event store: functions
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep.append(stream_id text, event_type text, data jsonb,
                          metadata jsonb DEFAULT NULL,
                          expected_version bigint DEFAULT NULL,
                          event_id uuid DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_append';
COMMENT ON FUNCTION ep.append(text, text, jsonb, jsonb, bigint, uuid) IS
    'Append one event to a stream; returns the stream''s new version. expected_version: NULL any, 0 no stream, -1 existing stream, n exact (EP001 otherwise)';

CREATE FUNCTION ep.append_events(stream_id text, events jsonb,
                                 expected_version bigint DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_append_events';
COMMENT ON FUNCTION ep.append_events(text, jsonb, bigint) IS
    'Append a JSON array of {type, data, metadata, id, schema_version} atomically; returns the stream''s new version';

CREATE FUNCTION ep.stream_version(stream_id text)
    RETURNS bigint LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_stream_version';
COMMENT ON FUNCTION ep.stream_version(text) IS
    'Current version of a stream; 0 when it does not exist';

CREATE FUNCTION ep.read_stream(stream_id text, from_version bigint DEFAULT NULL,
                               max_count integer DEFAULT NULL,
                               backwards boolean DEFAULT false)
    RETURNS SETOF ep.events LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 100
    AS 'MODULE_PATHNAME', 'ep_read_stream';
COMMENT ON FUNCTION ep.read_stream(text, bigint, integer, boolean) IS
    'Events of one stream, forwards from from_version (NULL: first) or backwards from it (NULL: last)';

CREATE FUNCTION ep.read_all(after_position bigint DEFAULT 0,
                            max_count integer DEFAULT 1000,
                            event_types text[] DEFAULT NULL)
    RETURNS SETOF ep.events LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
    AS 'MODULE_PATHNAME', 'ep_read_all';
COMMENT ON FUNCTION ep.read_all(bigint, integer, text[]) IS
    'Committed events of all streams after a position, ascending; resuming from the last position seen never skips an event';

CREATE FUNCTION ep.read_category(category text, after_position bigint DEFAULT 0,
                                 max_count integer DEFAULT 1000,
                                 consumer_member integer DEFAULT NULL,
                                 consumer_size integer DEFAULT NULL)
    RETURNS SETOF ep.events LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
    AS 'MODULE_PATHNAME', 'ep_read_category';
COMMENT ON FUNCTION ep.read_category(text, bigint, integer, integer, integer) IS
    'Committed events of one category after a position; with a consumer group, only the streams of that member';

CREATE FUNCTION ep.consumer_member(stream_id text, consumer_size integer)
    RETURNS integer LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_consumer_member';
COMMENT ON FUNCTION ep.consumer_member(text, integer) IS
    'The consumer-group member (0 .. consumer_size-1) that receives a stream''s events';

CREATE FUNCTION ep.delete_stream(stream_id text, expected_version bigint DEFAULT NULL,
                                 hard boolean DEFAULT false)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_delete_stream';
COMMENT ON FUNCTION ep.delete_stream(text, bigint, boolean) IS
    'Soft delete (reads hide the events; a later append continues the numbering) or hard delete (events removed, id tombstoned: appends raise EP002)';

CREATE FUNCTION ep.set_stream_metadata(stream_id text, max_count bigint DEFAULT NULL,
                                       max_age interval DEFAULT NULL,
                                       truncate_before bigint DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_set_stream_metadata';
COMMENT ON FUNCTION ep.set_stream_metadata(text, bigint, interval, bigint) IS
    'Set a stream''s read limits (NULL removes one); every read honours them at once';
-- ---------------------------------------------------------------------------
-- Persistent subscriptions
-- ---------------------------------------------------------------------------

CREATE TABLE ep.subscriptions (
    name          text        NOT NULL PRIMARY KEY CHECK (name <> ''),
    category      text,
    event_types   text[],
    from_position bigint      NOT NULL DEFAULT 0 CHECK (from_position >= 0),
    owner         regrole     NOT NULL DEFAULT ep._role(CURRENT_USER),
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.subscriptions IS 'Persistent subscriptions: a category and/or event types, and where they start';

CREATE TABLE ep.subscription_checkpoints (
    subscription    text        NOT NULL REFERENCES ep.subscriptions (name) ON DELETE CASCADE,
    consumer_member integer     NOT NULL DEFAULT -1,
    position        bigint      NOT NULL CHECK (position >= 0),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subscription, consumer_member)
);
COMMENT ON TABLE ep.subscription_checkpoints IS 'Last acknowledged position of each subscription (per consumer member; -1 without a consumer group)';

GRANT SELECT ON ep.subscriptions, ep.subscription_checkpoints TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('ep.subscription_checkpoints', '');

-- Only the role that created a subscription (or a member of it, or a
-- superuser) may move its checkpoint or drop it.
CREATE FUNCTION ep._subscription_check_owner(name text)
    RETURNS void LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o regrole;
BEGIN
    SELECT s.owner INTO o FROM ep.subscriptions s WHERE s.name = _subscription_check_owner.name;
    IF o IS NOT NULL AND NOT pg_has_role(session_user, o, 'MEMBER') THEN
        RAISE EXCEPTION 'must be a member of role "%" to change subscription "%"', o, name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._subscription_check_owner(text) IS 'Internal: raises 42501 unless the session user may change the subscription';

CREATE FUNCTION ep.create_subscription(name text, category text DEFAULT NULL,
                                       event_types text[] DEFAULT NULL,
                                       from_position bigint DEFAULT 0)
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
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
            create_subscription.event_types, create_subscription.from_position, ep._role(session_user))
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END IF;
END
$$;
COMMENT ON FUNCTION ep.create_subscription(text, text, text[], bigint) IS
    'Create a persistent subscription with a server-side checkpoint';

CREATE FUNCTION ep.poll(subscription text, max_count integer DEFAULT 100,
                        consumer_member integer DEFAULT NULL,
                        consumer_size integer DEFAULT NULL)
    RETURNS SETOF ep.events LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100
    AS 'MODULE_PATHNAME', 'ep_poll';
COMMENT ON FUNCTION ep.poll(text, integer, integer, integer) IS
    'Next committed events after the subscription''s checkpoint (of that consumer member); does not move the checkpoint';

CREATE FUNCTION ep.ack(subscription text, "position" bigint, consumer_member integer DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
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

CREATE FUNCTION ep.drop_subscription(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
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
-- ---------------------------------------------------------------------------
-- Background jobs: the scheduler's registry and run history.
-- Features schedule work with ep._schedule_job(kind, target, every, command);
-- the per-database worker runs each due job's command as the job's owner.
-- ---------------------------------------------------------------------------

CREATE TABLE ep.job_registry (
    job_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('view_refresh', 'scavenge', 'snapshot',
                                                     'partition_maintenance', 'custom')),
    target      text        NOT NULL,
    schedule    interval    NOT NULL CHECK (schedule > interval '0'),
    command     text        NOT NULL,
    owner       regrole     NOT NULL DEFAULT ep._role(CURRENT_USER),
    next_run_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_run_at timestamptz,
    last_status text CHECK (last_status IN ('succeeded', 'failed', 'running')),
    last_error  text,
    failures    integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (kind, target)
);
COMMENT ON TABLE ep.job_registry IS 'Scheduled background jobs (read them through ep.jobs)';

CREATE TABLE ep.job_run_log (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint      NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    status      text        NOT NULL CHECK (status IN ('succeeded', 'failed', 'running')),
    message     text
);
CREATE INDEX job_run_log_job_idx ON ep.job_run_log (job_id, started_at);
COMMENT ON TABLE ep.job_run_log IS 'History of job runs, pruned by the worker (read it through ep.job_runs)';

-- Both views run with the privileges of the caller (security_invoker), so
-- row-level security shows a role other than a superuser only its own jobs
-- and their runs.
CREATE VIEW ep.jobs WITH (security_invoker = true) AS
    SELECT job_id, kind, target, schedule, next_run_at, last_run_at, last_status,
           last_error, pg_catalog.pg_get_userbyid(owner) AS owner, failures, command
      FROM ep.job_registry;
COMMENT ON VIEW ep.jobs IS 'Scheduled background jobs: view refreshes, scavenging, snapshots, partition maintenance';

CREATE VIEW ep.job_runs WITH (security_invoker = true) AS
    SELECT job_id, started_at, finished_at, status, message, run_id
      FROM ep.job_run_log;
COMMENT ON VIEW ep.job_runs IS 'Recent runs of background jobs (succeeded or failed, with a message)';

GRANT SELECT ON ep.jobs, ep.job_runs TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.job_registry', '');

-- Jobs are owned by the role that scheduled them and run as that role. A
-- role other than a superuser sees and changes only its own rows (row-level
-- security); the worker, a superuser, runs them all.
ALTER TABLE ep.job_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_registry_owner ON ep.job_registry
    USING (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)))
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)));
GRANT SELECT, INSERT, UPDATE, DELETE ON ep.job_registry TO PUBLIC;

-- Runs are visible for the jobs one can see; only the worker writes them.
ALTER TABLE ep.job_run_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_run_log_owner ON ep.job_run_log FOR SELECT
    USING (EXISTS (SELECT 1 FROM ep.job_registry j
                    WHERE j.job_id OPERATOR(pg_catalog.=) job_run_log.job_id));
GRANT SELECT ON ep.job_run_log TO PUBLIC;

-- Commits that change jobs wake the database's worker (see scheduler.c).
CREATE FUNCTION ep._jobs_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_jobs_changed';
COMMENT ON FUNCTION ep._jobs_changed() IS
    'Internal: trigger on ep.job_registry that wakes the worker at commit';
CREATE TRIGGER job_registry_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ep.job_registry
    FOR EACH STATEMENT EXECUTE FUNCTION ep._jobs_changed();

-- Internal API used by the features that schedule work (SECURITY INVOKER:
-- the job's owner is the calling role).
CREATE FUNCTION ep._worker_runtime_loaded() RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'ep_worker_runtime_loaded';
COMMENT ON FUNCTION ep._worker_runtime_loaded() IS
    'Internal: whether the background-worker runtime is loaded (shared_preload_libraries)';

CREATE FUNCTION ep._schedule_job(kind text, target text, every interval, command text)
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
    INSERT INTO ep.job_registry AS j (kind, target, schedule, command, owner, next_run_at)
    VALUES (kind, target, every, command, ep._role(current_user), now() + every)
    ON CONFLICT ON CONSTRAINT job_registry_kind_target_key DO UPDATE
        SET schedule = excluded.schedule, command = excluded.command,
            owner = excluded.owner, next_run_at = excluded.next_run_at, failures = 0
    RETURNING j.job_id INTO id;
    IF NOT ep._worker_runtime_loaded() THEN
        RAISE WARNING 'job "%" will not run: the event_patterns background workers are not running', target
            USING HINT = 'Add event_patterns to shared_preload_libraries and restart the server.';
    END IF;
    RETURN id;
END
$$;
COMMENT ON FUNCTION ep._schedule_job(text, text, interval, text) IS
    'Internal: create or replace the (kind, target) job; it runs command every interval as the calling role';

CREATE FUNCTION ep._unschedule_job(kind text, target text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM ep.job_registry j WHERE j.kind = _unschedule_job.kind AND j.target = _unschedule_job.target;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION ep._unschedule_job(text, text) IS 'Internal: remove the (kind, target) job';

-- Next run of a job after a run: on schedule when on time; from now when
-- late (a job that missed runs, e.g. after the clock jumped, runs once and
-- is rescheduled from now); after failures, a backoff that starts at
-- min(schedule, 1 minute) and doubles up to max(schedule, 1 hour).
CREATE FUNCTION ep._job_next_run(schedule interval, failures integer, previous timestamptz)
    RETURNS timestamptz LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN failures > 0 THEN
            now() + LEAST(LEAST(schedule, interval '1 minute')
                              * power(2, LEAST(failures, 20) - 1),
                          GREATEST(schedule, interval '1 hour'))
        WHEN previous + schedule > now() THEN previous + schedule
        ELSE now() + schedule
    END
$$;
COMMENT ON FUNCTION ep._job_next_run(interval, integer, timestamptz) IS
    'Internal: next run time of a job after a run (schedule, backoff after failures)';

-- Bounded history: the scheduler calls this once a minute.
CREATE FUNCTION ep._prune_job_runs(keep integer DEFAULT 1000, max_age interval DEFAULT '7 days')
    RETURNS bigint LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH ranked AS (
        SELECT run_id, row_number() OVER (PARTITION BY job_id ORDER BY run_id DESC) AS rn,
               started_at
          FROM ep.job_run_log
         WHERE status <> 'running'
    ), gone AS (
        DELETE FROM ep.job_run_log l
         USING ranked r
         WHERE l.run_id = r.run_id
           AND (r.rn > keep OR r.started_at < now() - max_age)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE EXECUTE ON FUNCTION ep._prune_job_runs(integer, interval) FROM PUBLIC;
COMMENT ON FUNCTION ep._prune_job_runs(integer, interval) IS
    'Internal: keep the last keep runs of each job and none older than max_age';

-- After the clock went back, next runs lie far in the future: pull in any
-- that is further ahead than a schedule or a backoff can put it. The
-- scheduler calls this once a minute.
CREATE FUNCTION ep._reschedule_far_jobs()
    RETURNS bigint LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH moved AS (
        UPDATE ep.job_registry
           SET next_run_at = now() + schedule
         WHERE next_run_at > now() + GREATEST(schedule, interval '1 hour')
           AND last_status IS DISTINCT FROM 'running'
        RETURNING 1)
    SELECT count(*) FROM moved
$$;
REVOKE EXECUTE ON FUNCTION ep._reschedule_far_jobs() FROM PUBLIC;
COMMENT ON FUNCTION ep._reschedule_far_jobs() IS
    'Internal: reschedule jobs whose next run is further ahead than possible (the clock went back)';

-- User-defined jobs ("custom" kind), named by the caller.
CREATE FUNCTION ep.schedule_job(name text, every interval, command text)
    RETURNS bigint LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._schedule_job('custom', name, every, command) $$;
COMMENT ON FUNCTION ep.schedule_job(text, interval, text) IS
    'Run command every interval in the background, as the calling role; returns the job id';

CREATE FUNCTION ep.unschedule_job(name text)
    RETURNS boolean LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._unschedule_job('custom', name) $$;
COMMENT ON FUNCTION ep.unschedule_job(text) IS
    'Remove a job created with ep.schedule_job; false when there was none';

-- The worker of the current database (shared memory of the launcher).
CREATE FUNCTION ep._workers(OUT database name, OUT pid integer,
                            OUT started_at timestamptz, OUT state text)
    RETURNS SETOF record LANGUAGE c VOLATILE PARALLEL RESTRICTED ROWS 1
    AS 'MODULE_PATHNAME', 'ep_workers';
COMMENT ON FUNCTION ep._workers() IS 'Internal: the rows of ep.workers';

CREATE VIEW ep.workers AS
    SELECT database, pid, started_at, state FROM ep._workers();
COMMENT ON VIEW ep.workers IS
    'The event_patterns background worker of the current database (state: starting, idle, running, stopping)';
GRANT SELECT ON ep.workers TO PUBLIC;
-- ---------------------------------------------------------------------------
-- Event store, part two: folds (ep.aggregate) and snapshots, upcasting,
-- retention (scavenge) and redaction. See doc/es2.md.
-- ---------------------------------------------------------------------------

-- Upcasters: upcaster(data jsonb) RETURNS jsonb lifts data of event_type
-- from from_schema_version to the next; chains are contiguous from 1.
CREATE TABLE ep.upcasters (
    event_type          text         NOT NULL CHECK (event_type <> ''),
    from_schema_version integer      NOT NULL CHECK (from_schema_version >= 1),
    upcaster            regprocedure NOT NULL,
    registered_by       name         NOT NULL DEFAULT CURRENT_USER,
    registered_at       timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (event_type, from_schema_version)
);
COMMENT ON TABLE ep.upcasters IS 'Upcaster chains: each row lifts one event type from a schema version to the next (register with ep.register_upcaster)';
GRANT SELECT ON ep.upcasters TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.upcasters', '');

CREATE FUNCTION ep.register_upcaster(event_type text, from_schema_version integer,
                                     upcaster regprocedure)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_register_upcaster';
COMMENT ON FUNCTION ep.register_upcaster(text, integer, regprocedure) IS
    'Register upcaster(data jsonb) RETURNS jsonb lifting event_type from from_schema_version to the next; every read path then delivers the latest schema version';

CREATE FUNCTION ep.unregister_upcaster(event_type text, from_schema_version integer)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_unregister_upcaster';
COMMENT ON FUNCTION ep.unregister_upcaster(text, integer) IS
    'Remove the last upcaster of an event type''s chain; reads then deliver the schema version below';

-- Snapshots: the state of a fold of a stream with a reducer, after a version.
CREATE TABLE ep.snapshots (
    stream_id       text         NOT NULL,
    reducer         regprocedure NOT NULL,
    initial_hash    bigint       NOT NULL,
    version         bigint       NOT NULL CHECK (version >= 1),
    state           jsonb,
    fingerprint     bigint       NOT NULL,
    max_recorded_at timestamptz  NOT NULL,
    initial         jsonb,
    created_at      timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (stream_id, reducer, initial_hash, version)
);
COMMENT ON TABLE ep.snapshots IS 'Fold states of ep.aggregate by (stream, reducer, initial state, version); the fingerprint covers the reducer''s definition and the upcasters';
COMMENT ON COLUMN ep.snapshots.initial_hash IS 'Hash of the initial state the fold started from';
COMMENT ON COLUMN ep.snapshots.max_recorded_at IS 'Latest recorded_at of the events folded in (lets as_of_time queries use the snapshot)';
GRANT SELECT ON ep.snapshots TO PUBLIC;

CREATE TABLE ep.snapshot_policies (
    reducer    regprocedure NOT NULL PRIMARY KEY,
    every      integer      NOT NULL CHECK (every > 0),
    refresh    interval     CHECK (refresh > interval '0'),
    owner      name         NOT NULL DEFAULT CURRENT_USER,
    updated_at timestamptz  NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.snapshot_policies IS 'Reducers whose folds write a snapshot every N events (set with ep.set_snapshot_policy)';
GRANT SELECT ON ep.snapshot_policies TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.snapshot_policies', '');

CREATE FUNCTION ep.aggregate(stream_id text, reducer regprocedure,
                             initial jsonb DEFAULT '{}',
                             as_of_version bigint DEFAULT NULL,
                             as_of_time timestamptz DEFAULT NULL)
    RETURNS jsonb LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_aggregate';
COMMENT ON FUNCTION ep.aggregate(text, regprocedure, jsonb, bigint, timestamptz) IS
    'Fold a stream with reducer(state jsonb, event ep.events) RETURNS jsonb from initial, up to as_of_version and/or the events recorded by as_of_time; starts from the newest usable snapshot';

CREATE FUNCTION ep.set_snapshot_policy(reducer regprocedure, every integer,
                                       refresh interval DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_set_snapshot_policy';
COMMENT ON FUNCTION ep.set_snapshot_policy(regprocedure, integer, interval) IS
    'ep.aggregate with this reducer writes a snapshot every N events of a stream; with refresh, a background job brings the snapshotted streams up to date at that interval; NULL or 0 removes the policy and the reducer''s snapshots';

-- Run by the 'snapshot' job: fold again every stream (and initial state)
-- that has a snapshot of this reducer, so that the fold writes a newer one.
CREATE FUNCTION ep.refresh_snapshots(reducer regprocedure)
    RETURNS integer LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    IF reducer IS NULL THEN
        RAISE EXCEPTION 'reducer must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOR r IN SELECT DISTINCT ON (s.stream_id, s.initial_hash) s.stream_id, s.initial
               FROM ep.snapshots s
              WHERE s.reducer::oid = refresh_snapshots.reducer::oid
              ORDER BY s.stream_id, s.initial_hash
    LOOP
        PERFORM ep.aggregate(r.stream_id, refresh_snapshots.reducer, r.initial);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ep.refresh_snapshots(regprocedure) IS
    'Fold again every stream that has a snapshot of the reducer, writing newer snapshots per its policy; returns the number of folds';

-- Retention
CREATE FUNCTION ep.scavenge(batch_size integer DEFAULT 1000, max_rows bigint DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_scavenge';
COMMENT ON FUNCTION ep.scavenge(integer, bigint) IS
    'Physically remove events hidden by max_count, max_age, truncate_before and soft deletes, batch_size rows per statement, at most max_rows (NULL: all); returns the number removed';
REVOKE ALL ON FUNCTION ep.scavenge(integer, bigint) FROM PUBLIC;

-- A procedure so that it may COMMIT between batches (which a SET clause
-- would forbid); it names every object with its schema.
CREATE PROCEDURE ep.scavenge_in_batches(batch_size integer DEFAULT 1000)
    LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    LOOP
        n := ep.scavenge(batch_size, batch_size);
        COMMIT;
        EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE ep.scavenge_in_batches(integer) IS
    'Scavenge in short transactions: one commit per batch_size removed events (CALL it outside a transaction block)';
REVOKE ALL ON PROCEDURE ep.scavenge_in_batches(integer) FROM PUBLIC;

-- The default scavenge job, run by the scheduler as the extension owner.
-- CREATE EXTENSION makes it again on restore, so pg_dump leaves it out.
SELECT ep._schedule_job('scavenge', 'ep.events', interval '5 minutes', 'SELECT ep.scavenge()');
SELECT pg_catalog.pg_extension_config_dump('ep.job_registry',
    'WHERE NOT (kind = ''scavenge'' AND target = ''ep.events'')');

-- Redaction
CREATE TABLE ep.redactions (
    redaction_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id    text        NOT NULL,
    reason       text        NOT NULL CHECK (reason <> ''),
    redacted_by  name        NOT NULL,
    redacted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    events       integer     NOT NULL DEFAULT 0
);
CREATE INDEX redactions_stream_idx ON ep.redactions (stream_id);
COMMENT ON TABLE ep.redactions IS 'Who redacted which stream, when and why (written by ep.redact_stream)';
SELECT pg_catalog.pg_extension_config_dump('ep.redactions', '');
SELECT pg_catalog.pg_extension_config_dump('ep.redactions_redaction_id_seq', '');

CREATE FUNCTION ep.redact_stream(stream_id text, reason text)
    RETURNS integer LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_redact_stream';
COMMENT ON FUNCTION ep.redact_stream(text, text) IS
    'Replace the payloads of a stream''s events by {"redacted": true}, keeping envelopes, positions and versions; records who, when and why in ep.redactions; returns the number of events';
REVOKE ALL ON FUNCTION ep.redact_stream(text, text) FROM PUBLIC;

-- A regprocedure column records no dependency, so dropped functions are
-- handled here: dropping an upcaster that is still registered is refused
-- (reads of its event type would fail), and dropping a reducer removes its
-- snapshot policy, its snapshots and its refresh job (they are caches).
CREATE FUNCTION ep._functions_on_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    u record;
BEGIN
    FOR d IN
        SELECT o.objid, o.object_identity FROM pg_event_trigger_dropped_objects() o
         WHERE o.classid OPERATOR(pg_catalog.=) 'pg_proc'::regclass
    LOOP
        SELECT x.event_type, x.from_schema_version INTO u FROM ep.upcasters x
         WHERE x.upcaster::oid OPERATOR(pg_catalog.=) d.objid LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'cannot drop function % because it is the upcaster of event type "%" from schema version %',
                            d.object_identity, u.event_type, u.from_schema_version
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Unregister it first with ep.unregister_upcaster().';
        END IF;
        DELETE FROM ep.snapshot_policies p WHERE p.reducer::oid OPERATOR(pg_catalog.=) d.objid;
        DELETE FROM ep.snapshots s WHERE s.reducer::oid OPERATOR(pg_catalog.=) d.objid;
        DELETE FROM ep.job_registry j
         WHERE j.kind OPERATOR(pg_catalog.=) 'snapshot' AND j.target OPERATOR(pg_catalog.=) d.object_identity;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._functions_on_drop() IS
    'Internal event trigger: refuses to drop a registered upcaster; removes the snapshot policy, snapshots and job of a dropped reducer';
CREATE EVENT TRIGGER ep_functions_on_drop ON sql_drop
    EXECUTE FUNCTION ep._functions_on_drop();
-- ---------------------------------------------------------------------------
-- Incremental materialized views (src/ivm_define.c, src/ivm_delta.c,
-- src/ivm_refresh.c).
--
-- A view "name" is a plain view over a storage table "name__ivm_data" that
-- holds the result rows plus hidden bookkeeping columns (__ep_count, sums,
-- non-null counts). Deferred views log base-table changes into
-- "name__ivm_log<k>" (one per base table); full views count changes in
-- "name__ivm_log". All of these belong to the role that created the view and
-- live in the view's schema. ep.ivm_views is the catalog: one row per view
-- with the SQL generated at creation time.
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
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
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
GRANT SELECT, DELETE ON ep.ivm_views TO PUBLIC;
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
COMMENT ON FUNCTION ep._ivm_pending(bigint) IS 'Internal: exact count of change records not yet applied to an incremental view';

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
    DELETE FROM ep.ivm_views i WHERE i.view_id OPERATOR(pg_catalog.=) v.view_id;
    DELETE FROM ep.job_registry j
     WHERE j.kind OPERATOR(pg_catalog.=) 'view_refresh' AND j.target OPERATOR(pg_catalog.=) v.name;
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
-- ---------------------------------------------------------------------------
-- CQRS projections (src/projection.c, src/projection_api.c, src/decoder.c)
--
-- Async projections are applied by the per-database worker (or by
-- ep.apply_projections()) from the database's logical replication slot
-- ep_<database oid>, decoded by the extension's own output plugin; inline
-- projections run in the appending transaction.
-- Catalog writes and the apply rounds are serialized by the advisory lock
-- key 4559461716873445458 ('EPPROJEC' in ASCII), shared by the API, exclusive by an
-- apply round.
-- ---------------------------------------------------------------------------

CREATE TABLE ep.projection_defs (
    projection_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name <> ''),
    kind            text        NOT NULL CHECK (kind IN ('events', 'table')),
    handler         regprocedure NOT NULL,
    owner           regrole     NOT NULL DEFAULT ep._role(CURRENT_USER),
    mode            text        NOT NULL DEFAULT 'async' CHECK (mode IN ('async', 'inline')),
    event_types     text[],
    category        text,
    source          regclass,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'paused', 'failed', 'rebuilding')),
    last_position   bigint      NOT NULL DEFAULT 0,
    last_lsn        pg_lsn,
    last_applied_at timestamptz,
    last_error      text,
    applied_count   bigint      NOT NULL DEFAULT 0,
    decoded_count   bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK ((kind = 'table') = (source IS NOT NULL))
);
COMMENT ON TABLE ep.projection_defs IS
    'Projections and their progress (read them through ep.projections). last_position: every event at or below it has been applied (async event projections); last_lsn: commit LSN of the last change applied (table projections)';

CREATE TABLE ep.parked (
    parked_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection_id   integer     NOT NULL REFERENCES ep.projection_defs ON DELETE CASCADE,
    global_position bigint,
    op              text,
    old_row         jsonb,
    new_row         jsonb,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    retry           boolean     NOT NULL DEFAULT false
);
CREATE INDEX parked_projection_idx ON ep.parked (projection_id, parked_id);
COMMENT ON TABLE ep.parked IS
    'Events (or table changes) whose handler failed after every retry (read them through ep.parked_events)';

-- One row: what the apply rounds know about the slot.
--   cover_position: every event above it commits after the slot's confirmed
--                   position, so decoding delivers it (NULL: unknown, events
--                   are read from ep.events until it is established)
--   confirm_lsn:    applied and committed up to here; the next round confirms
--                   it to the slot before decoding
CREATE TABLE ep.projection_state (
    singleton       boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton),
    cover_position  bigint,
    confirm_lsn     pg_lsn,
    slot_created_at timestamptz
);
INSERT INTO ep.projection_state DEFAULT VALUES;
COMMENT ON TABLE ep.projection_state IS 'Internal: handover state between the event table and the replication slot';

-- Owners see and change only their own projections (row-level security);
-- the apply rounds and superusers see them all.
ALTER TABLE ep.projection_defs ENABLE ROW LEVEL SECURITY;
CREATE POLICY projection_defs_owner ON ep.projection_defs
    USING (pg_catalog.pg_has_role(CURRENT_USER, owner, 'MEMBER'))
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)));
ALTER TABLE ep.parked ENABLE ROW LEVEL SECURITY;
CREATE POLICY parked_owner ON ep.parked
    USING (EXISTS (SELECT 1 FROM ep.projection_defs d
                    WHERE d.projection_id OPERATOR(pg_catalog.=) parked.projection_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON ep.projection_defs, ep.parked TO PUBLIC;

-- Owners may change their rows directly (row-level security keeps them to
-- their own), so every row is validated as the API would: a handler of the
-- right signature that its owner may run, a readable source table, event
-- types without NULLs. The apply rounds never see a row they cannot run.
CREATE FUNCTION ep._projection_defs_check() RETURNS trigger
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
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION ep._projection_defs_check() IS
    'Trigger: validates every projection row (handler signature and rights, source, event types), also on direct writes';
CREATE TRIGGER projection_defs_check
    BEFORE INSERT OR UPDATE OF kind, handler, owner, mode, event_types, source ON ep.projection_defs
    FOR EACH ROW EXECUTE FUNCTION ep._projection_defs_check();
GRANT SELECT ON ep.projection_state TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('ep.projection_defs', '');
SELECT pg_catalog.pg_extension_config_dump('ep.parked', '');

-- ---------------------------------------------------------------------------
-- C entry points
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep.apply_projections(max_events integer DEFAULT 10000)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_apply_projections';
COMMENT ON FUNCTION ep.apply_projections(integer) IS
    'Run decoding and apply rounds of the async projections in this session until nothing is ready or max_events were applied; returns the number of handler calls that succeeded. The worker does the same in the background';
REVOKE ALL ON FUNCTION ep.apply_projections(integer) FROM PUBLIC;

CREATE FUNCTION ep.wait_for_projection(name text DEFAULT NULL,
                                       timeout interval DEFAULT '10 seconds')
    RETURNS boolean LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_wait_for_projection';
COMMENT ON FUNCTION ep.wait_for_projection(text, interval) IS
    'Wait until the projection (NULL: every running async projection) has applied everything committed before the call; false on timeout';

CREATE FUNCTION ep._inline_projection_trigger() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_inline_projection_trigger';
COMMENT ON FUNCTION ep._inline_projection_trigger() IS
    'Internal trigger on ep.events: runs the inline projections in the appending transaction';

CREATE FUNCTION ep._check_handler(handler regprocedure, kind text)
    RETURNS void LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_check_handler';
COMMENT ON FUNCTION ep._check_handler(regprocedure, text) IS
    'Internal: validate a projection handler''s signature and the caller''s right to execute it';

CREATE FUNCTION ep._check_table_source(source regclass)
    RETURNS void LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_check_table_source';
COMMENT ON FUNCTION ep._check_table_source(regclass) IS
    'Internal: validate the source table of a table projection (kind, WAL logging, replica identity, privileges)';

-- Keeps the inline trigger on ep.events only while some inline projection
-- exists, so appends pay nothing otherwise.
CREATE FUNCTION ep._sync_inline_trigger()
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted boolean;
    present boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM ep.projection_defs d WHERE d.mode OPERATOR(pg_catalog.=) 'inline')
      INTO wanted;
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid OPERATOR(pg_catalog.=) 'ep.events'::regclass
                      AND t.tgname OPERATOR(pg_catalog.=) 'events_inline_projections')
      INTO present;
    IF wanted AND NOT present THEN
        CREATE TRIGGER events_inline_projections AFTER INSERT ON ep.events
            FOR EACH ROW EXECUTE FUNCTION ep._inline_projection_trigger();
    ELSIF present AND NOT wanted THEN
        DROP TRIGGER events_inline_projections ON ep.events;
    END IF;
END
$$;
COMMENT ON FUNCTION ep._sync_inline_trigger() IS
    'Internal: create or drop the inline-projection trigger on ep.events';
REVOKE ALL ON FUNCTION ep._sync_inline_trigger() FROM PUBLIC;

-- SECURITY DEFINER so that owners need no privilege on the trigger; it only
-- looks at the catalog row-level security already filtered for them.
CREATE FUNCTION ep._projection_changed()
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep._sync_inline_trigger();
END
$$;
COMMENT ON FUNCTION ep._projection_changed() IS 'Internal: bookkeeping after a projection was created, changed or dropped';

-- ---------------------------------------------------------------------------
-- API
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep._projection_lock()
    RETURNS void LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.pg_advisory_xact_lock_shared(4559461716873445458) $$;
COMMENT ON FUNCTION ep._projection_lock() IS 'Internal: wait for a running apply round; keep the next one out until commit';

CREATE FUNCTION ep.create_projection(name text, handler regprocedure,
                                     event_types text[] DEFAULT NULL,
                                     category text DEFAULT NULL,
                                     mode text DEFAULT 'async')
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
    PERFORM ep._projection_lock();
    BEGIN
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, event_types, category)
        VALUES (create_projection.name, 'events', create_projection.handler, ep._role(CURRENT_USER),
                create_projection.mode, create_projection.event_types, create_projection.category);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.create_projection(text, regprocedure, text[], text, text) IS
    'Create a projection: handler(event ep.events) RETURNS void is called for every matching event, in commit order, exactly once; async (from the WAL, starting with the events already stored) or inline (in the appending transaction)';

CREATE FUNCTION ep.create_table_projection(name text, source regclass, handler regprocedure)
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
    PERFORM ep._projection_lock();
    BEGIN
        -- 'rebuilding': the next round loads the current rows, then follows changes
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, source, status)
        VALUES (create_table_projection.name, 'table', create_table_projection.handler,
                ep._role(CURRENT_USER), 'async', create_table_projection.source, 'rebuilding');
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.create_table_projection(text, regclass, regprocedure) IS
    'Change data capture of a table: handler(op text, old_row jsonb, new_row jsonb) is called with INSERT for every existing row, then for every INSERT, UPDATE, DELETE and TRUNCATE in commit order';

CREATE FUNCTION ep._projection_row(name text) RETURNS ep.projection_defs
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
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection "%" does not exist', name
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ep._projection_row(text) IS 'Internal: lock and return a projection visible to the caller, or raise undefined_object';

CREATE FUNCTION ep.pause_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    PERFORM ep._projection_lock();
    r := ep._projection_row(name);
    UPDATE ep.projection_defs d SET status = 'paused'
     WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
END
$$;
COMMENT ON FUNCTION ep.pause_projection(text) IS
    'Stop applying a projection; an async one resumes where it stopped (a paused table projection keeps its changes in the WAL)';

CREATE FUNCTION ep.resume_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    PERFORM ep._projection_lock();
    r := ep._projection_row(name);
    IF r.status OPERATOR(pg_catalog.=) ANY ('{paused,failed}') THEN
        -- a table projection that never loaded its source does it now
        UPDATE ep.projection_defs d
           SET status = CASE WHEN d.kind OPERATOR(pg_catalog.=) 'table' AND d.last_lsn IS NULL
                             THEN 'rebuilding' ELSE 'running' END
         WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    END IF;
END
$$;
COMMENT ON FUNCTION ep.resume_projection(text) IS 'Resume a paused projection, or a failed one once its cause is fixed';

CREATE FUNCTION ep.rebuild_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    PERFORM ep._projection_lock();
    r := ep._projection_row(name);
    IF r.mode OPERATOR(pg_catalog.=) 'inline' THEN
        RAISE EXCEPTION 'cannot rebuild inline projection "%"', name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Replay the events yourself with ep.read_all(), or recreate the projection as async.';
    END IF;
    DELETE FROM ep.parked p WHERE p.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    UPDATE ep.projection_defs d
       SET status = 'rebuilding', last_position = 0, last_lsn = NULL, last_error = NULL
     WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
END
$$;
COMMENT ON FUNCTION ep.rebuild_projection(text) IS
    'Replay every matching event from the store (a table projection: every current row after a TRUNCATE call), then continue live; the handler''s owner resets the read model first';

CREATE FUNCTION ep.drop_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    PERFORM ep._projection_lock();
    r := ep._projection_row(name);
    DELETE FROM ep.projection_defs d WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.drop_projection(text) IS 'Drop a projection and its parked events (its read model is left alone)';

CREATE FUNCTION ep.retry_parked(name text)
    RETURNS integer LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
    n integer;
BEGIN
    r := ep._projection_row(name);
    UPDATE ep.parked p SET retry = true
     WHERE p.projection_id OPERATOR(pg_catalog.=) r.projection_id AND NOT p.retry;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ep.retry_parked(text) IS
    'Hand a projection''s parked events back to it: the next apply round calls the handler again (an event that fails again is parked again); returns how many';

-- ---------------------------------------------------------------------------
-- Views
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep._slot_name() RETURNS name
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT ('ep_' OPERATOR(pg_catalog.||) d.oid::text)::name FROM pg_catalog.pg_database d
           WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database() $$;
COMMENT ON FUNCTION ep._slot_name() IS 'Name of the replication slot of this database''s projections';

CREATE VIEW ep.projection_slot WITH (security_invoker = true) AS
    SELECT ep._slot_name() AS slot_name, s.confirmed_flush_lsn, s.restart_lsn, s.wal_status, s.safe_wal_size,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
           (SELECT st.cover_position FROM ep.projection_state st) AS cover_position,
           (SELECT st.slot_created_at FROM ep.projection_state st) AS slot_created_at
      FROM (SELECT 1) one
      LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name OPERATOR(pg_catalog.=) ep._slot_name();
COMMENT ON VIEW ep.projection_slot IS
    'The replication slot of this database''s projections: WAL it retains (retained_bytes, wal_status, safe_wal_size) and how far decoding is behind (lag_bytes); no row values when the slot does not exist (yet)';

-- Lag of an event projection. Functions with their own settings, so that the
-- view's cost estimate stays small (no JIT for a catalog view).
CREATE FUNCTION ep._lag_events(after bigint, event_types text[], category text)
    RETURNS bigint LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ SELECT pg_catalog.count(*) FROM ep.events e
           WHERE e.global_position OPERATOR(pg_catalog.>) $1
             AND ($2 IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY ($2))
             AND ($3 IS NULL OR e.category OPERATOR(pg_catalog.=) $3) $$;
COMMENT ON FUNCTION ep._lag_events(bigint, text[], text) IS 'Internal: matching events after a position';

CREATE FUNCTION ep._lag_seconds(after bigint, event_types text[], category text)
    RETURNS double precision LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ SELECT pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(e.recorded_at))
            FROM ep.events e
           WHERE e.global_position OPERATOR(pg_catalog.>) $1
             AND ($2 IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY ($2))
             AND ($3 IS NULL OR e.category OPERATOR(pg_catalog.=) $3) $$;
COMMENT ON FUNCTION ep._lag_seconds(bigint, text[], text) IS 'Internal: age in seconds of the oldest matching event after a position';

CREATE VIEW ep.projections WITH (security_invoker = true) AS
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
           END AS wal_status
      FROM ep.projection_defs d;
COMMENT ON VIEW ep.projections IS
    'Projections with their progress: last_position (every event at or below it applied), lag in events, WAL bytes and seconds, parked events, the slot''s wal_status';

CREATE VIEW ep.parked_events WITH (security_invoker = true) AS
    SELECT d.name AS projection, p.global_position, p.error, p.attempts, p.parked_at,
           p.op, p.old_row, p.new_row, p.retry
      FROM ep.parked p
      JOIN ep.projection_defs d USING (projection_id);
COMMENT ON VIEW ep.parked_events IS
    'Events (global_position) or table changes (op, old_row, new_row) a projection''s handler failed on after every retry';

GRANT SELECT ON ep.projections, ep.parked_events, ep.projection_slot TO PUBLIC;
