-- API contract of DESIGN.md section 4: incremental materialized views.
BEGIN;
SELECT plan(14);

SELECT function_returns('ep', 'create_incremental_view', ARRAY['text', 'text', 'text'], 'void');
SELECT function_returns('ep', 'refresh_view', ARRAY['text', 'boolean'], 'void');
SELECT function_returns('ep', 'schedule_refresh', ARRAY['text', 'interval'], 'void');
SELECT function_returns('ep', 'unschedule_refresh', ARRAY['text'], 'void');
SELECT function_returns('ep', 'drop_incremental_view', ARRAY['text'], 'void');
SELECT has_view('ep', 'incremental_views', 'ep.incremental_views exists');
SELECT columns_are('ep', 'incremental_views', ARRAY['name', 'query', 'refresh', 'schedule',
    'last_refreshed_at', 'pending_changes', 'is_stale', 'last_refresh_ms', 'last_error',
    'lag_seconds', 'lag_bytes']);

CREATE TABLE tap_facts (grp int, amount numeric);
INSERT INTO tap_facts VALUES (1, 10), (1, 5), (NULL, 2);
SELECT lives_ok($$SELECT ep.create_incremental_view('tap_v',
    'SELECT grp, count(*) AS n, sum(amount) AS total FROM tap_facts GROUP BY grp')$$,
    'create an immediate view (default)');
SELECT columns_are('tap_v', ARRAY['grp', 'n', 'total'], 'the view shows exactly the query''s columns');
SELECT lives_ok($$UPDATE tap_facts SET amount = amount * 2$$, 'writes maintain it');
SELECT results_eq($$SELECT grp, n, total FROM tap_v ORDER BY grp$$,
                  $$SELECT grp, count(*), sum(amount) FROM tap_facts GROUP BY grp ORDER BY grp$$,
                  'the view equals its query');
SELECT throws_ok($$SELECT ep.create_incremental_view('tap_w',
    'SELECT grp, rank() OVER (ORDER BY amount) FROM tap_facts', 'deferred')$$,
    '0A000', NULL, 'unsupported shapes raise 0A000');
SELECT lives_ok($$SELECT ep.create_incremental_view('tap_w',
    'SELECT grp, rank() OVER (ORDER BY amount) FROM tap_facts', 'full')$$,
    'any query works with full');
SELECT is((SELECT refresh FROM ep.incremental_views WHERE name = 'tap_w'), 'full', 'listed with its mode');

SELECT * FROM finish();
ROLLBACK;
