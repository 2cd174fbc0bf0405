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
    owner       name        NOT NULL DEFAULT CURRENT_USER,
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

CREATE VIEW ep.jobs AS
    SELECT job_id, kind, target, schedule, next_run_at, last_run_at, last_status,
           last_error, owner
      FROM ep.job_registry;
COMMENT ON VIEW ep.jobs IS 'Scheduled background jobs: view refreshes, scavenging, snapshots, partition maintenance';

CREATE VIEW ep.job_runs AS
    SELECT job_id, started_at, finished_at, status, message
      FROM ep.job_run_log;
COMMENT ON VIEW ep.job_runs IS 'Recent runs of background jobs (succeeded or failed, with a message)';

GRANT SELECT ON ep.jobs, ep.job_runs TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.job_registry', '');

-- Jobs are owned by the role that scheduled them and run as that role. A
-- role other than a superuser sees and changes only its own rows (row-level
-- security); the worker, a superuser, runs them all.
ALTER TABLE ep.job_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_registry_owner ON ep.job_registry
    USING (owner = CURRENT_USER) WITH CHECK (owner = CURRENT_USER);
GRANT SELECT, INSERT, UPDATE, DELETE ON ep.job_registry TO PUBLIC;

-- Internal API used by the features that schedule work (SECURITY INVOKER:
-- the job's owner is the calling role).
CREATE FUNCTION ep._schedule_job(kind text, target text, every interval, command text)
    RETURNS bigint LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id bigint;
BEGIN
    IF every IS NULL OR every <= interval '0' THEN
        RAISE EXCEPTION 'schedule must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ep.job_registry AS j (kind, target, schedule, command, owner, next_run_at)
    VALUES (kind, target, every, command, current_user, now() + every)
    ON CONFLICT ON CONSTRAINT job_registry_kind_target_key DO UPDATE
        SET schedule = excluded.schedule, command = excluded.command,
            owner = excluded.owner, next_run_at = excluded.next_run_at, failures = 0
    RETURNING j.job_id INTO id;
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
