-- The SQL surface of the background-worker runtime: ep.jobs, ep.job_runs,
-- ep.workers, job scheduling and its validation, the backoff rule, pruning
-- of the run history, and row-level security between job owners.
\pset null '(null)'
\set SHOW_CONTEXT never

-- contract columns, in order
SELECT table_name, string_agg(column_name, ', ' ORDER BY ordinal_position)
  FROM information_schema.columns
 WHERE table_schema = 'ep' AND table_name IN ('jobs', 'job_runs', 'workers')
 GROUP BY table_name ORDER BY table_name;

-- the worker of this database (if started yet): at most one row, ours
SELECT count(*) <= 1 AS at_most_one, bool_and(database = current_database()) IS NOT FALSE AS ours
  FROM ep.workers;

-- scheduling: creates, then replaces the (kind, target) job
SELECT ep._schedule_job('custom', 'nightly', '1 day', 'SELECT 1') AS id \gset
SELECT ep._schedule_job('custom', 'nightly', '2 days', 'SELECT 2') = :id AS same_job;
SELECT kind, target, schedule, owner = current_user AS mine, failures, command,
       next_run_at > now() + interval '47 hours' AS next_in_two_days, last_status
  FROM ep.jobs WHERE job_id = :id;
SELECT ep.schedule_job('weekly', '7 days', 'SELECT 3') IS NOT NULL AS scheduled;
SELECT kind, target FROM ep.jobs ORDER BY job_id;

-- bad input: clear errors, nothing written
SELECT ep._schedule_job('bogus', 'x', '1 day', 'SELECT 1');
SELECT ep._schedule_job(NULL, 'x', '1 day', 'SELECT 1');
SELECT ep._schedule_job('custom', NULL, '1 day', 'SELECT 1');
SELECT ep._schedule_job('custom', '  ', '1 day', 'SELECT 1');
SELECT ep._schedule_job('custom', 'x', '0 seconds', 'SELECT 1');
SELECT ep._schedule_job('custom', 'x', '-1 hour', 'SELECT 1');
SELECT ep._schedule_job('custom', 'x', NULL, 'SELECT 1');
SELECT ep._schedule_job('custom', 'x', '1 day', NULL);
SELECT ep._schedule_job('custom', 'x', '1 day', '');
SELECT ep.schedule_job('x', '-5 minutes', 'SELECT 1');
SELECT count(*) AS jobs FROM ep.jobs;
-- all of them are invalid_parameter_value
DO $$
DECLARE
    st text;
    args text[];
BEGIN
    FOREACH args SLICE 1 IN ARRAY ARRAY[['bogus', 'x', '1 day', 'SELECT 1'],
                                        ['custom', '', '1 day', 'SELECT 1'],
                                        ['custom', 'x', '-1 day', 'SELECT 1'],
                                        ['custom', 'x', '1 day', ' ']]
    LOOP
        BEGIN
            PERFORM ep._schedule_job(args[1], args[2], args[3]::interval, args[4]);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
            RAISE NOTICE '%: %', args, st;
        END;
    END LOOP;
END
$$;

-- unscheduling
SELECT ep.unschedule_job('weekly') AS removed, ep.unschedule_job('weekly') AS again;
SELECT ep._unschedule_job('custom', 'nightly') AS removed;
SELECT count(*) AS jobs FROM ep.jobs;

-- next run: on schedule; late jobs from now; after failures a backoff that
-- starts at min(schedule, 1 minute) and doubles up to max(schedule, 1 hour)
SELECT ep._job_next_run('10 seconds', 0, now()) - now() AS on_time,
       ep._job_next_run('10 seconds', 0, now() - interval '3 days') - now() AS late,
       ep._job_next_run('1 second', 1, now()) - now() AS fail1,
       ep._job_next_run('1 second', 3, now()) - now() AS fail3,
       ep._job_next_run('1 second', 30, now()) - now() AS fail30,
       ep._job_next_run('1 day', 1, now()) - now() AS daily_fail1,
       ep._job_next_run('1 day', 30, now()) - now() AS daily_fail30;

-- the clock went back: a next run further ahead than any schedule or backoff
-- could put it is pulled in to now() + schedule; others are left alone
BEGIN;
SELECT ep.schedule_job('far', '1 day', 'SELECT 1') AS far_id \gset
SELECT ep.schedule_job('near', '1 day', 'SELECT 1') AS near_id \gset
UPDATE ep.job_registry SET next_run_at = now() + interval '30 days' WHERE job_id = :far_id;
UPDATE ep.job_registry SET next_run_at = now() + interval '20 hours' WHERE job_id = :near_id;
SELECT ep._reschedule_far_jobs() AS moved;
SELECT target, next_run_at - now() AS next_in FROM ep.jobs WHERE job_id IN (:far_id, :near_id) ORDER BY target;
SELECT ep.unschedule_job('far'), ep.unschedule_job('near');
COMMIT;

