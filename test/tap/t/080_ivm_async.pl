# Async incremental views maintained by the worker from the WAL: exact under
# concurrent writers (four pgbench clients, joins, recompute shapes, a view
# over another view's storage), read-your-writes with ep.wait_for_view, no
# change applied twice or lost across an immediate stop in the middle of a
# batch, recompute after the slot is lost, and DROP DATABASE not blocked by
# the slot. The views belong to a non-superuser and use unqualified names.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);
use Test::More;
use EPTest;

my $node = ep_node('ivm_async');
$node->append_conf('postgresql.conf', "event_patterns.naptime = 100ms\nmax_slot_wal_keep_size = 64MB");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE shop_owner LOGIN;
CREATE SCHEMA shop AUTHORIZATION shop_owner;
GRANT USAGE ON SCHEMA shop TO PUBLIC;
});
$node->safe_psql('postgres', q{
SET ROLE shop_owner;
SET search_path = shop;
CREATE TABLE customers (id int PRIMARY KEY, segment text);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int, day date, amount numeric);
ALTER TABLE customers REPLICA IDENTITY FULL;
ALTER TABLE orders REPLICA IDENTITY FULL;
INSERT INTO customers SELECT g, 'seg' || g % 4 FROM generate_series(1, 50) g;
INSERT INTO orders (customer, day, amount)
SELECT 1 + g % 60, date '2026-01-01' + g % 7, g % 23 FROM generate_series(1, 2000) g;
-- a function of the owner's, found through the recorded search_path
CREATE FUNCTION weight(a numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT a * 2';
SELECT ep.create_incremental_view('revenue',
  'SELECT c.segment, o.day, count(*) AS n, sum(weight(o.amount)) AS revenue, max(o.amount) AS hi
     FROM orders o JOIN customers c ON c.id = o.customer GROUP BY c.segment, o.day', 'async');
SELECT ep.create_incremental_view('idle',
  'SELECT c.id FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id)', 'async');
-- slow maintenance (0.2 ms a row), so that a crash comes mid-batch
CREATE FUNCTION slow(a numeric) RETURNS numeric LANGUAGE plpgsql IMMUTABLE
    AS 'BEGIN PERFORM pg_sleep(0.0002); RETURN a; END';
SELECT ep.create_incremental_view('slow_orders',
  'SELECT customer, sum(slow(amount)) AS s FROM orders WHERE amount = 7 GROUP BY customer', 'async');
SELECT ep.create_incremental_view('per_segment',
  'SELECT segment, sum(revenue) AS revenue FROM revenue__ivm_data GROUP BY segment', 'async');
CREATE FUNCTION ivm_diff(v text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q text; a bigint; b bigint;
BEGIN
    SELECT query INTO q FROM ep.incremental_views WHERE name = v;
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $$;
});
my $views = "ARRAY['revenue', 'idle', 'per_segment', 'slow_orders']";
my $check = qq{SET search_path = shop;
SELECT string_agg(v || '=' || ivm_diff(v), ' ' ORDER BY v) FROM unnest($views) v};
my $want = 'idle=0 per_segment=0 revenue=0 slow_orders=0';

sub wait_all
{
	my ($what) = @_;
	is($node->safe_psql('postgres', qq{SET ROLE shop_owner; SET search_path = shop;
SELECT bool_and(ep.wait_for_view(v, '60 seconds')) FROM unnest($views) v}),
		't', "$what: every view caught up");
}

wait_all('first computation');
is($node->safe_psql('postgres', $check), $want, 'the worker computed every view');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger
 WHERE tgrelid IN ('shop.orders'::regclass, 'shop.customers'::regclass)}), '0',
	'no trigger on the base tables');

# read-your-writes in one session
is($node->safe_psql('postgres', q{SET search_path = shop;
INSERT INTO orders (customer, day, amount) VALUES (1, '2026-02-01', 999);
SELECT ep.wait_for_view('revenue', '30 seconds');
SELECT hi FROM revenue WHERE day = '2026-02-01'}), "t\n999", 'wait_for_view gives read-your-writes');
is($node->safe_psql('postgres', q{SET search_path = shop;
UPDATE orders SET amount = 5 WHERE day = '2026-02-01';
SELECT ep.wait_for_view('per_segment', '30 seconds');
SELECT count(*) FROM (SELECT * FROM per_segment EXCEPT
  SELECT c.segment, sum(weight(o.amount)) FROM orders o JOIN customers c ON c.id = o.customer GROUP BY 1) x}),
	"t\n0", 'wait_for_view of a view over a view waits for its base view first');

