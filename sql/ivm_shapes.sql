-- Shapes maintained by recompute-and-diff (src/ivm/ivm_recompute.c): WITH
-- (simple, nested, referenced twice), subqueries in FROM, EXISTS / NOT
-- EXISTS / IN (subquery), outer-join trees on different keys, functions in
-- FROM, no FROM, json / point / composite columns, UNION ALL, FILTER,
-- count(DISTINCT), string_agg, array_agg, bool_and, bool_or, jsonb_agg.
-- Every shape is created immediate, deferred and full by a role without
-- superuser rights, with unqualified names; after randomized changes
-- (rollbacks, savepoints, COPY, TRUNCATE, NULLs) each view is compared with
-- its query through EXCEPT ALL both ways, row by row as text (json has no
-- equality).
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
CREATE ROLE regress_ivsh_owner;
CREATE SCHEMA ivm_shapes AUTHORIZATION regress_ivsh_owner;
SET ROLE regress_ivsh_owner;
SET search_path = ivm_shapes;

CREATE TYPE pair AS (a int, b text);
CREATE TABLE r (i int, j int, v text, js json, p point, c pair);
CREATE TABLE s (i int, j int, w text);
CREATE TABLE t (j int, k int);
INSERT INTO r SELECT g % 5, g % 7, CASE WHEN g % 4 > 0 THEN 'v' || g % 3 END,
       json_build_object('g', g % 4), point(g % 3, 1), ROW(g % 2, 'b')::pair
  FROM generate_series(1, 20) g;
INSERT INTO s SELECT g % 6, g % 4, 'w' || g FROM generate_series(1, 10) g;
INSERT INTO t SELECT g % 4, g FROM generate_series(1, 6) g;

CREATE TABLE shapes (name text PRIMARY KEY, query text NOT NULL);
INSERT INTO shapes VALUES
 ('cte_simple', 'WITH x AS (SELECT i, j FROM r WHERE j > 0) SELECT i, j FROM x'),
 ('cte_nested', 'WITH x AS (SELECT i, j FROM r), y AS (SELECT x.i, s.w FROM x JOIN s ON s.i = x.i) SELECT i, w FROM y'),
 ('cte_twice', 'WITH x AS (SELECT i, j FROM r) SELECT a.i, b.j FROM x a JOIN x b ON a.i = b.j'),
 ('subquery', 'SELECT q.i, q.k, s.w FROM (SELECT i, j + 1 AS k FROM r WHERE v IS NOT NULL) q JOIN s ON s.i = q.i'),
 ('exists', 'SELECT i, j FROM r WHERE EXISTS (SELECT 1 FROM s WHERE s.i = r.i) AND j > 1'),
 ('not_exists', 'SELECT i, v FROM r WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.j = r.j)'),
 ('in_subquery', 'SELECT i, j FROM r WHERE i IN (SELECT j FROM t WHERE k > 2)'),
 ('not_in', 'SELECT i, j FROM r WHERE j NOT IN (SELECT j FROM s WHERE j IS NOT NULL) AND i > 0'),
 ('outer_tree', 'SELECT r.i, s.j, t.k FROM r LEFT JOIN s ON r.i = s.i LEFT JOIN t ON s.j = t.j'),
 ('outer_mixed', 'SELECT r.i, s.i AS si, t.k FROM r FULL JOIN s ON r.j = s.j RIGHT JOIN t ON s.i = t.j'),
 ('srf', 'SELECT r.i, g FROM r CROSS JOIN LATERAL generate_series(1, least(r.j, 3)) g'),
 ('series', 'SELECT s.w, g FROM generate_series(0, 3) g JOIN s ON s.j = g'),
 ('no_from', 'SELECT 1 AS one, ''x''::text AS two'),
 ('types', 'SELECT i, js, p, c FROM r'),
 ('union_all', 'SELECT i, j FROM r UNION ALL SELECT i, j FROM s WHERE w IS NOT NULL'),
 ('filter', 'SELECT i, count(*) FILTER (WHERE j > 2) AS big, sum(j) FILTER (WHERE v IS NOT NULL) AS sv FROM r GROUP BY i'),
 ('filter_max', 'SELECT i, max(j) FILTER (WHERE v = ''v1'') AS hi, count(*) AS n FROM r GROUP BY i'),
 ('count_distinct', 'SELECT i, count(DISTINCT j) AS dj, count(DISTINCT v) AS dv FROM r GROUP BY i'),
 ('string_agg', 'SELECT i, string_agg(v, '','' ORDER BY v, j) AS vs FROM r GROUP BY i'),
 ('array_agg', 'SELECT i, array_agg(j ORDER BY j) AS ja FROM r GROUP BY i'),
 ('bool_agg', 'SELECT j, bool_and(i > 0) AS a, bool_or(v = ''v1'') AS o FROM r GROUP BY j'),
 ('jsonb_agg', 'SELECT i, jsonb_agg(j ORDER BY j) AS ja FROM r GROUP BY i HAVING count(*) > 1'),
 ('no_group', 'SELECT count(DISTINCT j) AS n, string_agg(v, '','' ORDER BY v) AS vs, bool_or(j IS NULL) AS nulls FROM r');

