-- Async incremental views: no triggers on the base tables, the changes are
-- decoded from the WAL and applied in rounds (here driven by hand with
-- ep.apply_async_views(); the worker is off in this suite).
CREATE EXTENSION IF NOT EXISTS event_patterns;
SET client_min_messages = warning;
CREATE ROLE regress_async_owner LOGIN;
CREATE SCHEMA ivm_async AUTHORIZATION regress_async_owner;
GRANT USAGE ON SCHEMA ivm_async TO PUBLIC;
SET search_path = ivm_async, public;

CREATE FUNCTION ivm_diff(v text, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $$;
CREATE FUNCTION check_all() RETURNS TABLE (name text, differing bigint) LANGUAGE sql AS $$
    SELECT name, ivm_diff(name, query) FROM ep.incremental_views
     WHERE name LIKE 'ivm_async.%' ORDER BY name
$$;

SET ROLE regress_async_owner;
CREATE TABLE customers (id int PRIMARY KEY, segment text, region text);
CREATE TABLE orders (id serial PRIMARY KEY, customer int, day date, amount numeric, note text);
CREATE TABLE plain (k int, v int);

-- refused: no whole old rows in the WAL; bad mode
SELECT ep.create_incremental_view('ivm_async.v_plain', 'SELECT k, sum(v) AS s FROM plain GROUP BY k', 'async');
SELECT ep.create_incremental_view('ivm_async.v_plain', 'SELECT k FROM plain', 'sometimes');
ALTER TABLE customers REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE plain REPLICA IDENTITY FULL;

INSERT INTO customers SELECT g, 'seg' || g % 3, CASE WHEN g % 5 = 0 THEN NULL ELSE 'r' || g % 2 END
  FROM generate_series(1, 20) g;
INSERT INTO orders (customer, day, amount, note)
SELECT 1 + g % 25, date '2026-01-01' + g % 4, g % 17, repeat('x', g)
  FROM generate_series(1, 60) g;
INSERT INTO plain SELECT g % 5, g FROM generate_series(1, 30) g;

-- revenue per customer segment per day (inner join, aggregates)
SELECT ep.create_incremental_view('ivm_async.revenue',
  'SELECT c.segment, o.day, count(*) AS n, sum(o.amount) AS revenue, avg(o.amount) AS mean,
          min(o.amount) AS lo, max(o.amount) AS hi
     FROM orders o JOIN customers c ON c.id = o.customer GROUP BY c.segment, o.day', 'async');
-- projection with filter, DISTINCT, outer join, HAVING
SELECT ep.create_incremental_view('ivm_async.big_orders',
  'SELECT id, customer, amount FROM orders WHERE amount > 10', 'async');
SELECT ep.create_incremental_view('ivm_async.regions_used',
  'SELECT DISTINCT c.region FROM orders o JOIN customers c ON c.id = o.customer', 'async');
SELECT ep.create_incremental_view('ivm_async.with_customer',
  'SELECT o.id, o.amount, c.segment FROM orders o LEFT JOIN customers c ON c.id = o.customer', 'async');
SELECT ep.create_incremental_view('ivm_async.busy_days',
  'SELECT day, count(*) AS n FROM orders GROUP BY day HAVING count(*) > 14', 'async');
-- shapes maintained by recompute-and-diff: CTE + NOT EXISTS, UNION ALL, count(DISTINCT), FILTER
SELECT ep.create_incremental_view('ivm_async.idle_customers',
  'WITH c AS (SELECT id, segment FROM customers)
   SELECT c.id, c.segment FROM c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id)', 'async');
SELECT ep.create_incremental_view('ivm_async.both',
  'SELECT customer AS k FROM orders UNION ALL SELECT k FROM plain', 'async');
SELECT ep.create_incremental_view('ivm_async.distinct_days',
  'SELECT customer, count(DISTINCT day) AS days, count(*) FILTER (WHERE amount > 5) AS big
     FROM orders GROUP BY customer', 'async');
-- a view whose base is another incremental view's storage
SELECT ep.create_incremental_view('ivm_async.revenue_by_segment',
  'SELECT segment, sum(revenue) AS revenue, count(*) AS days FROM ivm_async.revenue__ivm_data GROUP BY segment', 'async');
-- views over views by name: an async view over another async view, and an
-- immediate view over an async one (fed by the worker's writes to its storage)
SELECT ep.create_incremental_view('ivm_async.revenue_by_day',
  'SELECT day, sum(revenue) AS revenue FROM ivm_async.revenue GROUP BY day', 'async');
SELECT ep.create_incremental_view('ivm_async.big_order_count',
  'SELECT count(*) AS n, sum(amount) AS total FROM ivm_async.big_orders', 'immediate');
-- a self-join (several references to one table), and aggregates kept by recompute
SELECT ep.create_incremental_view('ivm_async.same_day_pairs',
  'SELECT a.day, count(*) AS pairs FROM orders a JOIN orders b ON a.day = b.day AND a.customer < b.customer GROUP BY a.day', 'async');
SELECT ep.create_incremental_view('ivm_async.segment_lists',
  'SELECT segment, string_agg(id::text, '','' ORDER BY id) AS ids, bool_and(region IS NOT NULL) AS all_located
     FROM customers GROUP BY segment', 'async');
RESET ROLE;

-- no trigger on any base table; the storage of revenue logs whole old rows now
SELECT count(*) AS base_triggers FROM pg_trigger
 WHERE tgrelid IN ('ivm_async.orders'::regclass, 'ivm_async.customers'::regclass, 'ivm_async.plain'::regclass);
SELECT relreplident FROM pg_class WHERE oid = 'ivm_async.revenue__ivm_data'::regclass;
SELECT name, refresh, pending_changes, lag_bytes IS NULL AS not_yet_computed
  FROM ep.incremental_views WHERE name LIKE 'ivm_async.%' ORDER BY name;

-- the first round computes every view
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT * FROM check_all();
SELECT name, lag_bytes IS NOT NULL AS has_lag, lag_seconds >= 0 AS has_seconds, last_error
  FROM ep.incremental_views WHERE name LIKE 'ivm_async.%' ORDER BY name;
SELECT count(*) AS computed FROM ep.ivm_async WHERE applied_lsn IS NOT NULL AND NOT needs_full;

-- writes are not seen before a round
INSERT INTO orders (customer, day, amount) VALUES (1, '2026-01-01', 1000);
SELECT max(hi) FROM revenue;
SELECT ep.apply_async_views();
SELECT max(hi) FROM revenue;

-- a random mix of commits, rollbacks and savepoints, one round at the end
CREATE PROCEDURE mutate(steps int) LANGUAGE plpgsql AS $$
DECLARE r float8;
BEGIN
    FOR i IN 1..steps LOOP
        r := random();
        IF i % 9 = 0 THEN
            BEGIN
                INSERT INTO orders (customer, day, amount) VALUES (2, '2026-01-02', 7);
                DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 3);
                RAISE EXCEPTION 'roll back';
            EXCEPTION WHEN raise_exception THEN NULL;
            END;
        ELSIF r < 0.35 THEN
            INSERT INTO orders (customer, day, amount)
            SELECT 1 + (random() * 24)::int, date '2026-01-01' + (random() * 4)::int,
                   CASE WHEN random() < 0.1 THEN NULL ELSE (random() * 20)::int END
              FROM generate_series(1, 1 + (random() * 3)::int);
        ELSIF r < 0.55 THEN
            UPDATE orders SET amount = (random() * 20)::int, customer = 1 + (random() * 24)::int
             WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 2);
        ELSIF r < 0.7 THEN
            DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY random() LIMIT 2);
        ELSIF r < 0.85 THEN
            UPDATE customers SET segment = 'seg' || (random() * 3)::int
             WHERE id = 1 + (random() * 19)::int;
        ELSE
            UPDATE plain SET v = v + 1, k = (random() * 5)::int WHERE k = (random() * 5)::int;
        END IF;
        COMMIT;
    END LOOP;
END $$;
SELECT setseed(0.25);
CALL mutate(60);
SELECT ep.apply_async_views() > 0 AS applied;
-- revenue_by_segment reads revenue's storage: it gets revenue's writes in the next round
SELECT * FROM check_all() WHERE differing <> 0;
SELECT ep.apply_async_views() > 0 AS applied;
SELECT * FROM check_all();
CALL mutate(40);
SELECT ep.apply_async_views() > 0 AS applied;
CALL mutate(40);
SELECT ep.apply_async_views() > 0 AS applied;
SELECT ep.apply_async_views() > 0 AS applied;
SELECT * FROM check_all();

-- a change of a TOASTed column's row keeps the other columns right
UPDATE orders SET amount = amount + 1 WHERE id = 60;
SELECT ep.apply_async_views();
SELECT ep.apply_async_views();
SELECT * FROM check_all() WHERE differing <> 0;

-- TRUNCATE of a base recomputes
SELECT recomputes AS before FROM ep.ivm_async a JOIN ep.ivm_views v USING (view_id) WHERE v.name = 'ivm_async.big_orders' \gset
TRUNCATE plain;
INSERT INTO plain VALUES (1, 1), (2, 2);
TRUNCATE orders;
INSERT INTO orders (customer, day, amount) VALUES (3, '2026-01-03', 12), (4, '2026-01-03', 30);
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT * FROM check_all();
SELECT recomputes > :before AS recomputed FROM ep.ivm_async a JOIN ep.ivm_views v USING (view_id) WHERE v.name = 'ivm_async.big_orders';

-- refresh_view(full) of an async view asks the next round to recompute
SELECT ep.refresh_view('ivm_async.revenue', true);
SELECT a.needs_full FROM ep.ivm_async a JOIN ep.ivm_views v USING (view_id) WHERE v.name = 'ivm_async.revenue';
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT a.needs_full FROM ep.ivm_async a JOIN ep.ivm_views v USING (view_id) WHERE v.name = 'ivm_async.revenue';

-- a view whose query fails records the error; the other views go on
SET ROLE regress_async_owner;
CREATE FUNCTION ivm_async.inverse(x numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT 1 / x';
SELECT ep.create_incremental_view('ivm_async.inverses',
  'SELECT id, inverse(amount) AS inv FROM orders', 'async');
RESET ROLE;
SELECT ep.apply_async_views() >= 0 AS applied;
INSERT INTO orders (customer, day, amount) VALUES (5, '2026-01-04', 0);
INSERT INTO orders (customer, day, amount) VALUES (6, '2026-01-04', 19);
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT name, last_error FROM ep.incremental_views WHERE last_error IS NOT NULL;
SELECT count(*) AS big_orders_current FROM big_orders WHERE customer = 6;
-- once the row is gone the failed batch recomputes the view instead
DELETE FROM orders WHERE amount = 0;
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT name, last_error FROM ep.incremental_views WHERE last_error IS NOT NULL;
SELECT * FROM check_all();

-- ep.events as a base table: appends are decoded like any insert
SELECT ep.create_incremental_view('ivm_async.event_counts',
  'SELECT event_type, count(*) AS n, max(stream_version) AS last_version FROM ep.events
    WHERE stream_id LIKE ''async-%'' GROUP BY event_type', 'async');
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT ep.append('async-1', 'Opened', '{}');
SELECT ep.append('async-1', 'Deposited', '{"amount": 5}');
SELECT ep.append_events('async-2', '[{"type": "Opened"}, {"type": "Deposited"}, {"type": "Deposited"}]');
SELECT ep.apply_async_views() > 0 AS applied;
SELECT * FROM event_counts ORDER BY event_type;
SELECT * FROM check_all() WHERE differing <> 0;

-- a hostile owner: the view's function runs as its owner, restricted, even
-- when a superuser applies the round
CREATE ROLE regress_async_mallory LOGIN;
GRANT SELECT ON ivm_async.plain, ivm_async.big_orders__ivm_data TO regress_async_mallory;
CREATE SCHEMA mallory AUTHORIZATION regress_async_mallory;
SET ROLE regress_async_mallory;
SET search_path = mallory, public;
CREATE FUNCTION mallory.grab(k int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE regress_async_mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    PERFORM set_config('search_path', 'mallory', false);
    RETURN k;
END $$;
SELECT ep.create_incremental_view('mallory.grabbed', 'SELECT grab(k) AS k, count(*) AS n FROM ivm_async.plain GROUP BY 1', 'async');
-- the replica identity of another role's view storage is not changed for mallory
SELECT ep.create_incremental_view('mallory.over_storage', 'SELECT customer FROM ivm_async.big_orders__ivm_data', 'async');
RESET ROLE;
SET search_path = ivm_async, public;
INSERT INTO plain VALUES (3, 3);
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_async_mallory';
SHOW search_path;
SELECT * FROM mallory.grabbed ORDER BY k;
-- privileges taken away after creation stop the view: no row it may no
-- longer read reaches it (SELECT revoked, then row-level security)
SET ROLE regress_async_mallory;
SELECT ep.create_incremental_view('mallory.copied', 'SELECT k, v FROM ivm_async.plain', 'async');
RESET ROLE;
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT count(*) > 0 AS copied FROM mallory.copied;
REVOKE SELECT ON ivm_async.plain FROM regress_async_mallory;
INSERT INTO plain VALUES (4, 404);
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT count(*) AS leaked FROM mallory.copied WHERE v = 404;
SELECT name, last_error FROM ep.incremental_views WHERE name = 'mallory.copied';
GRANT SELECT ON ivm_async.plain TO regress_async_mallory;
ALTER TABLE plain ENABLE ROW LEVEL SECURITY;
CREATE POLICY plain_small ON plain USING (v < 400);
INSERT INTO plain VALUES (4, 405);
SELECT ep.apply_async_views() >= 0 AS applied;
SELECT count(*) AS leaked FROM mallory.copied WHERE v >= 400;
SELECT name, last_error FROM ep.incremental_views WHERE name = 'mallory.copied';
ALTER TABLE plain DISABLE ROW LEVEL SECURITY;
DROP POLICY plain_small ON plain;
SELECT ep.drop_incremental_view('mallory.copied');
SELECT ep.drop_incremental_view('mallory.grabbed');
DROP SCHEMA mallory CASCADE;
REVOKE ALL ON ivm_async.plain, ivm_async.big_orders__ivm_data FROM regress_async_mallory;
DROP ROLE regress_async_mallory;

-- only maintenance writes the view; wait_for_view
INSERT INTO ivm_async.revenue__ivm_data (segment) VALUES ('x');
SELECT ep.wait_for_view('ivm_async.big_orders', '0');
SELECT ep.wait_for_view('ivm_async.big_orders', NULL);
SELECT ep.wait_for_view('ivm_async.no_such_view');
SELECT ep.apply_async_views() FROM (SELECT 1) x WHERE false;
-- not in REPEATABLE READ; not for everybody
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT ep.apply_async_views();
ROLLBACK;
SET ROLE regress_async_owner;
SELECT ep.apply_async_views();
RESET ROLE;

-- immediate and deferred views over a subscribed table are refused (see
-- the TAP test for a real subscriber); dropping async views drops their slot
-- state with them
SELECT ep.drop_incremental_view('ivm_async.big_order_count'), ep.drop_incremental_view('ivm_async.revenue_by_day');
SELECT ep.drop_incremental_view(name) FROM ep.incremental_views WHERE name LIKE 'ivm_async.%' ORDER BY name DESC;
SELECT count(*) FROM ep.ivm_async;
SELECT ep.apply_async_views();
DROP SCHEMA ivm_async CASCADE;
DROP ROLE regress_async_owner;