# four concurrent writers, many small transactions
my $writer = q{
\set op random(1, 10)
\set c random(1, 60)
\set d random(0, 8)
\set a random(0, 40)
\if :op <= 4
INSERT INTO shop.orders (customer, day, amount) VALUES (:c, date '2026-01-01' + :d, :a);
\elif :op <= 7
UPDATE shop.orders SET amount = :a, customer = :c WHERE id = (SELECT max(id) - :a FROM shop.orders);
\elif :op <= 9
DELETE FROM shop.orders WHERE id = (SELECT max(id) - :a * 3 FROM shop.orders);
\else
UPDATE shop.customers SET segment = 'seg' || :a % 5 WHERE id = :c;
\endif
};
$node->pgbench('--no-vacuum --client=4 --jobs=4 --transactions=500 --max-tries=100', 0,
	[qr{processed: 2000/2000}], [qr{^$}], 'concurrent writers', { 'async_writer' => $writer });
wait_all('after concurrent writers');
is($node->safe_psql('postgres', $check), $want, 'every view equals its query after concurrent writers');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ep.incremental_views
 WHERE name IN ('revenue', 'idle', 'per_segment', 'slow_orders') AND refresh = 'async' AND lag_bytes IS NOT NULL AND last_error IS NULL}),
	'4', 'ep.incremental_views shows the lag of async views');

# an immediate stop in the middle of a large batch: nothing applied twice or lost
$node->safe_psql('postgres', q{
INSERT INTO shop.orders (customer, day, amount)
SELECT 1 + g % 60, date '2026-01-01' + g % 9, 7 FROM generate_series(1, 6000) g;
UPDATE shop.orders SET amount = amount + 1 WHERE id % 3 = 0;});
my $progress = q{SELECT a.applied_lsn FROM ep.ivm_async a JOIN ep.ivm_views v USING (view_id) WHERE v.name = 'slow_orders'};
my $before = $node->safe_psql('postgres', $progress);
usleep(300_000);
is($node->safe_psql('postgres', $progress), $before, 'the slow view has not committed the batch yet');
$node->stop('immediate');
$node->start;
wait_all('after an immediate stop');
is($node->safe_psql('postgres', $check), $want, 'every view equals its query after an immediate stop mid-batch');

# the slot is lost: the views are recomputed
my $slot = $node->safe_psql('postgres', "SELECT 'ep_ivm_' || oid FROM pg_database WHERE datname = 'postgres'");
my $recomputes = $node->safe_psql('postgres', 'SELECT sum(recomputes) FROM ep.ivm_async');
$node->poll_query_until('postgres', qq{
SELECT pg_drop_replication_slot('$slot') IS NULL
  FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active
UNION ALL SELECT true WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot')})
	or die 'could not drop the slot';
$node->safe_psql('postgres', q{
DELETE FROM shop.orders WHERE id % 5 = 0;
UPDATE shop.customers SET segment = 'moved' WHERE id < 10;});
wait_all('after the slot was lost');
is($node->safe_psql('postgres', $check), $want, 'every view equals its query after the slot was lost');
ok($node->safe_psql('postgres', 'SELECT sum(recomputes) FROM ep.ivm_async') > $recomputes,
	'the views were recomputed');
$node->pgbench('--no-vacuum --client=2 --jobs=2 --transactions=200 --max-tries=100', 0,
	[qr{processed: 400/400}], [qr{^$}], 'writers after the slot loss', { 'async_writer2' => $writer });
wait_all('after more writers');
is($node->safe_psql('postgres', $check), $want, 'and exact again with the new slot');

# a database with an async view can be dropped
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', q{CREATE EXTENSION event_patterns;
CREATE TABLE t (k int, v int); ALTER TABLE t REPLICA IDENTITY FULL;
SELECT ep.create_incremental_view('tv', 'SELECT k, sum(v) AS s FROM t GROUP BY k', 'async');
INSERT INTO t VALUES (1, 1);
SELECT ep.wait_for_view('tv', '30 seconds');});
$node->safe_psql('postgres', 'DROP DATABASE other');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ep_ivm_%' AND database = 'other'"),
	'0', 'DROP DATABASE dropped its slot');
$node->stop;
done_testing();
