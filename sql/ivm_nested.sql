-- Incremental views over incremental views: the inner view's storage is the
-- outer view's base table (recompute-and-diff), maintained in dependency
-- order; every view equals its query after any mix of writes (EXCEPT ALL
-- both ways), and a view read by another cannot be dropped first.
CREATE TABLE nest_sales (id int PRIMARY KEY, region text, product text, amount int);
CREATE TABLE nest_regions (region text PRIMARY KEY, zone text);
INSERT INTO nest_regions VALUES ('n', 'north'), ('s', 'south'), ('e', 'east'), ('w', 'west');
INSERT INTO nest_sales SELECT g, (ARRAY['n','s','e','w'])[1 + g % 4], 'p' || (g % 7), g % 50
  FROM generate_series(1, 200) g;

-- level 1: grouped (with HAVING), a projection with duplicates, deferred
SELECT ep.create_incremental_view('nest_by_region',
  'SELECT region, sum(amount) AS total, count(*) AS n FROM nest_sales GROUP BY region HAVING count(*) > 1');
SELECT ep.create_incremental_view('nest_products', 'SELECT product, region FROM nest_sales');
SELECT ep.create_incremental_view('nest_by_product_d',
  'SELECT product, sum(amount) AS total FROM nest_sales GROUP BY product', 'deferred');
-- level 2: over level 1, joined with a table, over a deferred view
SELECT ep.create_incremental_view('nest_zone_totals',
  'SELECT r.zone, b.total FROM nest_by_region b JOIN nest_regions r USING (region)');
SELECT ep.create_incremental_view('nest_product_count',
  'SELECT product, count(*) AS n FROM nest_products GROUP BY product');
SELECT ep.create_incremental_view('nest_top_products',
  'SELECT product, total FROM nest_by_product_d WHERE total > 600');
SELECT ep.create_incremental_view('nest_top_products_d',
  'SELECT count(*) AS n, sum(total) AS s FROM nest_by_product_d', 'deferred');
-- level 3
SELECT ep.create_incremental_view('nest_grand',
  'SELECT sum(total) AS total, count(*) AS zones FROM nest_zone_totals');

SELECT name, refresh FROM ep.incremental_views WHERE name LIKE 'nest%' ORDER BY name;

CREATE FUNCTION pg_temp.nest_check() RETURNS TABLE (view text, missing bigint, extra bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v record;
BEGIN
  FOR v IN SELECT * FROM (VALUES
    ('nest_by_region', 'SELECT region, sum(amount) AS total, count(*) AS n FROM nest_sales GROUP BY region HAVING count(*) > 1'),
    ('nest_products', 'SELECT product, region FROM nest_sales'),
    ('nest_zone_totals', 'SELECT r.zone, b.total FROM (SELECT region, sum(amount) AS total FROM nest_sales GROUP BY region HAVING count(*) > 1) b JOIN nest_regions r USING (region)'),
    ('nest_product_count', 'SELECT product, count(*) AS n FROM nest_sales GROUP BY product'),
    ('nest_grand', 'SELECT sum(b.total) AS total, count(*) AS zones FROM (SELECT region, sum(amount) AS total FROM nest_sales GROUP BY region HAVING count(*) > 1) b JOIN nest_regions r USING (region)')) t(name, q)
  LOOP
    view := v.name;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %I) d', v.q, v.name) INTO missing;
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %I EXCEPT ALL (%s)) d', v.name, v.q) INTO extra;
    RETURN NEXT;
  END LOOP;
END $$;

SELECT * FROM pg_temp.nest_check();

