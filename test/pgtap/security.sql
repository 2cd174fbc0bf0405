-- Security contract (DESIGN.md section 1) as catalog facts: what runs with
-- whose rights, what is granted to PUBLIC, and that every public object is
-- documented.
BEGIN;
SELECT plan(12);

-- every SECURITY DEFINER function of the extension pins its search_path
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'ep'::regnamespace AND p.prosecdef
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')$$,
    'SECURITY DEFINER functions set their own search_path');

-- ... and none of them has pg_temp anywhere but last
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p, unnest(p.proconfig) c
     WHERE p.pronamespace = 'ep'::regnamespace AND c LIKE 'search_path=%'
       AND c NOT LIKE '%pg_temp' $$,
    'pinned search_paths end with pg_temp');

-- the subscription functions decide by current_user: they must run as their caller
SELECT is_empty($$
    SELECT p.proname::text FROM pg_proc p
     WHERE p.pronamespace = 'ep'::regnamespace AND p.prosecdef
       AND p.proname IN ('create_subscription', 'ack', 'drop_subscription', 'poll')$$,
    'subscription functions are SECURITY INVOKER');

-- jobs: recorded search_path, time limit, the contract signature kept
SELECT function_returns('ep', 'schedule_job', ARRAY['text', 'interval', 'text'], 'bigint');
SELECT function_returns('ep', 'schedule_job', ARRAY['text', 'interval', 'text', 'interval'], 'bigint');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.jobs'::regclass AND attnum > 0$$,
    $$VALUES ('search_path'), ('time_limit')$$, 'ep.jobs shows search_path and time_limit');

-- projections and views record what their code runs with
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.projections'::regclass AND attnum > 0$$,
    $$VALUES ('search_path'), ('handler_timeout')$$, 'ep.projections shows search_path and handler_timeout');

-- row-level security on the tables PUBLIC may write
SELECT is_empty($$
    SELECT c.oid::regclass::text FROM pg_class c
     WHERE c.relnamespace = 'ep'::regnamespace AND c.relkind = 'r'
       AND (has_table_privilege('public', c.oid, 'INSERT')
            OR has_table_privilege('public', c.oid, 'UPDATE')
            OR has_table_privilege('public', c.oid, 'DELETE'))
       AND NOT c.relrowsecurity$$,
    'every ep table PUBLIC may write has row-level security');

-- nobody but the extension owner may add triggers to ep.events (inline
-- projections and immediate views run in every appender's transaction)
SELECT ok(NOT has_table_privilege('public', 'ep.events', 'TRIGGER'),
    'PUBLIC has no TRIGGER on ep.events');

-- the settings of the trust boundary exist with their defaults
SELECT is(current_setting('event_patterns.handler_timeout'), '30s', 'handler_timeout defaults to 30 s');
SELECT is(current_setting('event_patterns.max_job_workers_per_role'), '2', 'max_job_workers_per_role defaults to 2');

-- COMMENT ON every public object (functions, tables, views)
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'ep'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
    UNION ALL
    SELECT c.oid::regclass::text FROM pg_class c
     WHERE c.relnamespace = 'ep'::regnamespace AND c.relkind IN ('r', 'v', 'p')
       AND obj_description(c.oid, 'pg_class') IS NULL$$,
    'every function, table and view of the extension has a comment');

SELECT * FROM finish();
ROLLBACK;
