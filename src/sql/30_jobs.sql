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
    search_path text,
    time_limit  interval CHECK (time_limit > '0'),
    CONSTRAINT job_registry_owner_kind_target_key UNIQUE (owner, kind, target)
);
COMMENT ON TABLE ep.job_registry IS 'Scheduled background jobs (read them through ep.jobs)';
COMMENT ON COLUMN ep.job_registry.search_path IS
    'search_path the command runs with, recorded when the job was scheduled (NULL: pg_catalog, pg_temp)';
COMMENT ON COLUMN ep.job_registry.time_limit IS
    'Time limit of one run (NULL: event_patterns.handler_timeout for custom jobs, at least an hour for the extension''s own kinds)';

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
           last_error, pg_catalog.pg_get_userbyid(owner) AS owner, failures, command,
           search_path, time_limit
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
-- No DELETE and no table-wide UPDATE (see ep._catalog_delete()).
GRANT SELECT, INSERT ON ep.job_registry TO PUBLIC;
GRANT UPDATE (schedule, command, owner, next_run_at, failures, search_path, time_limit)
    ON ep.job_registry TO PUBLIC;
CREATE TRIGGER job_registry_identity BEFORE INSERT ON ep.job_registry
    FOR EACH ROW EXECUTE FUNCTION ep._identity_guard('job_id');

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

CREATE FUNCTION ep._schedule_job(kind text, target text, every interval, command text,
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

-- The extension's own jobs: their commands name everything with its schema.
CREATE FUNCTION ep._schedule_job(kind text, target text, every interval, command text)
    RETURNS bigint LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._schedule_job(kind, target, every, command, NULL, NULL) $$;
COMMENT ON FUNCTION ep._schedule_job(text, text, interval, text) IS
    'Internal: create or replace the (kind, target) job; it runs command every interval as the calling role';

CREATE FUNCTION ep._unschedule_job(kind text, target text)
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
-- The caller's search_path is recorded: the command's unqualified names
-- resolve as they did where the job was scheduled (no SET clause here, or
-- the function's own path would be recorded instead).
CREATE FUNCTION ep.schedule_job(name text, every interval, command text)
    RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT ep._schedule_job('custom', name, every, command,
                              pg_catalog.current_setting('search_path'), NULL) $$;
COMMENT ON FUNCTION ep.schedule_job(text, interval, text) IS
    'Run command every interval in the background, in a session of the calling role, with the caller''s search_path; returns the job id';

CREATE FUNCTION ep.schedule_job(name text, every interval, command text, time_limit interval)
    RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT ep._schedule_job('custom', name, every, command,
                              pg_catalog.current_setting('search_path'), time_limit) $$;
COMMENT ON FUNCTION ep.schedule_job(text, interval, text, interval) IS
    'Run command every interval in the background, as the calling role, cancelling a run after time_limit; returns the job id';

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
