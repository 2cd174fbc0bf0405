-- Immediate views of the simplest aggregate shape (plain columns, count,
-- sum, min, max, no WHERE, built-in types) apply most statements in C
-- (src/ivm/ivm_fast.c); a statement needing more (a new or vanishing
-- group, a lost extreme, a NULL key, REPEATABLE READ, RLS, a revoked
-- privilege, a trigger or expression index on the storage) runs the
-- generated SQL. Every step compares each view with its query, EXCEPT ALL
-- both ways.
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
CREATE SCHEMA ivf;
SET search_path = ivf, public;
CREATE FUNCTION diff(v text) RETURNS bigint LANGUAGE sql AS $$ SELECT public.ivm_diff(v) $$;
CREATE FUNCTION diffs() RETURNS TABLE (view_name text, differing bigint) LANGUAGE sql AS $$
    SELECT i.name, diff(i.view_rel::text) FROM ep.ivm_views i
     WHERE i.name LIKE 'ivf.%' ORDER BY i.name
$$;

CREATE TABLE sales (id int PRIMARY KEY, region text, shop int, qty int, amount numeric,
                    big bigint, note text, price numeric);
INSERT INTO sales
SELECT g, (ARRAY['north', 'south', 'east', 'west'])[g % 4 + 1], g % 7, g % 11,
       (g * 37) % 1000 / 10.0, g * 1000000000::bigint, 'note ' || (g % 13), (g % 3) + 0.5
  FROM generate_series(1, 400) g;
