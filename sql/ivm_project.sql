-- Incremental views without aggregates: select/project/filter with
-- duplicates, DISTINCT, inner joins and self-joins, maintained immediately.
-- Each is compared with its query through EXCEPT ALL both ways after
-- randomized mixes of changes with rollbacks, savepoints, COPY, TRUNCATE.
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
CREATE SCHEMA ivm_prj;
SET search_path = ivm_prj, public;

CREATE FUNCTION ivm_diff(v text, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $$;
CREATE FUNCTION check_all() RETURNS TABLE (name text, differing bigint) LANGUAGE sql AS $$
    SELECT name, ivm_diff(name, query) FROM ep.incremental_views
     WHERE name LIKE 'ivm_prj.%' ORDER BY name
$$;

CREATE TABLE customers (id int PRIMARY KEY, region text, tier int);
CREATE TABLE orders (id serial PRIMARY KEY, customer int, product text, qty int);
CREATE TABLE products (code text, label text, weight int);

CREATE FUNCTION mutate(steps int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r float8;
BEGIN
    FOR i IN 1..steps LOOP
        r := random();
        IF i % 6 = 0 THEN
            BEGIN
                INSERT INTO orders (customer, product, qty) VALUES (1, 'p1', 1), (2, 'p2', 2);
                UPDATE customers SET region = 'zz' WHERE id IN (SELECT id FROM customers ORDER BY id LIMIT 2);
                DELETE FROM products WHERE code = 'p1';
                RAISE EXCEPTION 'roll back';
            EXCEPTION WHEN raise_exception THEN NULL;
            END;
        ELSIF r < 0.3 THEN
            INSERT INTO orders (customer, product, qty)
            SELECT (random() * 12)::int, 'p' || (random() * 5)::int,
                   CASE WHEN random() < 0.2 THEN NULL ELSE (random() * 3)::int END
              FROM generate_series(1, 1 + (random() * 3)::int);
        ELSIF r < 0.45 THEN
            UPDATE orders SET qty = CASE WHEN random() < 0.2 THEN NULL ELSE (random() * 3)::int END,
                              product = 'p' || (random() * 5)::int
             WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 3);
        ELSIF r < 0.55 THEN
            DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 2);
        ELSIF r < 0.7 THEN
            UPDATE customers SET region = CASE WHEN random() < 0.2 THEN NULL ELSE 'r' || (random() * 3)::int END,
                                 tier = (random() * 2)::int
             WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT 2);
        ELSIF r < 0.8 THEN
            INSERT INTO products VALUES ('p' || (random() * 5)::int, 'label', (random() * 3)::int);
        ELSIF r < 0.9 THEN
            DELETE FROM products WHERE ctid IN (SELECT ctid FROM products ORDER BY random() LIMIT 1);
        ELSE
            -- one statement changing both sides of a self-join
            UPDATE orders SET customer = (random() * 12)::int
             WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 4);
        END IF;
    END LOOP;
END $$;

INSERT INTO customers SELECT g, 'r' || (g % 3), g % 2 FROM generate_series(1, 10) g;
INSERT INTO products SELECT 'p' || g, 'label ' || g, g % 3 FROM generate_series(0, 5) g;
SELECT setseed(0.17);
SELECT mutate(20);

SELECT ep.create_incremental_view('ivm_prj.big_orders',
    'SELECT customer, qty FROM orders WHERE qty >= 1');
SELECT ep.create_incremental_view('ivm_prj.regions',
    'SELECT DISTINCT region FROM customers');
