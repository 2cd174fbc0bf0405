-- Deferred and full incremental views, views over ep.events, schedules,
-- drop and dependency handling, and views owned by one role and written
-- by another.
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
CREATE SCHEMA ivm_def;
SET search_path = ivm_def, public;

CREATE FUNCTION ivm_diff(v text, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $$;
CREATE FUNCTION check_all() RETURNS TABLE (name text, differing bigint) LANGUAGE sql AS $$
    SELECT name, ivm_diff(name, query) FROM ep.incremental_views
     WHERE name LIKE 'ivm_def.%' ORDER BY name
$$;
CREATE FUNCTION status() RETURNS TABLE (name text, refresh text, pending bigint, stale boolean) LANGUAGE sql AS $$
    SELECT name, refresh, pending_changes, is_stale FROM ep.incremental_views
     WHERE name LIKE 'ivm_def.%' ORDER BY name
$$;

CREATE TABLE sales (id serial PRIMARY KEY, day date, category text, region text, amount numeric);
CREATE TABLE regions (region text, manager text);
CREATE FUNCTION mutate(steps int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r float8;
BEGIN
    FOR i IN 1..steps LOOP
        r := random();
        IF i % 7 = 0 THEN
            BEGIN
                INSERT INTO sales (day, category, region, amount) VALUES ('2026-01-01', 'c1', 'north', 1);
                DELETE FROM sales WHERE id IN (SELECT id FROM sales ORDER BY id LIMIT 3);
                RAISE EXCEPTION 'roll back';
            EXCEPTION WHEN raise_exception THEN NULL;
            END;
        ELSIF r < 0.4 THEN
            INSERT INTO sales (day, category, region, amount)
            SELECT date '2026-01-01' + (random() * 3)::int, 'c' || (random() * 3)::int,
                   CASE WHEN random() < 0.1 THEN NULL ELSE (ARRAY['north', 'south', 'east'])[1 + (random() * 2)::int] END,
                   CASE WHEN random() < 0.1 THEN NULL ELSE (random() * 100)::int END
              FROM generate_series(1, 1 + (random() * 3)::int);
        ELSIF r < 0.65 THEN
            UPDATE sales SET amount = (random() * 100)::int, region = 'south'
             WHERE id IN (SELECT id FROM sales ORDER BY random() LIMIT 2);
        ELSIF r < 0.85 THEN
            DELETE FROM sales WHERE id IN (SELECT id FROM sales ORDER BY random() LIMIT 2);
        ELSE
            UPDATE regions SET manager = 'm' || (random() * 3)::int
             WHERE region = (ARRAY['north', 'south', 'east'])[1 + (random() * 2)::int];
        END IF;
    END LOOP;
END $$;
INSERT INTO regions VALUES ('north', 'ann'), ('south', 'bob'), ('east', 'cid'), ('east', 'dan');
SELECT setseed(0.5);
SELECT mutate(20);

-- the seed's example: a daily sales summary per category and region
SELECT ep.create_incremental_view('ivm_def.daily_sales',
    'SELECT day, category, region, count(*) AS orders, sum(amount) AS revenue, max(amount) AS biggest
       FROM sales GROUP BY day, category, region', 'deferred');
SELECT ep.create_incremental_view('ivm_def.by_manager',
    'SELECT r.manager, count(*) AS n, sum(s.amount) AS total
       FROM sales s JOIN regions r ON r.region = s.region GROUP BY r.manager', 'deferred');
SELECT ep.create_incremental_view('ivm_def.ranked',
    'SELECT category, amount, rank() OVER (PARTITION BY category ORDER BY amount) AS rnk FROM sales', 'full');
SELECT ep.create_incremental_view('ivm_def.as_json',
    'SELECT region, jsonb_agg(amount ORDER BY id) AS amounts FROM sales GROUP BY region', 'full');
SELECT * FROM status();
SELECT * FROM check_all();

-- pending_changes counts change records exactly: one per inserted or
-- deleted row, two per updated row (old and new version)
INSERT INTO sales (day, category, region, amount) VALUES
    ('2026-01-02', 'c1', 'north', 10), ('2026-01-02', 'c1', NULL, NULL), ('2026-01-03', 'c2', 'east', 5);
UPDATE sales SET amount = amount + 1 WHERE id IN (SELECT id FROM sales ORDER BY id LIMIT 2);
DELETE FROM sales WHERE id = (SELECT max(id) FROM sales);
BEGIN;
INSERT INTO sales (day, category, region, amount) VALUES ('2026-01-09', 'c9', 'west', 9);
ROLLBACK;
SELECT * FROM status();
SELECT name, differing > 0 AS stale_content FROM check_all();
SELECT ep.refresh_view('ivm_def.daily_sales');
SELECT ep.refresh_view('ivm_def.by_manager');
SELECT ep.refresh_view('ivm_def.ranked');
SELECT ep.refresh_view('ivm_def.as_json');
SELECT * FROM status();
SELECT * FROM check_all();
SELECT name FROM ep.incremental_views
 WHERE name LIKE 'ivm_def.%' AND (last_refreshed_at IS NULL OR last_refresh_ms IS NULL);

-- random batches between refreshes, both tables of the join changing
SELECT mutate(80);
SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';
SELECT * FROM check_all();
SELECT mutate(40);
COPY sales (day, category, region, amount) FROM STDIN;
2026-01-01	c1	north	3
2026-01-01	c1	north	3
2026-01-05	\N	\N	\N
\.
SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';
SELECT * FROM check_all();
-- a batch larger than a quarter of the base tables is recomputed instead
INSERT INTO sales (day, category, region, amount)
SELECT '2026-02-01', 'bulk', 'north', g FROM generate_series(1, 500) g;
ANALYZE sales;
SELECT ep.refresh_view('ivm_def.daily_sales');
SELECT * FROM check_all() WHERE name = 'ivm_def.daily_sales';

-- TRUNCATE: a deferred view needs a recompute, counted as one change
SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';
TRUNCATE sales;
SELECT * FROM status();
SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';
SELECT * FROM check_all();
SELECT count(*) FROM daily_sales;

-- a column added to a base table does not disturb logging or maintenance
ALTER TABLE sales ADD COLUMN note text;
INSERT INTO sales (day, category, region, amount, note) VALUES ('2026-03-01', 'c1', 'east', 4, 'late');
UPDATE sales SET amount = 5, note = 'later' WHERE note = 'late';
SELECT ep.refresh_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';
SELECT * FROM check_all();

-- schedules: the job runs refresh_view as the view's owner
SELECT ep.schedule_refresh('ivm_def.daily_sales', '5 minutes');
SELECT kind, target, schedule, command, owner = ep._role(current_user) AS owned FROM ep.job_registry
 WHERE kind = 'view_refresh';
SELECT name, schedule FROM ep.incremental_views WHERE name LIKE 'ivm_def.%' ORDER BY name;
SELECT ep.schedule_refresh('ivm_def.daily_sales', '1 hour');
SELECT target, schedule FROM ep.jobs WHERE kind = 'view_refresh';
SELECT ep.schedule_refresh('ivm_def.daily_sales', '-1 hour');
SELECT ep.unschedule_refresh('ivm_def.daily_sales');
SELECT count(*) FROM ep.jobs WHERE kind = 'view_refresh';
SELECT ep.schedule_refresh('ivm_def.nope', '1 hour');

-- bad input writes nothing
SELECT ep.create_incremental_view('ivm_def.x', 'SELECT 1', 'sometimes');
SELECT ep.create_incremental_view('ivm_def.x', 'DELETE FROM sales');
SELECT ep.create_incremental_view('ivm_def.x', 'SELECT 1; SELECT 2');
SELECT ep.create_incremental_view('ivm_def.x', 'SELECT id AS __ep_id FROM sales');
SELECT ep.create_incremental_view('ivm_def.daily_sales', 'SELECT id FROM sales');
SELECT ep.refresh_view('ivm_def.nope');
SELECT count(*) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';

-- a live aggregate over the event store (append-only base table)
SELECT ep.create_incremental_view('ivm_def.event_counts',
    'SELECT category, event_type, count(*) AS n, max(global_position) AS last_position
       FROM ep.events GROUP BY category, event_type');
SELECT ep.append('order-1', 'Placed', '{"total": 10}');
SELECT ep.append('order-1', 'Paid', '{}');
SELECT ep.append('order-2', 'Placed', '{"total": 5}');
SELECT ep.append('invoice-7', 'Issued', '{}');
SELECT category, event_type, n FROM event_counts ORDER BY 1, 2;
SELECT * FROM check_all() WHERE name = 'ivm_def.event_counts';

-- dependencies: a base table cannot be dropped under a view ...
DROP TABLE regions;
-- ... unless with CASCADE, which removes the view entirely
DROP TABLE regions CASCADE;
SELECT name FROM ep.incremental_views WHERE name LIKE 'ivm_def.%' ORDER BY 1;
SELECT count(*) FROM pg_trigger WHERE tgname LIKE '__ep_ivm_%' AND tgrelid = 'sales'::regclass;
-- dropping the view itself removes its storage, logs and triggers
DROP VIEW daily_sales;
SELECT name FROM ep.incremental_views WHERE name LIKE 'ivm_def.%' ORDER BY 1;
SELECT count(*) FROM pg_class WHERE relname LIKE 'daily_sales__ivm%';
SELECT ep.drop_incremental_view('ivm_def.ranked');
SELECT count(*) FROM pg_class WHERE relname LIKE 'ranked%';

-- ownership: alice's view, bob writes the base table; maintenance runs as
-- alice, bob needs no rights on the storage
CREATE ROLE regress_ivm_alice;
CREATE ROLE regress_ivm_bob;
CREATE SCHEMA ivm_alice AUTHORIZATION regress_ivm_alice;
SET ROLE regress_ivm_alice;
CREATE TABLE ivm_alice.t (k int, v int);
GRANT USAGE ON SCHEMA ivm_alice TO regress_ivm_bob;
GRANT INSERT, UPDATE, SELECT ON ivm_alice.t TO regress_ivm_bob;
SELECT ep.create_incremental_view('ivm_alice.tv', 'SELECT k, sum(v) AS s FROM ivm_alice.t GROUP BY k');
SELECT relname, pg_get_userbyid(relowner) FROM pg_class
 WHERE relnamespace = 'ivm_alice'::regnamespace AND relname LIKE 'tv%' ORDER BY 1;
-- nobody edits catalog rows (their SQL runs as their owner), and nobody
-- feeds a view from another table with a trigger of their own
UPDATE ep.ivm_views SET storage_rel = 'ivm_alice.t';
CREATE TABLE ivm_alice.fake (k int, v int);
DO $$
BEGIN
    EXECUTE format('CREATE TRIGGER fake AFTER INSERT ON ivm_alice.fake REFERENCING NEW TABLE AS __ep_new
                    FOR EACH STATEMENT EXECUTE FUNCTION ep._ivm_maintain(%L, ''0'')',
                   (SELECT view_id FROM ep.ivm_views WHERE name = 'ivm_alice.tv'));
    INSERT INTO ivm_alice.fake VALUES (1, 1000000);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'refused with SQLSTATE %', SQLSTATE;
END
$$;
DROP TABLE ivm_alice.fake;
SET ROLE regress_ivm_bob;
INSERT INTO ivm_alice.t VALUES (1, 10), (1, 5), (2, 1);
UPDATE ivm_alice.t SET v = v * 2;
SELECT * FROM ivm_alice.tv ORDER BY k;
SELECT ep.drop_incremental_view('ivm_alice.tv');
-- owners are kept by OID: renaming the owning role changes nothing; its
-- scheduled refresh follows the rename (TAP 020_jobs runs a renamed owner's job)
RESET ROLE;
SET ROLE regress_ivm_alice;
SELECT ep.schedule_refresh('ivm_alice.tv', '1 hour');
RESET ROLE;
ALTER ROLE regress_ivm_alice RENAME TO regress_ivm_alice2;
SELECT target, owner FROM ep.jobs WHERE target = 'ivm_alice.tv';
SET ROLE regress_ivm_bob;
INSERT INTO ivm_alice.t VALUES (3, 7);
RESET ROLE;
ALTER ROLE regress_ivm_alice2 RENAME TO regress_ivm_alice;
SET ROLE regress_ivm_alice;
SELECT * FROM ivm_alice.tv ORDER BY k;
SELECT k, sum(v) AS s FROM ivm_alice.t GROUP BY k ORDER BY k;
SELECT ep.unschedule_refresh('ivm_alice.tv');
SELECT ep.drop_incremental_view('ivm_alice.tv');
SELECT count(*) FROM pg_class WHERE relnamespace = 'ivm_alice'::regnamespace;
RESET ROLE;
DROP SCHEMA ivm_alice CASCADE;
DROP ROLE regress_ivm_alice;
DROP ROLE regress_ivm_bob;

SELECT ep.drop_incremental_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_def.%';
DROP SCHEMA ivm_def CASCADE;
RESET search_path;