SELECT ep.create_incremental_view('ivf.by_region',
    'SELECT region, count(*) AS n, count(qty) AS n_qty, sum(qty) AS sq, sum(amount) AS sa,
            sum(big) AS sb, min(amount) AS lo, max(amount) AS hi, min(note) AS first_note,
            max(shop) AS top_shop
       FROM sales GROUP BY region');
SELECT ep.create_incremental_view('ivf.by_region_shop',
    'SELECT region, shop, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region, shop');
SELECT ep.create_incremental_view('ivf.by_price',
    'SELECT price, count(*) AS n, max(id) AS last_id FROM sales GROUP BY price');
-- shapes the fast path leaves to the generated SQL
SELECT ep.create_incremental_view('ivf.filtered',
    'SELECT region, count(*) AS n FROM sales WHERE qty > 2 GROUP BY region');
SELECT ep.create_incremental_view('ivf.averaged',
    'SELECT region, avg(qty) AS mean FROM sales GROUP BY region');
SELECT ep.create_incremental_view('ivf.lowered',
    'SELECT lower(region) AS r, count(*) AS n FROM sales GROUP BY lower(region)');
SELECT ep.create_incremental_view('ivf.counted_if',
    'SELECT region, count(*) FILTER (WHERE qty > 5) AS n FROM sales GROUP BY region');
SELECT ep.create_incremental_view('ivf.total',
    'SELECT count(*) AS n, sum(qty) AS sq FROM sales');
CREATE DOMAIN ivf.shop_no AS int CHECK (VALUE >= 0);
CREATE TYPE ivf.size AS ENUM ('s', 'm', 'l');
CREATE TABLE tagged (id int PRIMARY KEY, shop ivf.shop_no, size ivf.size, qty int);
INSERT INTO tagged SELECT g, g % 5, (ARRAY['s', 'm', 'l']::ivf.size[])[g % 3 + 1], g FROM generate_series(1, 30) g;
SELECT ep.create_incremental_view('ivf.by_domain',
    'SELECT shop, count(*) AS n, sum(qty) AS sq FROM tagged GROUP BY shop');
SELECT ep.create_incremental_view('ivf.by_enum',
    'SELECT size, count(*) AS n, max(qty) AS hi FROM tagged GROUP BY size');
SELECT name, fast_path IS NOT NULL AS fast FROM ep.ivm_views
 WHERE name LIKE 'ivf.%' ORDER BY name;

-- one-row changes inside a group, across groups, raising and lowering extremes
UPDATE sales SET amount = amount + 1 WHERE id = 5;
UPDATE sales SET qty = NULL, amount = NULL WHERE id = 6;
UPDATE sales SET region = 'east', shop = 2 WHERE id = 7;
UPDATE sales SET amount = 5000 WHERE id = 8;
UPDATE sales SET amount = 0 WHERE id = 8;
UPDATE sales SET note = 'a first note' WHERE id = 9;
UPDATE sales SET note = 'zzz' WHERE id = 9;
UPDATE sales SET price = 1.50 WHERE id = 10;
UPDATE sales SET price = 0.500 WHERE id = 11;
SELECT * FROM diffs();
-- several rows per statement (up to 16 in C, more through SQL)
UPDATE sales SET qty = qty + 1 WHERE id BETWEEN 20 AND 30;
UPDATE sales SET qty = qty - 1 WHERE id BETWEEN 20 AND 60;
DELETE FROM sales WHERE id IN (31, 32, 33);
INSERT INTO sales VALUES (401, 'north', 1, 2, 3.5, 4, 'n', 0.5), (402, 'south', 1, NULL, NULL, NULL, NULL, 2.5);
SELECT * FROM diffs();
-- a new group, a NULL group key, a group that empties
INSERT INTO sales VALUES (403, 'centre', 3, 1, 1, 1, 'c', 9.5);
UPDATE sales SET amount = 2 WHERE id = 403;
INSERT INTO sales VALUES (404, NULL, NULL, 1, 1, 1, NULL, NULL);
UPDATE sales SET qty = 2 WHERE id = 404;
DELETE FROM sales WHERE id = 403;
SELECT * FROM diffs();
-- every value of a group NULL: sums and extremes NULL, counts right
UPDATE sales SET qty = NULL, amount = NULL, big = NULL, note = NULL WHERE region = 'west';
SELECT * FROM diffs();
UPDATE sales SET amount = 7 WHERE id = (SELECT min(id) FROM sales WHERE region = 'west');
SELECT region, n, n_qty, sq, sa, lo, hi, first_note FROM by_region WHERE region = 'west';
SELECT * FROM diffs();
-- savepoints, rollbacks, INSERT ... ON CONFLICT, COPY, TRUNCATE
BEGIN;
UPDATE sales SET amount = amount + 100 WHERE id = 40;
SAVEPOINT a;
UPDATE sales SET amount = amount + 1000 WHERE id = 41;
UPDATE sales SET region = 'south' WHERE id = 42;
ROLLBACK TO a;
UPDATE sales SET amount = amount - 5 WHERE id = 43;
COMMIT;
BEGIN;
UPDATE sales SET amount = 99999 WHERE id = 44;
ROLLBACK;
INSERT INTO sales VALUES (45, 'north', 1, 1, 1, 1, 'x', 0.5), (405, 'east', 2, 2, 2, 2, 'y', 1.5)
ON CONFLICT (id) DO UPDATE SET amount = excluded.amount + 10, region = excluded.region;
COPY sales FROM stdin;
406	north	2	3	4.5	5	copy	0.5
407	south	\N	\N	\N	\N	\N	1.5
\.
SELECT * FROM diffs();
TRUNCATE sales;
INSERT INTO sales VALUES (1, 'north', 1, 1, 10, 1, 'a', 0.5), (2, 'north', 1, 2, 20, 2, 'b', 0.5);
UPDATE sales SET amount = 30 WHERE id = 1;
SELECT * FROM diffs();
INSERT INTO sales
SELECT g, (ARRAY['north', 'south', 'east', 'west'])[g % 4 + 1], g % 7, g % 11,
       (g * 37) % 1000 / 10.0, g, 'note ' || (g % 13), (g % 3) + 0.5
  FROM generate_series(3, 400) g;

-- randomized one-row changes, with NULLs and rolled-back subtransactions
SELECT setseed(0.42);
DO $$
DECLARE i int; k int;
BEGIN
    FOR i IN 1 .. 600 LOOP
        k := 1 + (random() * 420)::int;
        BEGIN
            CASE (random() * 5)::int
            WHEN 0 THEN
                INSERT INTO sales VALUES (k, (ARRAY['north', 'south', 'east', 'west', NULL])[1 + (random() * 4)::int],
                    (random() * 6)::int, CASE WHEN random() < 0.2 THEN NULL ELSE (random() * 10)::int END,
                    CASE WHEN random() < 0.2 THEN NULL ELSE round((random() * 1000)::numeric, 1) END,
                    (random() * 1e12)::bigint, 'r' || k, (random() * 3)::int + 0.5)
                ON CONFLICT (id) DO NOTHING;
            WHEN 1 THEN DELETE FROM sales WHERE id = k;
            WHEN 2 THEN UPDATE sales SET region = (ARRAY['north', 'south', 'east', 'west'])[1 + (random() * 3)::int] WHERE id = k;
            ELSE UPDATE sales SET amount = CASE WHEN random() < 0.1 THEN NULL ELSE round((random() * 1000)::numeric, 1) END,
                                  qty = (random() * 10)::int WHERE id = k;
            END CASE;
            IF random() < 0.1 THEN
                RAISE EXCEPTION 'roll back this one';
            END IF;
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
    END LOOP;
END $$;
SELECT * FROM diffs();

-- REPEATABLE READ writers go through the generated SQL
BEGIN ISOLATION LEVEL REPEATABLE READ;
UPDATE sales SET amount = 1 WHERE id = 100;
UPDATE sales SET amount = 2 WHERE id = 101;
COMMIT;
SELECT * FROM diffs();

-- an index of the owner's on the storage: kept current (updates that are
-- not HOT add entries to every index)
CREATE INDEX by_region_hi ON by_region__ivm_data (hi);
CREATE INDEX by_region_shop_total ON by_region_shop__ivm_data (total);
UPDATE sales SET amount = amount + 0.5 WHERE id BETWEEN 200 AND 215;
UPDATE sales SET amount = 7777 WHERE id = (SELECT min(id) FROM sales WHERE region = 'north');
SET enable_seqscan = off;
SELECT count(*) AS via_index FROM by_region_shop__ivm_data WHERE total > 0;
RESET enable_seqscan;
SELECT count(*) AS via_heap FROM by_region_shop__ivm_data WHERE total > 0;
SET enable_seqscan = off;
SELECT region FROM by_region WHERE hi = 7777;
RESET enable_seqscan;
SELECT * FROM diffs();
-- an expression index runs code: such storage takes the generated SQL
CREATE INDEX by_region_expr ON by_region__ivm_data ((n * 2));
UPDATE sales SET amount = 1 WHERE id = (SELECT max(id) FROM sales WHERE region IS NOT NULL);
SELECT * FROM diffs();
DROP INDEX by_region_expr, by_region_hi, by_region_shop_total;