SELECT ep.create_incremental_view('ivm_prj.order_lines',
    'SELECT o.id, c.region, p.label, o.qty * p.weight AS load
       FROM orders o JOIN customers c ON c.id = o.customer
       JOIN products p ON p.code = o.product WHERE c.tier = 1');
SELECT ep.create_incremental_view('ivm_prj.same_customer',
    'SELECT a.product AS first, b.product AS second
       FROM orders a, orders b WHERE a.customer = b.customer AND a.id < b.id');
SELECT ep.create_incremental_view('ivm_prj.region_products',
    'SELECT DISTINCT c.region, o.product FROM orders o JOIN customers c USING (id)');
SELECT ep.create_incremental_view('ivm_prj.region_totals',
    'SELECT c.region, count(*) AS n, sum(o.qty) AS qty, max(o.product) AS last_product
       FROM orders o JOIN customers c ON c.id = o.customer GROUP BY c.region');
SELECT * FROM check_all();

SELECT mutate(120);
SELECT * FROM check_all();
-- the views are not trivially empty
SELECT (SELECT count(*) FROM big_orders) > 20 AS big_orders,
       (SELECT count(*) FROM order_lines) > 5 AS order_lines,
       (SELECT count(*) FROM same_customer) > 20 AS same_customer,
       (SELECT count(*) FROM region_totals) > 2 AS region_totals;

BEGIN;
INSERT INTO orders (customer, product, qty) VALUES (3, 'p3', 2), (3, 'p3', 2);
SAVEPOINT a;
DELETE FROM customers WHERE id = 3;
SELECT * FROM check_all() WHERE differing > 0;
ROLLBACK TO SAVEPOINT a;
UPDATE products SET weight = weight + 1 WHERE code = 'p3';
COMMIT;
SELECT * FROM check_all();

COPY orders (customer, product, qty) FROM STDIN;
1	p1	1
1	p1	1
\N	p2	\N
\.
COPY customers FROM STDIN;
11	\N	1
12	r9	1
\.
SELECT * FROM check_all();

TRUNCATE products;
SELECT * FROM check_all();
SELECT mutate(60);
SELECT * FROM check_all();
TRUNCATE orders, customers;
SELECT count(*) FROM big_orders;
SELECT * FROM check_all();

-- other shapes are refused for immediate/deferred
\set VERBOSITY default
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT o.id FROM orders o LEFT JOIN customers c ON c.tier = 1');
-- no deltas for this shape: maintained by recompute-and-diff (sql/ivm_shapes)
SELECT strategy FROM ep.ivm_views WHERE name = 'ivm_prj.bad';
SELECT ep.drop_incremental_view('ivm_prj.bad');
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT id FROM orders ORDER BY id LIMIT 3');
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT id, now() AS t FROM orders');
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT id FROM orders WHERE customer IN (SELECT id FROM customers)');
-- no deltas for this shape: maintained by recompute-and-diff (sql/ivm_shapes)
SELECT strategy FROM ep.ivm_views WHERE name = 'ivm_prj.bad';
SELECT ep.drop_incremental_view('ivm_prj.bad');
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT id FROM orders UNION SELECT id FROM customers');
-- (an incremental view is a base relation: sql/ivm_nested; a plain view is not)
CREATE VIEW plain_orders AS SELECT * FROM orders;
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT * FROM plain_orders');
DROP VIEW plain_orders;
CREATE TABLE parted (k int) PARTITION BY RANGE (k);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10);
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT k FROM parted');
SELECT ep.create_incremental_view('ivm_prj.bad', 'SELECT k FROM parted_1');
\set VERBOSITY terse

-- One statement that changes several base tables of an immediate join view
-- (cascading foreign keys, writable CTEs, user triggers, an upsert on a
-- self-joined table): deltas computed against a half-changed state would be
-- wrong, so the view's last statement in flight recomputes it.
CREATE TABLE parent (id int PRIMARY KEY, label text);
CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent ON DELETE CASCADE ON UPDATE CASCADE, v int);
INSERT INTO parent VALUES (1,'a'),(2,'b'),(3,'c');
INSERT INTO child VALUES (10,1,5),(11,1,6),(12,2,7),(13,3,8);
SELECT ep.create_incremental_view('ivm_prj.fk_j', 'SELECT p.label, c.v FROM parent p JOIN child c ON c.parent = p.id');
SELECT ep.create_incremental_view('ivm_prj.fk_jd', 'SELECT p.label, c.v FROM parent p JOIN child c ON c.parent = p.id', 'deferred');
SELECT ep.create_incremental_view('ivm_prj.fk_ja', 'SELECT p.label, count(*) AS n, sum(c.v) AS s FROM parent p JOIN child c ON c.parent = p.id GROUP BY p.label');
CREATE TABLE pairs (a int, b int, UNIQUE (a));
INSERT INTO pairs VALUES (1,2),(2,3),(3,1);
SELECT ep.create_incremental_view('ivm_prj.pairs_sj', 'SELECT x.a, y.b FROM pairs x JOIN pairs y ON y.a = x.b');
CREATE FUNCTION overlap_diff() RETURNS TABLE (view text, differing bigint) LANGUAGE sql AS $$
  SELECT 'fk_j', count(*) FROM ((SELECT * FROM ivm_prj.fk_j EXCEPT ALL SELECT p.label, c.v FROM parent p JOIN child c ON c.parent = p.id)
    UNION ALL (SELECT p.label, c.v FROM parent p JOIN child c ON c.parent = p.id EXCEPT ALL SELECT * FROM ivm_prj.fk_j)) d
  UNION ALL
  SELECT 'fk_ja', count(*) FROM ((SELECT * FROM ivm_prj.fk_ja EXCEPT ALL SELECT p.label, count(*), sum(c.v) FROM parent p JOIN child c ON c.parent = p.id GROUP BY p.label)
    UNION ALL (SELECT p.label, count(*), sum(c.v) FROM parent p JOIN child c ON c.parent = p.id GROUP BY p.label EXCEPT ALL SELECT * FROM ivm_prj.fk_ja)) d
  UNION ALL
  SELECT 'pairs_sj', count(*) FROM ((SELECT * FROM ivm_prj.pairs_sj EXCEPT ALL SELECT x.a, y.b FROM pairs x JOIN pairs y ON y.a = x.b)
    UNION ALL (SELECT x.a, y.b FROM pairs x JOIN pairs y ON y.a = x.b EXCEPT ALL SELECT * FROM ivm_prj.pairs_sj)) d
$$;
-- cascade delete
DELETE FROM parent WHERE id = 1;
SELECT * FROM overlap_diff();
-- cascade update of key
UPDATE parent SET id = 20 WHERE id = 2;
SELECT * FROM overlap_diff();
-- writable CTE writing both
WITH np AS (INSERT INTO parent VALUES (4, 'd') RETURNING id)
INSERT INTO child SELECT 40, id, 9 FROM np;
SELECT * FROM overlap_diff();
WITH u AS (UPDATE parent SET label = 'cc' WHERE id = 3)
UPDATE child SET v = v + 100 WHERE parent = 3;
SELECT * FROM overlap_diff();
-- user trigger writing the other table
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE ivm_prj.parent SET label = label || '!' WHERE id = NEW.parent; RETURN NEW; END $$;
CREATE TRIGGER bump AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION bump();
INSERT INTO child VALUES (41, 4, 1), (42, 3, 2);
SELECT * FROM overlap_diff();
CREATE FUNCTION bump2() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ivm_prj.child VALUES (NEW.id * 100, NEW.id, 1); RETURN NEW; END $$;
CREATE TRIGGER bump2 AFTER INSERT ON parent FOR EACH ROW EXECUTE FUNCTION bump2();
INSERT INTO parent VALUES (5, 'e'), (6, 'f');
SELECT * FROM overlap_diff();
-- self join upsert (insert + update in one statement)
INSERT INTO pairs VALUES (1, 3), (4, 1) ON CONFLICT (a) DO UPDATE SET b = excluded.b;
SELECT * FROM overlap_diff();
-- savepoints: overlapping statement rolled back
BEGIN;
SAVEPOINT s;
WITH np AS (INSERT INTO parent VALUES (7, 'g') RETURNING id) INSERT INTO child SELECT 70, id, 9 FROM np;
ROLLBACK TO SAVEPOINT s;
UPDATE child SET v = v + 1;
SELECT * FROM overlap_diff();
COMMIT;
SELECT * FROM overlap_diff();
-- exception block swallowing a failed overlapping write
DO $$ BEGIN
  WITH np AS (INSERT INTO ivm_prj.parent VALUES (8, 'h') RETURNING id) INSERT INTO ivm_prj.child SELECT 80, id, 1/0 FROM np;
EXCEPTION WHEN division_by_zero THEN NULL; END $$;
UPDATE parent SET label = label || '?' WHERE id = 3;
SELECT * FROM overlap_diff();
-- ... and one that succeeds inside the block's subtransaction
DO $$ BEGIN
  WITH np AS (INSERT INTO ivm_prj.parent VALUES (9, 'i') RETURNING id) INSERT INTO ivm_prj.child SELECT 90, id, 3 FROM np;
EXCEPTION WHEN division_by_zero THEN NULL; END $$;
SELECT * FROM overlap_diff();
-- a nested statement on the same table that is rolled back (exception
-- block) must not take the outer statement's place in flight
DROP TRIGGER bump ON child;
CREATE FUNCTION nested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    INSERT INTO ivm_prj.child SELECT 1, 1, 1 WHERE false;
    RAISE EXCEPTION 'boom';
  EXCEPTION WHEN raise_exception THEN NULL;
  END;
  UPDATE ivm_prj.parent SET label = label || 'x' WHERE id = NEW.parent;
  RETURN NEW;
END $$;
CREATE TRIGGER nested AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION nested();
INSERT INTO child VALUES (55, 3, 10);
SELECT * FROM overlap_diff();
DROP TRIGGER nested ON child;
-- only the view's own triggers may note statements in flight
CREATE TABLE mine (x int);
DO $$ BEGIN
  EXECUTE format('CREATE TRIGGER fake BEFORE INSERT ON ivm_prj.mine FOR EACH STATEMENT EXECUTE FUNCTION ep._ivm_before(%L, ''1'', ''1'')',
                 (SELECT view_id FROM ep.ivm_views WHERE name = 'ivm_prj.fk_j'));
  INSERT INTO ivm_prj.mine VALUES (1);
EXCEPTION WHEN trigger_protocol_violated THEN RAISE WARNING 'refused: %', SQLSTATE;
END $$;
DROP TABLE mine;
-- a deferred view applies the same changes in one batch
SELECT ep.refresh_view('ivm_prj.fk_jd');
SELECT count(*) AS differing FROM (
  (SELECT * FROM ivm_prj.fk_jd EXCEPT ALL SELECT p.label, c.v FROM parent p JOIN child c ON c.parent = p.id)
  UNION ALL
  (SELECT p.label, c.v FROM parent p JOIN child c ON c.parent = p.id EXCEPT ALL SELECT * FROM ivm_prj.fk_jd)) d;
TRUNCATE parent CASCADE;
SELECT * FROM overlap_diff();

-- a view's cached maintenance plans are freed when its cached state is
-- reloaded (here: each GRANT invalidates the storage table)
CREATE TABLE leak (k int, v int);
SELECT ep.create_incremental_view('ivm_prj.leak_v', 'SELECT k, sum(v) AS s FROM leak GROUP BY k');
INSERT INTO leak VALUES (1, 1);
SELECT count(*) AS plans_before FROM pg_backend_memory_contexts WHERE ident LIKE '%leak_v__ivm_data%';
DO $$ BEGIN FOR i IN 1..10 LOOP
  GRANT SELECT ON ivm_prj.leak_v__ivm_data TO PUBLIC;
  REVOKE SELECT ON ivm_prj.leak_v__ivm_data FROM PUBLIC;
  INSERT INTO ivm_prj.leak VALUES (i, i);
END LOOP; END $$;
SELECT count(*) AS plans_after FROM pg_backend_memory_contexts WHERE ident LIKE '%leak_v__ivm_data%';
SELECT count(*) AS differing FROM (
  (SELECT * FROM ivm_prj.leak_v EXCEPT ALL SELECT k, sum(v) FROM leak GROUP BY k)
  UNION ALL
  (SELECT k, sum(v) FROM leak GROUP BY k EXCEPT ALL SELECT * FROM ivm_prj.leak_v)) d;

SELECT ep.drop_incremental_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_prj.%';
DROP SCHEMA ivm_prj CASCADE;
RESET search_path;