-- a mix of writes, savepoints, a rollback, COPY, TRUNCATE
BEGIN;
UPDATE nest_sales SET amount = amount + 7 WHERE id % 3 = 0;
SAVEPOINT a;
DELETE FROM nest_sales WHERE region = 'n';
ROLLBACK TO a;
DELETE FROM nest_sales WHERE id % 5 = 0;
INSERT INTO nest_sales VALUES (1001, 'x', 'p99', 5);  -- a region without zone
COMMIT;
SELECT * FROM pg_temp.nest_check();
BEGIN;
UPDATE nest_sales SET region = 's' WHERE region = 'w';
UPDATE nest_regions SET zone = 'south-2' WHERE region = 's';
ROLLBACK;
SELECT * FROM pg_temp.nest_check();
COPY nest_sales FROM stdin;
2001	w	p1	40
2002	w	p1	41
\.
UPDATE nest_regions SET zone = 'west-2' WHERE region = 'w';
SELECT * FROM pg_temp.nest_check();
SELECT * FROM nest_grand;
-- a region with one sale left drops out of nest_by_region (HAVING) and so
-- out of every view above it
DELETE FROM nest_sales WHERE region = 'e' AND id <> (SELECT min(id) FROM nest_sales WHERE region = 'e');
SELECT zone FROM nest_zone_totals ORDER BY zone;
SELECT * FROM pg_temp.nest_check();
TRUNCATE nest_sales;
SELECT * FROM pg_temp.nest_check();
SELECT * FROM nest_grand;
INSERT INTO nest_sales SELECT g, (ARRAY['n','s','e','w'])[1 + g % 4], 'p' || (g % 7), g % 50
  FROM generate_series(1, 200) g;
SELECT * FROM pg_temp.nest_check();

-- deferred views: a refresh of the outer view refreshes the deferred views
-- it reads first; an immediate view over a deferred one follows its refreshes
UPDATE nest_sales SET amount = amount + 100 WHERE product IN ('p1', 'p2');
SELECT count(*) AS stale_top FROM (SELECT product, total FROM nest_top_products
  EXCEPT ALL SELECT product, sum(amount) FROM nest_sales GROUP BY product HAVING sum(amount) > 600) d;
SELECT ep.refresh_view('nest_top_products_d');
SELECT (SELECT n FROM nest_top_products_d) = (SELECT count(DISTINCT product) FROM nest_sales) AS outer_fresh,
       (SELECT count(*) FROM (SELECT * FROM nest_by_product_d
          EXCEPT ALL SELECT product, sum(amount) FROM nest_sales GROUP BY product) d) AS inner_stale_rows;
SELECT count(*) AS top_missing FROM (SELECT product, sum(amount) FROM nest_sales GROUP BY product HAVING sum(amount) > 600
  EXCEPT ALL SELECT product, total FROM nest_top_products) d;

-- dependency order on drop
SELECT ep.drop_incremental_view('nest_by_region');
DROP VIEW nest_products;
SELECT ep.drop_incremental_view('nest_grand');
SELECT ep.drop_incremental_view('nest_zone_totals');
SELECT ep.drop_incremental_view('nest_by_region');

-- another role's view: reading it needs SELECT, maintaining from it TRIGGER
-- on its storage, as for any base table
CREATE ROLE regress_nest_other;
GRANT SELECT ON nest_product_count TO regress_nest_other;
CREATE SCHEMA AUTHORIZATION regress_nest_other;
SET ROLE regress_nest_other;
SELECT ep.create_incremental_view('regress_nest_other.mine', 'SELECT count(*) AS n FROM public.nest_product_count');
RESET ROLE;
-- a plain view is still no base relation
CREATE VIEW nest_plain AS SELECT * FROM nest_sales;
SELECT ep.create_incremental_view('nest_over_plain', 'SELECT count(*) AS n FROM nest_plain');
DROP VIEW nest_plain;

-- dropping a schema with both levels works
CREATE SCHEMA nest_s;
SELECT ep.create_incremental_view('nest_s.a', 'SELECT region, count(*) AS n FROM nest_sales GROUP BY region');
SELECT ep.create_incremental_view('nest_s.b', 'SELECT sum(n) AS n FROM nest_s.a');
DROP SCHEMA nest_s CASCADE;
SELECT count(*) AS left_behind FROM ep.ivm_views WHERE name LIKE 'nest_s.%';

SELECT ep.drop_incremental_view('nest_top_products'), ep.drop_incremental_view('nest_top_products_d'),
       ep.drop_incremental_view('nest_product_count');
SELECT ep.drop_incremental_view('nest_by_product_d'), ep.drop_incremental_view('nest_products');
DROP SCHEMA regress_nest_other;
DROP ROLE regress_nest_other;
DROP TABLE nest_sales, nest_regions;