-- a trigger on the storage sees every maintenance write
CREATE TABLE storage_log (n bigint);
CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ivf.storage_log VALUES (NEW.n);
    RETURN NEW;
END $$;
CREATE TRIGGER logged AFTER UPDATE ON by_region_shop__ivm_data FOR EACH ROW EXECUTE FUNCTION log_write();
UPDATE sales SET amount = amount + 1 WHERE id = (SELECT min(id) FROM sales WHERE region IS NOT NULL);
SELECT count(*) AS logged_writes FROM storage_log;
DROP TRIGGER logged ON by_region_shop__ivm_data;
SELECT * FROM diffs();

-- a view over this view: its storage carries the dependent's triggers
SELECT ep.create_incremental_view('ivf.regions_over',
    'SELECT count(*) AS regions, sum(n) AS rows_counted FROM ivf.by_region');
UPDATE sales SET qty = 3 WHERE id = (SELECT max(id) FROM sales WHERE region IS NOT NULL);
SELECT * FROM diffs();
SELECT regions_over.rows_counted = (SELECT count(*) FROM sales) AS current FROM regions_over;
SELECT ep.drop_incremental_view('ivf.regions_over');

-- a base table of another role: the fast path checks the view owner's
-- SELECT (the generated SQL reads only the transition tables), and leaves
-- a table with row-level security to the generated SQL
CREATE ROLE regress_ivf_owner LOGIN;
GRANT USAGE ON SCHEMA ivf TO regress_ivf_owner;
GRANT CREATE ON SCHEMA ivf TO regress_ivf_owner;
CREATE TABLE shared (id int PRIMARY KEY, grp int, v int);
INSERT INTO shared SELECT g, g % 3, g FROM generate_series(1, 30) g;
GRANT SELECT, TRIGGER ON shared TO regress_ivf_owner;
SET ROLE regress_ivf_owner;
SELECT ep.create_incremental_view('ivf.shared_sum', 'SELECT grp, count(*) AS n, sum(v) AS total FROM ivf.shared GROUP BY grp');
RESET ROLE;
SELECT fast_path IS NOT NULL AS fast FROM ep.ivm_views WHERE name = 'ivf.shared_sum';
UPDATE shared SET v = v + 1 WHERE id = 1;
REVOKE SELECT ON shared FROM regress_ivf_owner;
UPDATE shared SET v = v + 1 WHERE id = 2;
GRANT SELECT ON shared TO regress_ivf_owner;
UPDATE shared SET v = v + 1 WHERE id = 4;
-- row-level security on the base: the generated SQL applies the owner's view
ALTER TABLE shared ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_small ON shared USING (v < 20);
UPDATE shared SET v = v + 1 WHERE id = 3;
ALTER TABLE shared DISABLE ROW LEVEL SECURITY;
SELECT * FROM diffs();

