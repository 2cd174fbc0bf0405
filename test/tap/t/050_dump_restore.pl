# pg_dump of a database using every part of the extension, restored into a
# new database with pg_restore: events (positions, versions, ids), streams
# and their limits, subscriptions and checkpoints, upcasters, snapshot
# policies, jobs with their owner, incremental views (immediate join view,
# deferred view with a schedule) and a projection come back, and keep
# working: appends continue the global order, views are maintained, the
# projection catches up, idempotent retries are recognised.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('dump_restore');
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
CREATE EXTENSION event_patterns;
CREATE ROLE dump_owner;
GRANT CREATE ON SCHEMA public TO dump_owner;

SELECT ep.append('acct-1', 'Opened', '{"owner": "ada"}', NULL, 0,
                 '0b7c5c9e-5d1e-4c59-9a38-6d8f3c3f0a01');
SELECT ep.append_events('acct-1', '[{"type": "Deposited", "data": {"amount": 10}},
                                    {"type": "Deposited", "data": {"amount": 5}, "schema_version": 2}]');
SELECT ep.append('acct-2', 'Opened', '{}');
SELECT ep.set_stream_metadata('acct-2', max_count => 10);
SELECT ep.create_subscription('mailer', 'acct');
SELECT ep.ack('mailer', 2);

CREATE FUNCTION up_cents(d jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT d || jsonb_build_object('cents', (d->>'amount')::int * 100) $$;
SELECT ep.register_upcaster('Deposited', 1, 'up_cents(jsonb)');
CREATE FUNCTION balance(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
                                     + coalesce((e.data->>'amount')::numeric, 0)) $$;
SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', 2);
SELECT ep.aggregate('acct-1', 'balance(jsonb, ep.events)');

CREATE TABLE orders (id int PRIMARY KEY, customer int, amount int);
CREATE TABLE customers (id int PRIMARY KEY, region text);
INSERT INTO customers VALUES (1, 'north'), (2, 'south');
INSERT INTO orders SELECT g, 1 + g % 2, g FROM generate_series(1, 20) g;
ALTER TABLE orders OWNER TO dump_owner;
ALTER TABLE customers OWNER TO dump_owner;
SET ROLE dump_owner;
SELECT ep.create_incremental_view('region_sales',
    'SELECT c.region, count(*) AS n, sum(o.amount) AS total, max(o.amount) AS top
       FROM public.orders o JOIN public.customers c ON c.id = o.customer GROUP BY c.region');
SELECT ep.create_incremental_view('order_counts',
    'SELECT customer, count(*) AS n FROM public.orders GROUP BY customer', 'deferred');
SELECT ep.schedule_refresh('order_counts', '1 hour');
RESET ROLE;
-- a view applied in C (ivm_fast.c) over a table with a dropped column:
-- the restore numbers its columns differently
CREATE TABLE facts2 (junk int, grp int, amount int, note text);
ALTER TABLE facts2 DROP COLUMN junk;
INSERT INTO facts2 SELECT g % 3, g, 'n' || g FROM generate_series(1, 30) g;
SELECT ep.create_incremental_view('grp_totals',
    'SELECT grp, count(*) AS n, sum(amount) AS total, max(note) AS last_note FROM public.facts2 GROUP BY grp');

CREATE TABLE balances (stream_id text PRIMARY KEY, total numeric);
CREATE FUNCTION project_balance(e ep.events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.balances VALUES (e.stream_id, (e.data->>'amount')::numeric)
    ON CONFLICT (stream_id) DO UPDATE SET total = balances.total + excluded.total $$;
SELECT ep.create_projection('balances', 'project_balance(ep.events)', ARRAY['Deposited']);
});
ok($node->poll_query_until('src', "SELECT total = 15 FROM balances WHERE stream_id = 'acct-1'"),
	'the projection caught up before the dump');

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', 'src', '-f', $dump ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', 'dst', $dump ],
	'pg_restore into a new database');

# what was stored comes back as it was
is($node->safe_psql('dst', q{
	SELECT string_agg(global_position || ':' || stream_id || ':' || stream_version || ':' || schema_version,
	                  ' ' ORDER BY global_position) FROM ep.events}),
	$node->safe_psql('src', q{
	SELECT string_agg(global_position || ':' || stream_id || ':' || stream_version || ':' || schema_version,
	                  ' ' ORDER BY global_position) FROM ep.events}),
	'events keep their positions, versions and schema versions');
