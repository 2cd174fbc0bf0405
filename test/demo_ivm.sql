-- Demo section: incremental materialized views (to be merged into
-- test/demo.sql). Runs on its own: psql -f test/demo_ivm.sql
CREATE EXTENSION IF NOT EXISTS event_patterns;
\echo '-- a daily sales summary per category and region, refreshed on a schedule'
CREATE TABLE demo_sales (id serial PRIMARY KEY, day date, category text, region text, amount numeric);
INSERT INTO demo_sales (day, category, region, amount)
SELECT date '2026-11-01' + g % 7, (ARRAY['books', 'games', 'music'])[1 + g % 3],
       (ARRAY['north', 'south'])[1 + g % 2], (g * 37) % 200
  FROM generate_series(1, 10000) g;
SELECT ep.create_incremental_view('demo_daily_sales',
    'SELECT day, category, region, count(*) AS orders, sum(amount) AS revenue, max(amount) AS biggest
       FROM demo_sales GROUP BY day, category, region', 'deferred');
SELECT ep.schedule_refresh('demo_daily_sales', '1 minute');
INSERT INTO demo_sales (day, category, region, amount) VALUES ('2026-11-01', 'books', 'north', 500);
UPDATE demo_sales SET amount = amount + 1 WHERE id <= 10;
SELECT name, refresh, schedule, pending_changes, is_stale FROM ep.incremental_views;
SELECT ep.refresh_view('demo_daily_sales');
SELECT name, pending_changes, is_stale, last_refresh_ms IS NOT NULL AS refreshed FROM ep.incremental_views;
SELECT * FROM demo_daily_sales WHERE day = '2026-11-01' ORDER BY category, region;
SELECT kind, target, schedule, owner FROM ep.jobs;

\echo '-- a live aggregate over the event store, maintained in each appending transaction'
SELECT ep.create_incremental_view('demo_event_counts',
    'SELECT category, event_type, count(*) AS n, max(global_position) AS last_position
       FROM ep.events GROUP BY category, event_type');
SELECT ep.append('order-1', 'Placed', '{"total": 30}');
SELECT ep.append('order-1', 'Shipped', '{}');
SELECT ep.append('order-2', 'Placed', '{"total": 12}');
SELECT category, event_type, n FROM demo_event_counts ORDER BY 1, 2;

SELECT ep.drop_incremental_view('demo_event_counts');
SELECT ep.drop_incremental_view('demo_daily_sales');
DROP TABLE demo_sales;
