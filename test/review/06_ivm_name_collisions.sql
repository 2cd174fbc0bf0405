-- F6 (medium): jobs are keyed by (kind, target) with target = the view name as
-- typed; the drop event trigger deletes by that text as the superuser.
-- as alice:
CREATE TABLE alice.orders(id int PRIMARY KEY, amount numeric);
SELECT ep.create_incremental_view('sales', 'SELECT count(*) AS n, sum(amount) AS total FROM orders', 'deferred');
SELECT ep.schedule_refresh('sales', '1 hour');
-- as eve:
--   CREATE TABLE eve.t(x int);
--   SELECT ep.create_incremental_view('sales', 'SELECT count(*) AS n FROM t', 'full');
--   DROP VIEW eve.sales;                  -- sql_drop trigger (SECURITY DEFINER) -> _ivm_cleanup
-- as alice: SELECT * FROM ep.jobs;        -> 0 rows: her refresh job is gone
-- squatting: as eve
--   INSERT INTO ep.job_registry(kind, target, schedule, command) VALUES ('view_refresh', 'inventory', '1 year', 'SELECT 1');
-- as alice: SELECT ep.create_incremental_view('inventory', ..., 'deferred'); SELECT ep.schedule_refresh('inventory', '1 hour');
--   -> ERROR: new row violates row-level security policy (USING expression) for table "job_registry"