-- run history is pruned: the last N runs per job, nothing older than max_age
-- (in one transaction, so the worker's own pruning cannot interfere)
BEGIN;
INSERT INTO ep.job_run_log (job_id, started_at, finished_at, status, message)
SELECT 424242, now() - g * interval '1 minute', now(), 'succeeded', 'run ' || g
  FROM generate_series(1, 5) g;
INSERT INTO ep.job_run_log (job_id, started_at, finished_at, status, message)
VALUES (424243, now() - interval '8 days', now() - interval '8 days', 'failed', 'old'),
       (424243, now(), NULL, 'running', 'still running');
SELECT ep._prune_job_runs(2) AS pruned;
SELECT job_id, status, message FROM ep.job_runs WHERE job_id IN (424242, 424243) ORDER BY run_id;
DELETE FROM ep.job_run_log WHERE job_id IN (424242, 424243);
COMMIT;

-- row-level security: each role sees and changes only its own jobs
CREATE FUNCTION public.squat_h(e ep.events) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE ROLE regress_ep_alice;
CREATE ROLE regress_ep_bob;
SET ROLE regress_ep_alice;
SELECT ep.schedule_job('alice-job', '1 day', 'SELECT 1') IS NOT NULL AS alice_scheduled;
SET ROLE regress_ep_bob;
SELECT ep.schedule_job('bob-job', '1 day', 'SELECT 1') IS NOT NULL AS bob_scheduled;
SELECT target, owner FROM ep.jobs ORDER BY target;
UPDATE ep.job_registry SET command = 'SELECT 666' WHERE target = 'alice-job';
DELETE FROM ep.job_registry WHERE target = 'alice-job';
INSERT INTO ep.job_registry (kind, target, schedule, command, owner)
VALUES ('custom', 'forged', '1 day', 'SELECT 1', 'regress_ep_alice');
SELECT ep.unschedule_job('alice-job') AS bob_removed_alice_job;
-- job names belong to their owner (review F6): bob's job of the same name
-- neither blocks alice's nor replaces it, and removing his leaves hers
SELECT ep.schedule_job('alice-job', '2 days', 'SELECT 2') IS NOT NULL AS bob_same_name;
SET ROLE regress_ep_alice;
SELECT ep.schedule_job('alice-job', '3 days', 'SELECT 3') IS NOT NULL AS alice_rescheduled;
SELECT target, schedule, command FROM ep.jobs ORDER BY target;
SET ROLE regress_ep_bob;
SELECT ep.unschedule_job('alice-job') AS bob_removed_his;
-- no role may lock the registry (it would stop the scheduler for all)
BEGIN;
LOCK TABLE ep.job_registry IN EXCLUSIVE MODE;
ROLLBACK;
-- nor choose ids (to squat those of other roles' next jobs or projections)
INSERT INTO ep.job_registry (job_id, kind, target, schedule, command) OVERRIDING SYSTEM VALUE
VALUES (999999, 'custom', 'squat', '100 years', 'SELECT 1');
INSERT INTO ep.projection_defs (projection_id, name, kind, handler) OVERRIDING SYSTEM VALUE
VALUES (999999, 'squat', 'events', 'public.squat_h(ep.events)'::regprocedure);
-- a non-superuser cannot write the run history or prune it
INSERT INTO ep.job_run_log (job_id, started_at, status) VALUES (1, now(), 'succeeded');
SELECT ep._prune_job_runs();
SELECT ep._reschedule_far_jobs();
RESET ROLE;
SELECT target, owner, command FROM ep.jobs ORDER BY target;
SELECT ep._unschedule_job('custom', 'alice-job'), ep._unschedule_job('custom', 'bob-job');
DROP ROLE regress_ep_alice;
DROP ROLE regress_ep_bob;
DROP FUNCTION public.squat_h(ep.events);

-- owners are found by exact name, never by parsing it: a role named "10"
-- is not OID 10 (the bootstrap superuser), "RegressMixed" is not
-- regressmixed
CREATE ROLE "10";
CREATE ROLE "RegressMixed";
SET ROLE "10";
INSERT INTO ep.job_registry (kind, target, schedule, command)
VALUES ('custom', 'digits-job', '1 day', 'SELECT 1');
SELECT target, owner FROM ep.jobs ORDER BY target;
SET ROLE "RegressMixed";
SELECT ep.schedule_job('mixed-job', '1 day', 'SELECT 1') IS NOT NULL AS mixed_scheduled;
SELECT target, owner FROM ep.jobs ORDER BY target;
RESET ROLE;
SELECT target, owner FROM ep.jobs WHERE target IN ('digits-job', 'mixed-job') ORDER BY target;
SELECT ep._unschedule_job('custom', 'digits-job'), ep._unschedule_job('custom', 'mixed-job');
DROP ROLE "10";
DROP ROLE "RegressMixed";

-- GUCs of the runtime
SHOW event_patterns.max_workers;
SHOW event_patterns.max_job_workers;
SET event_patterns.max_workers = 3;
