-- F5 (medium): one role takes every job runner; other roles' jobs and
-- projections starve.
-- (a) slow projections: projection runners are not counted per role.
CREATE FUNCTION eve.slow(e ep.events) RETURNS void LANGUAGE sql AS $$ SELECT pg_catalog.pg_sleep(1) $$;
SELECT ep.create_projection('slow'||i, 'eve.slow(ep.events)'::regprocedure, ARRAY['Slow']) FROM generate_series(1,5) i;
SELECT count(ep.append('eve-s', 'Slow', '{}')) FROM generate_series(1,300);
-- -> 4 "projection runner" processes + the worker busy for ~300 s; alice's
--    jobs do not start, her projections lag; ep.drop_projection('slowN') does
--    not stop the runners. handler_timeout => '0' (accepted from anyone) makes
--    it permanent: SELECT ep.create_projection('x', 'eve.slow(ep.events)', NULL, NULL, 'async', 'eve', '0');
-- (b) job flood: the scheduler only looks at the first 1000 due rows.
INSERT INTO ep.job_registry (kind, target, schedule, command, next_run_at, time_limit)
  SELECT 'custom', 'flood'||g, '1 day', 'SELECT pg_catalog.pg_sleep(86400)', 'epoch', '2 days'
    FROM generate_series(1, 2000) g;
-- -> alice's due jobs never run (eve's 2 running + 1998 waiting rows fill LIMIT 1000)