is($node->safe_psql('dst', q{
	SELECT max_count FROM ep.streams WHERE stream_id = 'acct-2'}), '10', 'stream limits are restored');
is($node->safe_psql('dst', q{SELECT position FROM ep.subscription_checkpoints WHERE subscription = 'mailer'}),
	'2', 'subscription checkpoints are restored');
is($node->safe_psql('dst', q{
	SELECT data->>'cents' FROM ep.read_stream('acct-1') WHERE stream_version = 2}),
	'1000', 'upcasters are restored and applied on read');
is($node->safe_psql('dst', q{SELECT ep.aggregate('acct-1', 'balance(jsonb, ep.events)')->>'balance'}),
	'15', 'folds give the same state');
is($node->safe_psql('dst', q{
	SELECT kind || ':' || target || ':' || owner FROM ep.jobs WHERE kind = 'view_refresh'}),
	'view_refresh:order_counts:dump_owner', 'the view refresh job comes back with its owner');

# and keeps working
is($node->safe_psql('dst', q{
	SELECT ep.append('acct-1', 'Opened', '{"owner": "ada"}', NULL, 0, '0b7c5c9e-5d1e-4c59-9a38-6d8f3c3f0a01')}),
	'1', 'an idempotent retry of a restored append is recognised');
is($node->safe_psql('dst', q{SELECT ep.append('acct-1', 'Deposited', '{"amount": 7}')}),
	'4', 'appends continue the stream');
is($node->safe_psql('dst', q{
	SELECT (SELECT max(global_position) FROM ep.events WHERE stream_id = 'acct-1')
	     > (SELECT max(global_position) FROM ep.events WHERE stream_id <> 'acct-1')}),
	't', 'and the global order');
is($node->safe_psql('dst', q{
	SELECT count(*) FROM ep.read_all(0, 100)}), '5', 'read_all sees every event');

$node->safe_psql('dst', q{
	INSERT INTO orders VALUES (100, 2, 1000);
	UPDATE customers SET region = 'east' WHERE id = 1;
	SELECT ep.refresh_view('order_counts');
});
is($node->safe_psql('dst', q{
	SELECT (SELECT count(*) FROM (SELECT * FROM region_sales EXCEPT ALL
	          SELECT c.region, count(*), sum(o.amount), max(o.amount) FROM orders o
	            JOIN customers c ON c.id = o.customer GROUP BY c.region) a)
	     + (SELECT count(*) FROM (SELECT c.region, count(*), sum(o.amount), max(o.amount) FROM orders o
	            JOIN customers c ON c.id = o.customer GROUP BY c.region
	          EXCEPT ALL SELECT * FROM region_sales) b)
	     + (SELECT count(*) FROM (SELECT * FROM order_counts EXCEPT ALL
	          SELECT customer, count(*) FROM orders GROUP BY customer) c)
	     + (SELECT count(*) FROM (SELECT customer, count(*) FROM orders GROUP BY customer
	          EXCEPT ALL SELECT * FROM order_counts) d)}),
	'0', 'restored incremental views are maintained and equal their queries');
$node->safe_psql('dst', q{
	UPDATE facts2 SET amount = amount + 5, note = 'z' WHERE amount = 4;
	INSERT INTO facts2 VALUES (1, 7, 'zz');
});
is($node->safe_psql('dst', q{
	SELECT (SELECT fast_path IS NOT NULL FROM ep.ivm_views WHERE name = 'grp_totals')::text || ' '
	     || ((SELECT count(*) FROM (SELECT * FROM grp_totals EXCEPT ALL
	          SELECT grp, count(*), sum(amount), max(note) FROM facts2 GROUP BY grp) a)
	     + (SELECT count(*) FROM (SELECT grp, count(*), sum(amount), max(note) FROM facts2 GROUP BY grp
	          EXCEPT ALL SELECT * FROM grp_totals) b))}),
	'true 0', 'a view applied in C is maintained after the restore renumbered its columns');
is($node->safe_psql('dst', q{SELECT region FROM region_sales ORDER BY region}),
	"east\nsouth", 'the immediate join view saw both changes');

ok($node->poll_query_until('dst', "SELECT total = 22 FROM balances WHERE stream_id = 'acct-1'"),
	'the restored projection resumes where it was (no event applied twice)');
is($node->safe_psql('dst', q{SELECT name || ':' || status FROM ep.projections}),
	'balances:running', 'and runs');

$node->stop;
done_testing();
