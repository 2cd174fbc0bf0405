-- API contract of DESIGN.md sections 2-5 (names, signatures, view columns)
-- as tests outside the project call them.
BEGIN;
SELECT plan(27);

-- section 2, part two
SELECT function_returns('ep', 'aggregate', ARRAY['text', 'regprocedure', 'jsonb', 'bigint', 'timestamp with time zone'], 'jsonb');
SELECT function_returns('ep', 'register_upcaster', ARRAY['text', 'integer', 'regprocedure'], 'void');

-- section 3: projections
SELECT function_returns('ep', 'create_projection', ARRAY['text', 'regprocedure', 'text[]', 'text', 'text'], 'void');
SELECT function_returns('ep', 'create_table_projection', ARRAY['text', 'regclass', 'regprocedure'], 'void');
SELECT function_returns('ep', 'pause_projection', ARRAY['text'], 'void');
SELECT function_returns('ep', 'resume_projection', ARRAY['text'], 'void');
SELECT function_returns('ep', 'rebuild_projection', ARRAY['text'], 'void');
SELECT function_returns('ep', 'drop_projection', ARRAY['text'], 'void');
SELECT function_returns('ep', 'wait_for_projection', ARRAY['text', 'interval'], 'boolean');
SELECT function_returns('ep', 'retry_parked', ARRAY['text'], 'integer');
SELECT has_view('ep', 'projections', 'ep.projections is a view');
SELECT has_view('ep', 'parked_events', 'ep.parked_events is a view');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.projections'::regclass AND attnum > 0$$,
    $$VALUES ('name'), ('mode'), ('status'), ('last_position'), ('lag_events'), ('lag_bytes'), ('last_applied_at'), ('last_error'), ('parked')$$,
    'ep.projections has the contract columns');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.parked_events'::regclass AND attnum > 0$$,
    $$VALUES ('projection'), ('global_position'), ('error'), ('attempts'), ('parked_at')$$,
    'ep.parked_events has the contract columns');

-- section 4: incremental views
SELECT function_returns('ep', 'create_incremental_view', ARRAY['text', 'text', 'text'], 'void');
SELECT function_returns('ep', 'refresh_view', ARRAY['text', 'boolean'], 'void');
SELECT function_returns('ep', 'schedule_refresh', ARRAY['text', 'interval'], 'void');
SELECT function_returns('ep', 'unschedule_refresh', ARRAY['text'], 'void');
SELECT function_returns('ep', 'drop_incremental_view', ARRAY['text'], 'void');
SELECT has_view('ep', 'incremental_views', 'ep.incremental_views is a view');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.incremental_views'::regclass AND attnum > 0$$,
    $$VALUES ('name'), ('query'), ('refresh'), ('schedule'), ('last_refreshed_at'), ('pending_changes'), ('is_stale'), ('last_refresh_ms'), ('last_error')$$,
    'ep.incremental_views has the contract columns');

-- section 5: background work
SELECT has_view('ep', 'jobs', 'ep.jobs is a view');
SELECT has_view('ep', 'job_runs', 'ep.job_runs is a view');
SELECT has_view('ep', 'workers', 'ep.workers is a view');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.jobs'::regclass AND attnum > 0$$,
    $$VALUES ('job_id'), ('kind'), ('target'), ('schedule'), ('next_run_at'), ('last_run_at'), ('last_status'), ('last_error'), ('owner')$$,
    'ep.jobs has the contract columns');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.job_runs'::regclass AND attnum > 0$$,
    $$VALUES ('job_id'), ('started_at'), ('finished_at'), ('status'), ('message')$$,
    'ep.job_runs has the contract columns');
SELECT bag_has($$SELECT attname::text FROM pg_attribute WHERE attrelid = 'ep.workers'::regclass AND attnum > 0$$,
    $$VALUES ('database'), ('pid'), ('started_at'), ('state')$$,
    'ep.workers has the contract columns');

SELECT * FROM finish();
ROLLBACK;
