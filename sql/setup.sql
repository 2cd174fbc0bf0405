-- The extension installs into schema ep, drops and re-creates cleanly.
CREATE EXTENSION event_patterns;
SELECT extversion FROM pg_extension WHERE extname = 'event_patterns';
SELECT nspname FROM pg_namespace WHERE nspname = 'ep';
SHOW event_patterns.notify;
SHOW event_patterns.naptime;
-- a misspelt setting of the reserved prefix is refused
SET event_patterns.no_such_setting = 1;
DROP EXTENSION event_patterns;
SELECT count(*) FROM pg_namespace WHERE nspname = 'ep';
CREATE EXTENSION event_patterns;
-- every public function and view explains itself
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'ep' AND obj_description(p.oid, 'pg_proc') IS NULL
 ORDER BY 1;
SELECT c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'ep' AND c.relkind IN ('r', 'v', 'p')
   AND obj_description(c.oid, 'pg_class') IS NULL
 ORDER BY 1;
-- rows differing between an incremental view and its query (EXCEPT ALL
-- both ways), for the ivm_* suites; runs as its caller
CREATE FUNCTION public.ivm_diff(v text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q text; a bigint; b bigint;
BEGIN
    SELECT i.query INTO q FROM ep.ivm_views i WHERE i.view_rel = to_regclass(v);
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $$;
