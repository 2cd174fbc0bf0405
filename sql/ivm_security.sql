-- Incremental views and the trust model: maintenance, refreshes and the
-- population at creation run as the view's owner, with the search_path
-- recorded at creation (pg_temp last), in a GUC nest level of their own,
-- under a time limit; creating a view needs the privileges PostgreSQL would
-- ask for. Each attack is replayed by an ordinary LOGIN role.
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
SELECT current_user AS su \gset
CREATE ROLE regress_ivs_mallory LOGIN;
CREATE ROLE regress_ivs_owner LOGIN;
CREATE SCHEMA ivm_sec;
GRANT USAGE ON SCHEMA ivm_sec TO PUBLIC;
-- evidence of code that ran where it should not
CREATE TABLE ivm_sec.witness (who name, what text);
GRANT INSERT, SELECT ON ivm_sec.witness TO PUBLIC;
-- try(statement): SQLSTATE, message, detail and hint of its error, or ok
CREATE FUNCTION ivm_sec.try(q text) RETURNS TABLE (state text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN QUERY SELECT 'ok', NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT SQLSTATE, message, nullif(detail, ''), nullif(hint, '');
END $$;
GRANT EXECUTE ON FUNCTION ivm_sec.try(text) TO PUBLIC;
-- differing rows between a view and its query (EXCEPT ALL both ways)
CREATE FUNCTION ivm_sec.diff(v text) RETURNS bigint LANGUAGE sql AS $$ SELECT public.ivm_diff(v) $$;
GRANT EXECUTE ON FUNCTION ivm_sec.diff(text) TO PUBLIC;

-- 1. A superuser's immediate view over ep.events. Any role that appends
-- runs its maintenance; the view's SQL must not be planned in the writer's
-- name space.
SELECT ep.create_incremental_view('ivm_sec.deposits',
    'SELECT stream_id, lower(event_type) AS kind, count(*) AS n
       FROM ep.events WHERE event_type = ''Deposited'' GROUP BY stream_id, lower(event_type)');
SELECT search_path FROM ep.ivm_views WHERE name = 'ivm_sec.deposits';
CREATE SCHEMA ivs_evil AUTHORIZATION regress_ivs_mallory;

\c - regress_ivs_mallory
-- (a) a temporary domain named text whose check runs mallory's function
CREATE FUNCTION pg_temp.evil(t pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ivm_sec.witness VALUES (current_user, 'temporary domain');
    BEGIN
        EXECUTE 'ALTER ROLE regress_ivs_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END $$;
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.evil(VALUE));
SELECT ep.append('acct-1', 'Deposited', '{"amount": 5}');
SELECT ep.append('acct-1', 'Withdrawn', '{"amount": 1}');
-- (b) a schema of mallory's first on the search_path, with its own = and lower
CREATE FUNCTION ivs_evil.eq(a pg_catalog.text, b pg_catalog.text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    INSERT INTO ivm_sec.witness VALUES (current_user, 'operator');
    RETURN true;
END $$;
CREATE OPERATOR ivs_evil.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = ivs_evil.eq);
CREATE FUNCTION ivs_evil.lower(t pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    INSERT INTO ivm_sec.witness VALUES (current_user, 'function');
    RETURN 'pwned';
END $$;
SET search_path = ivs_evil, pg_catalog;
SELECT ep.append('acct-2', 'Deposited', '{"amount": 7}');
SELECT ep.append('acct-2', 'Withdrawn', '{"amount": 7}');
RESET search_path;
\c - :su
-- nothing of mallory's ran, as anybody; mallory is no superuser; the view
-- holds what its query returns
SELECT count(*) AS ran FROM ivm_sec.witness;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_ivs_mallory';
SELECT stream_id, kind, n FROM ivm_sec.deposits ORDER BY 1;
SELECT ivm_sec.diff('ivm_sec.deposits');
SELECT ep.drop_incremental_view('ivm_sec.deposits');

-- 2. No setting made by code the view calls survives maintenance, a
-- refresh or the creation of the view.
CREATE SCHEMA ivs_own AUTHORIZATION regress_ivs_owner;
GRANT USAGE ON SCHEMA ivs_own TO regress_ivs_mallory;
\c - regress_ivs_owner
SET search_path = ivs_own;
CREATE TABLE t (k int, v text);
GRANT SELECT, INSERT, UPDATE, DELETE ON t TO regress_ivs_mallory;
INSERT INTO t VALUES (1, 'a'), (2, 'b');
CREATE FUNCTION leak(x text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM set_config('work_mem', '1234kB', false);
    PERFORM set_config('statement_timeout', '4321', false);
    PERFORM set_config('search_path', 'pg_catalog, ivs_own', false);
    RETURN upper(x);
END $$;
SELECT current_setting('work_mem') AS work_mem, current_setting('statement_timeout') AS statement_timeout,
       current_setting('search_path') AS search_path;
SELECT ep.create_incremental_view('t_imm', 'SELECT k, leak(v) AS v FROM t');
SELECT ep.create_incremental_view('t_def', 'SELECT k, count(*) AS n FROM t WHERE leak(v) <> '''' GROUP BY k', 'deferred');
SELECT ep.create_incremental_view('t_full', 'SELECT k, leak(v) AS v FROM t', 'full');
-- creation ran leak(): the creator's settings are unchanged
SELECT current_setting('work_mem') AS work_mem, current_setting('statement_timeout') AS statement_timeout,
       current_setting('search_path') AS search_path;
\c - regress_ivs_mallory
SET search_path = ivs_own;
INSERT INTO t VALUES (3, 'c');
UPDATE t SET v = v || 'x' WHERE k = 1;
DELETE FROM t WHERE k = 2;
-- the writer's settings are unchanged
SELECT current_setting('work_mem') AS work_mem, current_setting('statement_timeout') AS statement_timeout,
       current_setting('search_path') AS search_path;
\c - regress_ivs_owner
SET search_path = ivs_own;
SELECT ep.refresh_view('t_def');
SELECT ep.refresh_view('t_full');
SELECT ep.refresh_view('t_imm', true);
-- the refreshing role's settings are unchanged
SELECT current_setting('work_mem') AS work_mem, current_setting('statement_timeout') AS statement_timeout,
       current_setting('search_path') AS search_path;
SELECT * FROM t_imm ORDER BY k;
SELECT ivm_sec.diff('ivs_own.t_imm') AS imm, ivm_sec.diff('ivs_own.t_def') AS def, ivm_sec.diff('ivs_own.t_full') AS full;

-- 3. Privileges as PostgreSQL would ask for them.
\c - :su
CREATE TABLE ivm_sec.shared (k int, v int);
INSERT INTO ivm_sec.shared VALUES (1, 10), (2, 20);
CREATE TABLE ivm_sec.secret (k int);
\c - regress_ivs_owner
SET search_path = ivs_own;
-- no SELECT: refused, whatever the mode
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('s1', 'SELECT k FROM ivm_sec.secret', 'full')$$);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('s1', 'SELECT k FROM ivm_sec.secret')$$);
\c - :su
GRANT SELECT ON ivm_sec.shared TO regress_ivs_owner;
\c - regress_ivs_owner
SET search_path = ivs_own;
-- SELECT is enough for a full view (it adds no triggers it may not add:
-- its pending changes are unknown)
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('shared_full', 'SELECT k, v FROM ivm_sec.shared', 'full')$$);
SELECT name, refresh, pending_changes, is_stale FROM ep.incremental_views WHERE name = 'shared_full';
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'ivm_sec.shared'::regclass;
-- immediate and deferred views need TRIGGER on every base table
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('shared_imm', 'SELECT k, v FROM ivm_sec.shared')$$);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('shared_def', 'SELECT k, v FROM ivm_sec.shared', 'deferred')$$);
-- ... ep.events included: nobody but the extension owner has it by default
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('ev_imm', 'SELECT stream_id, count(*) AS n FROM ep.events GROUP BY stream_id')$$);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('ev_def', 'SELECT stream_id, count(*) AS n FROM ep.events GROUP BY stream_id', 'deferred')$$);
SELECT count(*) AS views FROM ep.incremental_views WHERE name IN ('shared_imm', 'shared_def', 'ev_imm', 'ev_def');
\c - :su
GRANT TRIGGER ON ep.events TO regress_ivs_owner;
\c - regress_ivs_owner
SET search_path = ivs_own;
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('ev_imm', 'SELECT stream_id, count(*) AS n FROM ep.events WHERE stream_id LIKE ''sec-%'' GROUP BY stream_id')$$);
\c - regress_ivs_mallory
SELECT ep.append('sec-1', 'Opened', '{}');
SELECT ep.append('sec-1', 'Closed', '{}');
\c - regress_ivs_owner
SELECT * FROM ivs_own.ev_imm;
SELECT ivm_sec.diff('ivs_own.ev_imm');
SELECT ep.drop_incremental_view('ivs_own.ev_imm');
\c - :su
REVOKE TRIGGER ON ep.events FROM regress_ivs_owner;

-- temporary views and views over temporary tables are refused
\c - regress_ivs_owner
SET search_path = ivs_own;
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('pg_temp.tv', 'SELECT k FROM ivs_own.t')$$);
CREATE TEMP TABLE tmp (k int);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('tv', 'SELECT k FROM tmp')$$);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('tv', 'SELECT k FROM tmp', 'full')$$);
SELECT count(*) AS views FROM ep.incremental_views WHERE name IN ('pg_temp.tv', 'tv');

-- row-level security: an immediate or deferred view would deliver rows the
-- table's policies hide from its owner; refused unless the owner bypasses
-- them (a full view runs the query as its owner, policies applied)
\c - regress_ivs_owner
SET search_path = ivs_own;
CREATE TABLE rls (k int, who name);
INSERT INTO rls VALUES (1, 'regress_ivs_owner'), (2, 'someone_else');
ALTER TABLE rls ENABLE ROW LEVEL SECURITY;
ALTER TABLE rls FORCE ROW LEVEL SECURITY;
CREATE POLICY mine ON rls USING (who = current_user);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('rls_imm', 'SELECT k FROM rls')$$);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('rls_def', 'SELECT k FROM rls', 'deferred')$$);
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('rls_full', 'SELECT k FROM rls', 'full')$$);
SELECT * FROM rls_full;
SELECT ivm_sec.diff('ivs_own.rls_full');
\c - :su
-- a superuser bypasses the policies
SELECT * FROM ivm_sec.try($$SELECT ep.create_incremental_view('ivm_sec.rls_imm', 'SELECT k FROM ivs_own.rls')$$);
SELECT * FROM ivm_sec.rls_imm ORDER BY k;
SELECT ep.drop_incremental_view('ivm_sec.rls_imm');

-- 4. Maintenance runs under the time limit (event_patterns.handler_timeout
-- or the view's own handler_timeout).
\c - regress_ivs_owner
SET search_path = ivs_own;
CREATE TABLE slow (k int);
CREATE FUNCTION snail(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM pg_sleep(2);
    RETURN x;
END $$;
SELECT ep.create_incremental_view('slow_v', 'SELECT snail(k) AS k FROM slow');
GRANT INSERT ON slow TO regress_ivs_mallory;
\c - :su
SET event_patterns.handler_timeout = 100;
DO $$
BEGIN
    INSERT INTO ivs_own.slow VALUES (1);
    RAISE WARNING 'no time limit';
EXCEPTION WHEN query_canceled THEN
    DECLARE ctx text;
    BEGIN
        GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT;
        RAISE WARNING 'cancelled with SQLSTATE %: %', SQLSTATE,
            substring(ctx FROM 'incremental view "[^"]*" exceeded its time limit of [0-9]+ ms');
    END;
END
$$;
RESET event_patterns.handler_timeout;
SELECT count(*) FROM ivs_own.slow;

-- cleanup
\c - regress_ivs_owner
SELECT ep.drop_incremental_view(name)
  FROM (SELECT name FROM ep.incremental_views WHERE name NOT LIKE 'ivm_sec.%' ORDER BY name) v;
\c - :su
SET client_min_messages = warning;
DROP SCHEMA ivs_own CASCADE;
DROP SCHEMA ivs_evil CASCADE;
DROP SCHEMA ivm_sec CASCADE;
DROP ROLE regress_ivs_owner;
DROP ROLE regress_ivs_mallory;