CREATE FUNCTION try_create(name text, q text, m text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ep.create_incremental_view(name, q, m);
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END $$;
-- every shape is accepted in every mode
SELECT name, m, err
  FROM shapes, unnest(ARRAY['immediate', 'deferred', 'full']) m,
       try_create(name || '_' || left(m, 1), query, m) err
 WHERE err IS NOT NULL ORDER BY name, m;
SELECT refresh, strategy, count(*) FROM ep.ivm_views GROUP BY 1, 2 ORDER BY 1, 2;

CREATE FUNCTION ivm_diff(v text, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT x::text FROM %s x EXCEPT ALL SELECT y::text FROM (%s) y) d', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM (SELECT y::text FROM (%s) y EXCEPT ALL SELECT x::text FROM %s x) d', q, v) INTO b;
    RETURN a + b;
END $$;
-- views that differ from their query (deferred and full ones after a refresh)
CREATE FUNCTION wrong(modes text[]) RETURNS TABLE (name text, differing bigint) LANGUAGE sql AS $$
    SELECT name, d FROM (SELECT name, ivm_diff(name, query) d FROM ep.incremental_views
                          WHERE refresh = ANY (modes)) x
     WHERE d <> 0 ORDER BY name
$$;
CREATE FUNCTION refresh_all() RETURNS void LANGUAGE sql AS $$
    SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE refresh <> 'immediate'
$$;
CREATE TABLE failures (step int, name text, differing bigint);

