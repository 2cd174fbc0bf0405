-- Incremental views over partitioned tables: writes through the parent, to
-- a partition directly, rows moving between partitions, TRUNCATE of the
-- parent and of one partition, partitions created, attached, detached and
-- dropped later, sub-partitions. Every view is compared with its query
-- through EXCEPT ALL both ways after each step.
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
CREATE SCHEMA ivm_part;
SET search_path = ivm_part, public;

CREATE TABLE sales (id int, region text, day int, amount int) PARTITION BY RANGE (day);
CREATE TABLE sales_1 PARTITION OF sales FOR VALUES FROM (1) TO (11);
CREATE TABLE sales_2 PARTITION OF sales FOR VALUES FROM (11) TO (21) PARTITION BY LIST (region);
CREATE TABLE sales_2n PARTITION OF sales_2 FOR VALUES IN ('north');
CREATE TABLE sales_2o PARTITION OF sales_2 DEFAULT;
CREATE TABLE regions (region text, manager text);
INSERT INTO regions VALUES ('north', 'ada'), ('south', 'bob');
INSERT INTO sales SELECT g, CASE WHEN g % 3 = 0 THEN 'south' ELSE 'north' END, 1 + g % 20, g FROM generate_series(1, 60) g;

CREATE FUNCTION ivm_diff(v text, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $$;
CREATE FUNCTION check_all() RETURNS TABLE (name text, differing bigint) LANGUAGE sql AS $$
    SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_part.%' AND refresh = 'deferred';
    SELECT name, ivm_diff(name, query) FROM ep.incremental_views WHERE name LIKE 'ivm_part.%' ORDER BY name
$$;

SELECT ep.create_incremental_view('ivm_part.by_region',
    'SELECT region, count(*) AS n, sum(amount) AS total, max(amount) AS top FROM sales GROUP BY region');
SELECT ep.create_incremental_view('ivm_part.by_manager',
    'SELECT r.manager, count(*) AS n, sum(s.amount) AS total FROM sales s JOIN regions r ON r.region = s.region GROUP BY r.manager');
SELECT ep.create_incremental_view('ivm_part.by_day',
    'SELECT day, count(*) AS n FROM sales GROUP BY day', 'deferred');
SELECT * FROM check_all();

-- through the parent, to partitions directly, across partitions
INSERT INTO sales VALUES (100, 'north', 5, 7), (101, 'west', 15, 8);
INSERT INTO sales_1 VALUES (102, 'south', 3, 9);
INSERT INTO sales_2n VALUES (103, 'north', 12, 10);
UPDATE sales SET day = day + 10 WHERE id IN (1, 2, 3);
UPDATE sales_2o SET amount = amount * 2;
DELETE FROM sales_1 WHERE id % 5 = 0;
UPDATE regions SET manager = 'cy' WHERE region = 'south';
SELECT * FROM check_all();
BEGIN;
DELETE FROM sales_2n;
SAVEPOINT s;
INSERT INTO sales_2o VALUES (104, 'east', 20, 1);
ROLLBACK TO SAVEPOINT s;
COPY sales FROM STDIN;
105	north	1	11
106	south	19	12
\.
COMMIT;
SELECT * FROM check_all();

-- TRUNCATE of one partition, and of the whole table
TRUNCATE sales_1;
SELECT * FROM check_all();
INSERT INTO sales SELECT g, 'north', 1 + g % 20, g FROM generate_series(200, 230) g;
SELECT * FROM check_all();

-- partitions created later get the triggers; attached and detached ones
-- bring and take their rows
CREATE TABLE sales_3 PARTITION OF sales FOR VALUES FROM (21) TO (31);
INSERT INTO sales VALUES (300, 'north', 25, 30);
INSERT INTO sales_3 VALUES (301, 'south', 26, 31);
SELECT * FROM check_all();
CREATE TABLE sales_4 (id int, region text, day int, amount int);
INSERT INTO sales_4 VALUES (400, 'north', 35, 40), (401, 'south', 36, 41);
ALTER TABLE sales ATTACH PARTITION sales_4 FOR VALUES FROM (31) TO (41);
SELECT * FROM check_all();
INSERT INTO sales_4 VALUES (402, 'north', 33, 42);
SELECT * FROM check_all();
ALTER TABLE sales DETACH PARTITION sales_1;
SELECT * FROM check_all();
-- the detached table is an ordinary table again: writes to it work and do
-- not reach the views
INSERT INTO sales_1 VALUES (500, 'north', 2, 50);
SELECT count(*) AS detached_triggers FROM pg_trigger WHERE tgrelid = 'sales_1'::regclass AND tgname LIKE '\_\_ep\_%';
SELECT * FROM check_all();
DROP TABLE sales_3;
SELECT * FROM check_all();
TRUNCATE sales;
SELECT * FROM check_all();

-- a partition itself, or a table with foreign partitions, is refused
\set VERBOSITY default
SELECT ep.create_incremental_view('ivm_part.bad', 'SELECT count(*) FROM sales_2n');
\set VERBOSITY terse

SELECT ep.drop_incremental_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_part.%';
SELECT count(*) AS leftover_triggers FROM pg_trigger WHERE tgname LIKE '\_\_ep\_%' AND tgrelid::regclass::text LIKE 'sales%';
DROP SCHEMA ivm_part CASCADE;
RESET search_path;
