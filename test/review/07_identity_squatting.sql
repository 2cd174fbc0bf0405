-- F7 (low): OVERRIDING SYSTEM VALUE on tables granted INSERT to PUBLIC.
-- as eve:
CREATE FUNCTION eve.sq(e ep.events) RETURNS void LANGUAGE sql AS $$ SELECT $$;
INSERT INTO ep.projection_defs (projection_id, name, kind, handler) OVERRIDING SYSTEM VALUE
  SELECT g, 'squat'||g, 'events', 'eve.sq(ep.events)'::regprocedure FROM generate_series(1, 2000) g
  ON CONFLICT DO NOTHING;
INSERT INTO ep.job_registry (job_id, kind, target, schedule, command, next_run_at) OVERRIDING SYSTEM VALUE
  SELECT g, 'custom', 'squat'||g, '100 years', 'SELECT 1', 'infinity' FROM generate_series(1, 2000) g
  ON CONFLICT DO NOTHING;
-- as alice: SELECT ep.create_projection('p', 'alice.h(ep.events)');  -> ERROR: projection "p" already exists
--           SELECT ep.schedule_job('nightly', '1 day', 'SELECT 1');  -> ERROR: duplicate key ... "job_registry_pkey"
