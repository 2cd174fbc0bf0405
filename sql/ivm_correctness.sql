-- Incremental views that must never be silently wrong (issue 13): every
-- story ends by comparing each view with its query (EXCEPT ALL both ways),
-- or shows the clear error that refuses what cannot be maintained.
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
SELECT current_user AS su \gset
CREATE ROLE regress_ivc_owner LOGIN;
CREATE ROLE regress_ivc_writer LOGIN;
CREATE ROLE regress_ivc_bypass LOGIN BYPASSRLS;
CREATE SCHEMA ivc AUTHORIZATION regress_ivc_owner;
GRANT USAGE ON SCHEMA ivc TO PUBLIC;
-- try(statement): SQLSTATE, message, detail and hint of its error, or ok
CREATE FUNCTION ivc.try(q text) RETURNS TABLE (state text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN QUERY SELECT 'ok', NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT SQLSTATE, message, nullif(detail, ''), nullif(hint, '');
END $$;
-- rows differing between a view and its query (EXCEPT ALL both ways)
CREATE FUNCTION ivc.diff(v text) RETURNS bigint LANGUAGE sql AS $$ SELECT public.ivm_diff(v) $$;
GRANT EXECUTE ON FUNCTION ivc.try(text), ivc.diff(text) TO PUBLIC;

\c - regress_ivc_owner
SET search_path = ivc;

-- 1. Row-level security: a view whose owner bypasses the policies holds
-- every row, whoever writes (each writer sees only their own rows).
CREATE TABLE notes (id int, author name, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON notes USING (author = current_user) WITH CHECK (author = current_user);
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO regress_ivc_writer;
INSERT INTO notes VALUES (1, 'regress_ivc_owner', 'a'), (2, 'someone', 'b');
-- the table's owner is not subject to its policies (no FORCE)
SELECT ep.create_incremental_view('notes_all', 'SELECT author, count(*) AS n FROM notes GROUP BY author');
-- a role with BYPASSRLS neither
GRANT SELECT, TRIGGER ON notes TO regress_ivc_bypass;
GRANT CREATE ON SCHEMA ivc TO regress_ivc_bypass;
\c - regress_ivc_bypass
SELECT ep.create_incremental_view('ivc.notes_rows', 'SELECT id, body FROM ivc.notes', 'deferred');
\c - regress_ivc_writer
INSERT INTO ivc.notes VALUES (3, 'regress_ivc_writer', 'c'), (4, 'regress_ivc_writer', 'd');
UPDATE ivc.notes SET body = 'dd' WHERE id = 4;
DELETE FROM ivc.notes WHERE id = 3;
SELECT count(*) AS writer_sees FROM ivc.notes;
\c - regress_ivc_owner
SET search_path = ivc;
SELECT * FROM notes_all ORDER BY author;
SELECT diff('notes_all') AS notes_all;
\c - regress_ivc_bypass
SELECT ep.refresh_view('ivc.notes_rows');
SELECT * FROM ivc.notes_rows ORDER BY id;
SELECT ivc.diff('ivc.notes_rows') AS notes_rows;
\c - regress_ivc_owner
SET search_path = ivc;

-- 2. A row trigger that writes its own table: the nested statement's
-- maintenance runs inside the outer statement, before the outer one's.
CREATE TABLE t (i int);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ivc.t SET i = i + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER bump AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION bump();
SELECT ep.create_incremental_view('t_plain', 'SELECT i FROM t');
SELECT ep.create_incremental_view('t_distinct', 'SELECT DISTINCT i % 3 AS r FROM t');
SELECT ep.create_incremental_view('t_group', 'SELECT i % 2 AS g, count(*) AS n, sum(i) AS s FROM t GROUP BY i % 2');
SELECT ep.create_incremental_view('t_minmax', 'SELECT min(i) AS lo, max(i) AS hi, count(*) AS n FROM t');
SELECT ep.create_incremental_view('t_group_minmax', 'SELECT i % 2 AS g, min(i) AS lo, max(i) AS hi FROM t GROUP BY i % 2');
SELECT ep.create_incremental_view('t_def_minmax', 'SELECT min(i) AS lo, max(i) AS hi FROM t', 'deferred');
INSERT INTO t VALUES (1);
SELECT * FROM t;
SELECT * FROM t_plain;
INSERT INTO t VALUES (10), (20);
BEGIN;
INSERT INTO t VALUES (5);
SAVEPOINT s;
INSERT INTO t VALUES (7);
ROLLBACK TO s;
INSERT INTO t SELECT g FROM generate_series(1, 3) g;
COMMIT;
DELETE FROM t WHERE i > 40;
SELECT ep.refresh_view('t_def_minmax');
SELECT diff('t_plain') AS plain, diff('t_distinct') AS dist, diff('t_group') AS grp,
       diff('t_minmax') AS minmax, diff('t_group_minmax') AS group_minmax,
       diff('t_def_minmax') AS def_minmax;
SELECT * FROM t_minmax;
-- a join view over the table: the nested statement on the same table
CREATE TABLE labels (r int, label text);
INSERT INTO labels VALUES (0, 'zero'), (1, 'one'), (2, 'two');
SELECT ep.create_incremental_view('t_join', 'SELECT l.label, count(*) AS n, max(t.i) AS hi FROM t JOIN labels l ON l.r = t.i % 3 GROUP BY l.label');
INSERT INTO t VALUES (100);
SELECT diff('t_join') AS joined;
DROP TRIGGER bump ON t;
-- the events of one statement (INSERT ... ON CONFLICT, MERGE) and COPY, with
-- a trigger that writes the table from within, and without
CREATE TABLE u (k int PRIMARY KEY, v int);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.v > 100 THEN
        UPDATE ivc.u SET v = v - 100 WHERE k = NEW.k;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER touch AFTER INSERT OR UPDATE ON u FOR EACH ROW EXECUTE FUNCTION touch();
SELECT ep.create_incremental_view('u_rows', 'SELECT k, v FROM u');
SELECT ep.create_incremental_view('u_agg', 'SELECT k % 2 AS p, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM u GROUP BY k % 2');
INSERT INTO u SELECT g, g * 10 FROM generate_series(1, 20) g;
INSERT INTO u VALUES (1, 5), (2, 500), (30, 30) ON CONFLICT (k) DO UPDATE SET v = excluded.v;
COPY u FROM stdin;
40	400
41	41
\.
MERGE INTO u USING (VALUES (3, 7), (50, 150), (4, NULL)) AS s(k, v) ON u.k = s.k
 WHEN MATCHED AND s.v IS NULL THEN DELETE
 WHEN MATCHED THEN UPDATE SET v = s.v
 WHEN NOT MATCHED THEN INSERT VALUES (s.k, s.v);
DROP TRIGGER touch ON u;
INSERT INTO u VALUES (5, 1), (60, 60) ON CONFLICT (k) DO UPDATE SET v = excluded.v;
SELECT count(*) AS rows, sum(v) AS total, max(v) AS hi FROM u;
SELECT diff('u_rows') AS u_rows, diff('u_agg') AS u_agg;

-- 3. Deferred min/max whose stored extreme is NULL (an empty table
-- without GROUP BY, or a group whose values are all NULL).
CREATE TABLE e (g int, v int);
SELECT ep.create_incremental_view('e_all', 'SELECT min(v) AS lo, max(v) AS hi FROM e', 'deferred');
SELECT ep.create_incremental_view('e_grp', 'SELECT g, min(v) AS lo, max(v) AS hi FROM e GROUP BY g', 'deferred');
INSERT INTO e VALUES (1, NULL);
SELECT ep.refresh_view('e_all'), ep.refresh_view('e_grp');
INSERT INTO e VALUES (1, 1), (2, 1);
DELETE FROM e WHERE v IS NOT NULL;
INSERT INTO e VALUES (1, 3), (2, 3);
SELECT ep.refresh_view('e_all'), ep.refresh_view('e_grp');
SELECT * FROM e_all;
SELECT * FROM e_grp ORDER BY g;
SELECT diff('e_all') AS e_all, diff('e_grp') AS e_grp;

-- 4. Only maintenance writes a view's storage: writes through the view or
-- to its storage table are refused (55000), maintenance and refresh work.
CREATE TABLE w (k int, x int);
INSERT INTO w VALUES (1, 10), (2, 20);
SELECT ep.create_incremental_view('w_sum', 'SELECT k, sum(x) AS total FROM w GROUP BY k');
SELECT ep.create_incremental_view('w_dist', 'SELECT DISTINCT k FROM w', 'deferred');
SELECT ep.create_incremental_view('w_rows', 'SELECT k, x FROM w');
SELECT * FROM try('UPDATE ivc.w_sum SET total = 0');
SELECT * FROM try('DELETE FROM ivc.w_sum');
SELECT * FROM try('INSERT INTO ivc.w_sum VALUES (9, 9)');
SELECT * FROM try('UPDATE ivc.w_sum SET total = 0 WHERE false');
SELECT * FROM try('DELETE FROM ivc.w_dist');
SELECT * FROM try('UPDATE ivc.w_rows SET x = 0');
SELECT * FROM try('UPDATE ivc.w_sum__ivm_data SET total = 0');
SELECT * FROM try('INSERT INTO ivc.w_dist__ivm_data (k, __ep_count) VALUES (9, 1)');
SELECT * FROM try('DELETE FROM ivc.w_rows__ivm_data');
SELECT * FROM try('TRUNCATE ivc.w_rows__ivm_data');
INSERT INTO w VALUES (3, 30);
UPDATE w SET x = x + 1;
TRUNCATE w;
INSERT INTO w VALUES (4, 40);
SELECT ep.refresh_view('w_dist'), ep.refresh_view('w_sum', true);
SELECT diff('w_sum') AS w_sum, diff('w_dist') AS w_dist, diff('w_rows') AS w_rows;
SELECT * FROM w_sum;

-- 5. Creating an immediate or deferred view in a REPEATABLE READ or
-- SERIALIZABLE transaction is refused: its snapshot may miss rows others
-- committed (test/isolation/specs/ivm_snapshot.spec).
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM try($$SELECT ep.create_incremental_view('rr_v', 'SELECT k FROM w')$$);
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM try($$SELECT ep.create_incremental_view('rr_v', 'SELECT k FROM w', 'deferred')$$);
-- a full view is recomputed from scratch on refresh: allowed
SELECT * FROM try($$SELECT ep.create_incremental_view('rr_full', 'SELECT k FROM w', 'full')$$);
ROLLBACK;

-- 6. System columns cannot be maintained: refused, naming the column.
SELECT * FROM try($$SELECT ep.create_incremental_view('sys1', 'SELECT k, xmin::text AS x FROM w')$$);
SELECT * FROM try($$SELECT ep.create_incremental_view('sys2', 'SELECT k FROM w WHERE xmin::text <> ''0''')$$);
SELECT * FROM try($$SELECT ep.create_incremental_view('sys3', 'SELECT ctid AS c, count(*) AS n FROM w GROUP BY ctid', 'deferred')$$);
SELECT * FROM try($$SELECT ep.create_incremental_view('sys4', 'SELECT w.k FROM w JOIN labels l ON l.tableoid = w.tableoid')$$);
SELECT * FROM try($$SELECT ep.create_incremental_view('sys_full', 'SELECT k, xmin::text AS x FROM w', 'full')$$);
SELECT count(*) AS sys_full_rows FROM sys_full;

-- 7. An empty select list.
SELECT * FROM try($$SELECT ep.create_incremental_view('empty1', 'SELECT FROM w')$$);
SELECT * FROM try($$SELECT ep.create_incremental_view('empty2', 'SELECT FROM w GROUP BY k', 'deferred')$$);
SELECT * FROM try($$SELECT ep.create_incremental_view('empty3', 'SELECT FROM w', 'full')$$);
SELECT count(*) AS views FROM ep.incremental_views WHERE name LIKE 'sys%' OR name LIKE 'empty%' OR name LIKE 'rr%';

\c - :su
SET client_min_messages = warning;
DROP SCHEMA ivc CASCADE;
DROP OWNED BY regress_ivc_owner, regress_ivc_writer, regress_ivc_bypass;
DROP ROLE regress_ivc_owner;
DROP ROLE regress_ivc_writer;
DROP ROLE regress_ivc_bypass;
