-- F4 (high): an async handler that catches the time-limit cancel freezes the
-- database's worker for good: every role's projections and jobs stop.
-- as eve (the handler needs a schema eve may create in):
CREATE FUNCTION eve.h(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  LOOP
    BEGIN PERFORM pg_catalog.pg_sleep(1);
    EXCEPTION WHEN query_canceled THEN NULL;   -- the 500 ms / handler_timeout cancel
    END;
  END LOOP;
END $$;
SELECT ep.create_projection('eve_p', 'eve.h(ep.events)'::regprocedure);
SELECT ep.append('eve-1', 'Ping', '{}');
-- afterwards: alice's async projections never advance (ep.wait_for_projection -> f),
-- alice's jobs never run again; pg_stat_activity shows the worker "active" forever.

-- F4b: no schema, no function needed: hold the apply-round lock in any session.
-- as eve (plain LOGIN role):
--   SELECT pg_advisory_lock(4559461716873445458);   -- key from src/projection.h, SQL key space (field4 = 1)
--   SELECT pg_sleep(86400);                          -- or just stay idle
-- -> no async projection of any role in the database advances while the session lives
--    (ep.wait_for_projection('alice_p','15 seconds') -> f; it catches up after the lock is released).

-- F4c: the job time limit is not enforced (no schema needed). As eve:
--   SELECT ep.schedule_job('forever', '1 second',
--     $j$DO $$ BEGIN LOOP BEGIN PERFORM pg_catalog.pg_sleep(1);
--           EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$$j$, '2 seconds');
-- -> pg_stat_activity: "event_patterns job" of eve still active long after 2 s.

-- F4b2: a table lock does the same (UPDATE/DELETE granted to PUBLIC allow ACCESS EXCLUSIVE). As eve:
--   BEGIN; LOCK TABLE ep.projection_defs, ep.job_registry IN ACCESS EXCLUSIVE MODE;  -- stay idle
-- -> pg_stat_activity: "event_patterns worker | Lock | relation | projections"; no projection or job runs.