-- (review) the owner's code never runs as the writer: an index on the
-- storage whose maintenance calls a function of the owner's (a range type's
-- subtype_diff in GiST) makes every statement take the generated SQL,
-- which runs it as the owner
CREATE TABLE who_ran (who text);
GRANT INSERT ON who_ran TO PUBLIC;
CREATE ROLE regress_ivf_writer LOGIN;
GRANT USAGE ON SCHEMA ivf TO regress_ivf_writer;
CREATE TABLE ranged (k int, v int);
INSERT INTO ranged SELECT g, g FROM generate_series(1, 2000) g;
GRANT SELECT, TRIGGER ON ranged TO regress_ivf_owner;
GRANT SELECT, INSERT, UPDATE ON ranged TO regress_ivf_writer;
SET ROLE regress_ivf_owner;
SELECT ep.create_incremental_view('ivf.ranged_sum', 'SELECT k, count(*) AS n, sum(v) AS total FROM ivf.ranged GROUP BY k');
CREATE FUNCTION ivf.note_who() RETURNS void LANGUAGE sql VOLATILE AS
    'INSERT INTO ivf.who_ran VALUES (current_user)';
CREATE FUNCTION ivf.fdiff(a float8, b float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM ivf.note_who();
    RETURN a - b;
END $$;
CREATE TYPE ivf.frange AS RANGE (subtype = float8, subtype_diff = ivf.fdiff);
ALTER TABLE ranged_sum__ivm_data ADD COLUMN z ivf.frange;
ALTER TABLE ranged_sum__ivm_data ALTER COLUMN z TYPE ivf.frange USING ivf.frange(k, k + 1);
CREATE INDEX ON ranged_sum__ivm_data USING gist (z);
CREATE INDEX ON ranged_sum__ivm_data (total);
RESET ROLE;
TRUNCATE who_ran;
SET ROLE regress_ivf_writer;
INSERT INTO ivf.ranged VALUES (7, 7);
UPDATE ivf.ranged SET v = v + 1 WHERE k = 1500;
RESET ROLE;
SELECT DISTINCT who FROM who_ran;
SELECT * FROM diffs();

-- (review) ALTER TABLE of the base or the storage: the statement declines
-- and the view's entry reloads; nothing reads a column by a stale number
CREATE TABLE altered (k int, v text, w int);
INSERT INTO altered VALUES (1, 'aaa', 1), (1, 'b', 2), (2, 'cc', 3);
SELECT ep.create_incremental_view('ivf.altered_max',
    'SELECT k, count(*) AS n, max(v) AS mx, sum(w) AS sw FROM ivf.altered GROUP BY k');
INSERT INTO altered VALUES (1, 'zz', 4);
ALTER TABLE altered ALTER COLUMN w TYPE bigint;
INSERT INTO altered VALUES (1, 'zzz', 5);
UPDATE altered SET w = w + 1 WHERE v = 'b';
SELECT * FROM diffs();
-- NOT NULL added by the owner on the storage: reported as by the SQL
ALTER TABLE altered_max__ivm_data ALTER COLUMN sw SET NOT NULL;
\set VERBOSITY terse
UPDATE altered SET w = NULL WHERE k = 2;
\set VERBOSITY default
ALTER TABLE altered_max__ivm_data ALTER COLUMN sw DROP NOT NULL;
SELECT * FROM diffs();
-- a column the view reads changes type: what the generated SQL makes of it
ALTER TABLE altered ALTER COLUMN v TYPE int USING length(v);
\set VERBOSITY terse
INSERT INTO altered VALUES (1, 9, 1);
\set VERBOSITY default
SELECT ep.drop_incremental_view('ivf.altered_max');

-- (review) an extreme replaced by an equal value of another form: the
-- value left is the one shown
CREATE TABLE scaled (id int PRIMARY KEY, k int, v numeric);
INSERT INTO scaled VALUES (1, 1, 1.0), (2, 1, 0.5);
SELECT ep.create_incremental_view('ivf.scaled_max', 'SELECT k, count(*) AS n, max(v) AS hi FROM ivf.scaled GROUP BY k');
UPDATE scaled SET v = 1.00 WHERE id = 1;
SELECT k, n, hi FROM scaled_max;

SELECT ep.drop_incremental_view(name) FROM ep.ivm_views WHERE name LIKE 'ivf.%' ORDER BY name;
DROP SCHEMA ivf CASCADE;
DROP ROLE regress_ivf_writer;
DROP ROLE regress_ivf_owner;
RESET search_path;
