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