-- randomized changes; immediate views are checked after every statement
CREATE FUNCTION mutate(steps int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE x float8;
BEGIN
    FOR n IN 1..steps LOOP
        x := random();
        IF n % 7 = 0 THEN
            BEGIN
                INSERT INTO r VALUES (1, 1, 'gone', '{"x": 1}', point(9, 9), ROW(9, 'z'));
                DELETE FROM s WHERE i = 2;
                UPDATE t SET k = k + 10;
                RAISE EXCEPTION 'roll back';
            EXCEPTION WHEN raise_exception THEN NULL;
            END;
        ELSIF x < 0.25 THEN
            INSERT INTO r SELECT (random() * 5)::int, CASE WHEN random() < 0.2 THEN NULL ELSE (random() * 6)::int END,
                   CASE WHEN random() < 0.3 THEN NULL ELSE 'v' || (random() * 3)::int END,
                   CASE WHEN random() < 0.2 THEN NULL ELSE json_build_object('g', (random() * 3)::int) END,
                   point((random() * 2)::int, 1), ROW((random() * 2)::int, NULL)::pair
              FROM generate_series(1, 1 + (random() * 3)::int);
        ELSIF x < 0.4 THEN
            UPDATE r SET j = CASE WHEN j IS NULL THEN 1 ELSE j + 1 END, js = json_build_object('h', j)
             WHERE i = (random() * 5)::int;
        ELSIF x < 0.5 THEN
            DELETE FROM r WHERE ctid IN (SELECT ctid FROM r ORDER BY random() LIMIT 2);
        ELSIF x < 0.6 THEN
            INSERT INTO s VALUES ((random() * 6)::int, CASE WHEN random() < 0.2 THEN NULL ELSE (random() * 4)::int END,
                                  CASE WHEN random() < 0.3 THEN NULL ELSE 'w' || n END);
        ELSIF x < 0.7 THEN
            UPDATE s SET j = (random() * 4)::int, i = i + 1 WHERE i = (random() * 6)::int;
        ELSIF x < 0.78 THEN
            DELETE FROM s WHERE i = (random() * 6)::int;
        ELSIF x < 0.88 THEN
            INSERT INTO t VALUES ((random() * 4)::int, (random() * 8)::int);
        ELSIF x < 0.95 THEN
            UPDATE t SET k = k - 1, j = (random() * 4)::int WHERE k > (random() * 8)::int;
        ELSE
            DELETE FROM t WHERE k < 3;
        END IF;
        INSERT INTO failures SELECT n, w.* FROM wrong(ARRAY['immediate']) w;
    END LOOP;
END $$;

SELECT setseed(0.13);
SELECT mutate(40);
SELECT * FROM failures;
SELECT refresh_all();
SELECT * FROM wrong(ARRAY['immediate', 'deferred', 'full']);

-- a rolled-back transaction and savepoints
BEGIN;
SELECT mutate(10);
ROLLBACK;
BEGIN;
DELETE FROM r WHERE i = 1;
SAVEPOINT a;
INSERT INTO r VALUES (1, NULL, NULL, NULL, NULL, NULL), (1, NULL, NULL, NULL, NULL, NULL);
UPDATE s SET i = 1 WHERE i = 3;
ROLLBACK TO SAVEPOINT a;
INSERT INTO t VALUES (1, 5), (1, 5);
SAVEPOINT b;
SELECT mutate(8);
RELEASE SAVEPOINT b;
SELECT * FROM wrong(ARRAY['immediate']);
COMMIT;
SELECT * FROM failures;
SELECT refresh_all();
SELECT * FROM wrong(ARRAY['immediate', 'deferred', 'full']);

-- COPY, then TRUNCATE of each table, with NULLs
COPY r FROM stdin;
3	\N	\N	\N	\N	\N
3	4	v1	{"a": [1, 2]}	(1,2)	(1,x)
3	4	v1	{"a": [1, 2]}	(1,2)	(1,x)
\N	\N	v2	[]	(0,0)	(,)
\.
COPY s FROM stdin;
3	4	w3
\N	\N	\N
\.
SELECT * FROM wrong(ARRAY['immediate']);
SELECT name, pending_changes FROM ep.incremental_views
 WHERE name IN ('types_d', 'union_all_d', 'no_from_d', 'types_f') ORDER BY name;
SELECT refresh_all();
SELECT * FROM wrong(ARRAY['immediate', 'deferred', 'full']);
TRUNCATE s;
SELECT * FROM wrong(ARRAY['immediate']);
SELECT mutate(15);
TRUNCATE t, r;
SELECT * FROM wrong(ARRAY['immediate']);
SELECT refresh_all();
SELECT * FROM wrong(ARRAY['immediate', 'deferred', 'full']);
SELECT mutate(40);
SELECT refresh_all();
SELECT * FROM wrong(ARRAY['immediate', 'deferred', 'full']);
SELECT * FROM failures;

-- duplicates are kept, json compares by its text, nothing unchanged is rewritten
SELECT * FROM no_from_i;
DELETE FROM r;
INSERT INTO r VALUES (7, 1, 'a', '{"k": 1}', NULL, NULL), (7, 1, 'a', '{"k": 1}', NULL, NULL),
                     (7, 1, 'a', '{"k":1}', NULL, NULL);
SELECT i, js::text, count(*) FROM types_i GROUP BY 1, 2 ORDER BY 2;
SELECT ctid AS before FROM types_i__ivm_data WHERE js::text = '{"k":1}' \gset
INSERT INTO r VALUES (8, 2, 'b', '[1]', NULL, NULL);
SELECT ctid = :'before' AS untouched FROM types_i__ivm_data WHERE js::text = '{"k":1}';
SELECT * FROM wrong(ARRAY['immediate']);

-- statements nested in statements: a row trigger writing its own table (t,
-- read only by recompute views), a writable CTE writing three base tables;
-- every maintenance recomputes from the current state, the last one after
-- the last change
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE t SET k = k + 1 WHERE j = NEW.j;
    RETURN NULL;
END $$;
CREATE TRIGGER bump AFTER INSERT ON t FOR EACH ROW WHEN (NEW.j = 3) EXECUTE FUNCTION bump();
INSERT INTO t VALUES (3, 1);
SELECT * FROM wrong(ARRAY['immediate']);
DROP TRIGGER bump ON t;
WITH x AS (INSERT INTO s VALUES (7, 1, 'cte') RETURNING i), y AS (DELETE FROM r WHERE i = 8 RETURNING i)
INSERT INTO t SELECT 1, 4 FROM x, y;
SELECT * FROM wrong(ARRAY['immediate']);
SELECT refresh_all();
SELECT * FROM wrong(ARRAY['immediate', 'deferred', 'full']);
-- a refresh without changes writes nothing
SELECT pending_changes FROM ep.incremental_views WHERE name = 'union_all_d';
SELECT ctid AS before FROM union_all_d__ivm_data ORDER BY ctid LIMIT 1 \gset
SELECT ep.refresh_view('union_all_d');
SELECT ctid = :'before' AS untouched FROM union_all_d__ivm_data ORDER BY ctid LIMIT 1;

-- immediate views grouping one table by visible columns recompute only the
-- groups a statement touched (those listed); key changes and NULL keys stay
-- exact, and other groups' rows stay where they are
SELECT name FROM ep.ivm_views WHERE kind = 'full' AND sql_recompute IS NOT NULL ORDER BY name;
INSERT INTO r VALUES (5, 1, 'p', NULL, NULL, NULL), (5, NULL, NULL, NULL, NULL, NULL);
SELECT ctid AS before FROM string_agg_i__ivm_data WHERE i = 7 \gset
UPDATE r SET v = 'x' || v WHERE i = 5;
UPDATE r SET i = NULL WHERE i = 5;
SELECT ctid = :'before' AS untouched FROM string_agg_i__ivm_data WHERE i = 7;
SELECT * FROM wrong(ARRAY['immediate']);
UPDATE r SET i = 5 WHERE i IS NULL;
SELECT * FROM wrong(ARRAY['immediate']);

-- a writer without rights on the storage maintains the view as its owner
RESET ROLE;
CREATE ROLE regress_ivsh_writer;
GRANT USAGE ON SCHEMA ivm_shapes TO regress_ivsh_writer;
GRANT SELECT, INSERT, DELETE ON ivm_shapes.r TO regress_ivsh_writer;
SET ROLE regress_ivsh_writer;
INSERT INTO ivm_shapes.r VALUES (9, 9, 'w', '{}', NULL, NULL);
DELETE FROM ivm_shapes.r WHERE i = 7;
SET ROLE regress_ivsh_owner;
SELECT * FROM wrong(ARRAY['immediate']);

-- the strategy is shown; shapes with deltas keep them
SELECT ep.create_incremental_view('plain_i', 'SELECT i, count(*) FROM r GROUP BY i');
SELECT name, refresh, strategy FROM ep.ivm_views
 WHERE name IN ('plain_i', 'exists_i', 'exists_d', 'exists_f', 'filter_i', 'filter_d', 'filter_max_i') ORDER BY name;

-- what stays refused: 0A000, naming the construct, hint 'full'
CREATE FUNCTION refusal(q text) RETURNS TABLE (state text, detail text, hint text) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ep.create_incremental_view('refused', q, 'immediate');
    state := 'created';
    RETURN NEXT;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $$;
\pset format unaligned
SELECT q, x.* FROM unnest(ARRAY[
  'WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE n < 3) SELECT n FROM x',
  'WITH x AS (SELECT i, row_number() OVER (ORDER BY j) rn FROM r) SELECT i FROM x',
  'SELECT q.i FROM (SELECT i FROM r ORDER BY i LIMIT 3) q',
  'WITH x AS (SELECT i FROM r) SELECT i FROM x ORDER BY i',
  'WITH x AS (SELECT i, random() AS z FROM r) SELECT i FROM x',
  'SELECT i FROM r WHERE j > 0 OR EXISTS (SELECT 1 FROM s WHERE s.i = r.i)',
  'SELECT i, (SELECT max(k) FROM t) FROM r',
  'SELECT i FROM r WHERE EXISTS (SELECT 1 FROM s WHERE s.i = r.i GROUP BY s.i)',
  'SELECT i FROM r INTERSECT SELECT i FROM s',
  'SELECT i FROM r UNION SELECT i FROM s',
  'SELECT v.x FROM (VALUES (1), (2)) v(x) JOIN r ON r.i = v.x',
  'SELECT i, sum(j) / 2 FROM (SELECT i, j FROM r) q GROUP BY i',
  'SELECT i, stddev(j) FILTER (WHERE j > 0) FROM r GROUP BY i',
  'WITH x AS (SELECT i, xmin FROM r) SELECT i FROM x',
  'SELECT viewname FROM pg_catalog.pg_views WHERE EXISTS (SELECT 1 FROM s)',
  'SELECT g FROM generate_series(1, 3) g, LATERAL (SELECT now()) n'
]) q, refusal(q) x;
\pset format aligned

-- dropping works as for every view
SELECT ep.drop_incremental_view('exists_i');
DROP VIEW exists_d;
SELECT count(*) FROM ep.incremental_views WHERE name LIKE 'exists%';

RESET ROLE;
RESET search_path;
DROP SCHEMA ivm_shapes CASCADE;
DROP ROLE regress_ivsh_writer;
DROP ROLE regress_ivsh_owner;
