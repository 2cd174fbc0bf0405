# Cross-service reporting: two service clusters (orders, customers) publish
# their tables with native logical replication; a reporting cluster
# subscribes to both and keeps an async view joining them (revenue per
# customer segment per day), maintained from its own WAL — the apply
# worker's changes — exactly, under a random write mix on both publishers.
# Immediate and deferred views over subscribed tables are refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use EPTest;

my $orders = ep_node('orders_svc', preload => 0);
my $customers = ep_node('customers_svc', preload => 0);
my $report = ep_node('reporting');
$report->append_conf('postgresql.conf', "event_patterns.naptime = 100ms");
$_->start for ($orders, $customers, $report);

$orders->safe_psql('postgres', q{
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, day date NOT NULL, amount numeric NOT NULL);
INSERT INTO orders (customer_id, day, amount)
SELECT 1 + g % 200, date '2026-03-01' + g % 10, g % 50 FROM generate_series(1, 5000) g;
CREATE PUBLICATION orders_pub FOR TABLE orders;});
$customers->safe_psql('postgres', q{
CREATE TABLE customers (id int PRIMARY KEY, segment text NOT NULL, name text);
INSERT INTO customers SELECT g, (ARRAY['retail', 'smb', 'enterprise'])[1 + g % 3], 'c' || g
  FROM generate_series(1, 200) g;
CREATE PUBLICATION customers_pub FOR TABLE customers;});

# the reporting database: the same tables, whole old rows in its own WAL
$report->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, day date NOT NULL, amount numeric NOT NULL);
CREATE TABLE customers (id int PRIMARY KEY, segment text NOT NULL, name text);
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE customers REPLICA IDENTITY FULL;
CREATE ROLE analyst LOGIN;
GRANT SELECT ON orders, customers TO analyst;
CREATE SCHEMA reports AUTHORIZATION analyst;});
my $oc = $orders->connstr . ' dbname=postgres';
my $cc = $customers->connstr . ' dbname=postgres';
$report->safe_psql('postgres', "CREATE SUBSCRIPTION orders_sub CONNECTION '$oc' PUBLICATION orders_pub");
$report->safe_psql('postgres', "CREATE SUBSCRIPTION customers_sub CONNECTION '$cc' PUBLICATION customers_pub");
$report->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')")
	or die 'initial copy did not finish';

my $query = q{SELECT c.segment, o.day, count(*) AS orders, sum(o.amount) AS revenue
  FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.segment, o.day};

# immediate and deferred views over subscribed tables would go stale
my ($rc, $out, $err) = $report->psql('postgres',
	"SELECT ep.create_incremental_view('rev_now', \$q\$$query\$q\$, 'immediate')");
like($err, qr/would go stale: the table is replicated by a subscription.*HINT:.*refresh => 'async'/s,
	'an immediate view over a subscribed table is refused with a hint to use async');
($rc, $out, $err) = $report->psql('postgres',
	"SELECT ep.create_incremental_view('rev_later', \$q\$$query\$q\$, 'deferred')");
like($err, qr/replicated by a subscription/, 'so is a deferred one');

$report->safe_psql('postgres', qq{SET ROLE analyst; SET search_path = reports;
SELECT ep.create_incremental_view('revenue', \$q\$$query\$q\$, 'async');
SELECT ep.create_incremental_view('segment_share',
  'SELECT c.segment, count(DISTINCT o.customer_id) AS buyers FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.segment', 'async');});
is($report->safe_psql('postgres', q{SELECT ep.wait_for_view('reports.revenue', '60 seconds')}), 't',
	'the view is computed on the subscriber');

sub check
{
	my ($what) = @_;
	$orders->wait_for_catchup('orders_sub');
	$customers->wait_for_catchup('customers_sub');
	is($report->safe_psql('postgres', q{SET ROLE analyst;
SELECT ep.wait_for_view('reports.revenue', '60 seconds') AND ep.wait_for_view('reports.segment_share', '60 seconds')}),
		't', "$what: the views caught up");
	# the subscriber holds exactly the publishers' rows ...
	my $po = $orders->safe_psql('postgres', 'SELECT count(*), sum(amount), sum(customer_id * extract(day FROM day)) FROM orders');
	my $pc = $customers->safe_psql('postgres', "SELECT count(*), string_agg(id || segment, ',' ORDER BY id) FROM customers");
	is($report->safe_psql('postgres', 'SELECT count(*), sum(amount), sum(customer_id * extract(day FROM day)) FROM orders'),
		$po, "$what: orders replicated");
	is($report->safe_psql('postgres', "SELECT count(*), string_agg(id || segment, ',' ORDER BY id) FROM customers"),
		$pc, "$what: customers replicated");
	# ... and the views equal their queries (EXCEPT ALL both ways)
	is($report->safe_psql('postgres', qq{
SELECT (SELECT count(*) FROM (SELECT * FROM reports.revenue EXCEPT ALL $query) a)
     + (SELECT count(*) FROM ($query EXCEPT ALL SELECT * FROM reports.revenue) b)
     + (SELECT count(*) FROM (SELECT * FROM reports.segment_share EXCEPT ALL
          SELECT c.segment, count(DISTINCT o.customer_id) FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.segment) x)
     + (SELECT count(*) FROM (SELECT c.segment, count(DISTINCT o.customer_id) FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.segment
          EXCEPT ALL SELECT * FROM reports.segment_share) y)}),
		'0', "$what: the views equal their queries");
}
check('initial copy');

# a random write mix on both publishers at once
my $ow = $orders->basedir . '/orders_writer.sql';
PostgreSQL::Test::Utils::append_to_file($ow, q{
\set op random(1, 10)
\set c random(1, 220)
\set d random(0, 12)
\set a random(0, 99)
\if :op <= 5
INSERT INTO orders (customer_id, day, amount) VALUES (:c, date '2026-03-01' + :d, :a);
\elif :op <= 8
UPDATE orders SET amount = :a, customer_id = :c WHERE id = (SELECT max(id) - :a * 7 FROM orders);
\else
DELETE FROM orders WHERE id = (SELECT max(id) - :a * 11 FROM orders);
\endif
});
my $cw = $customers->basedir . '/customers_writer.sql';
PostgreSQL::Test::Utils::append_to_file($cw, q{
\set op random(1, 10)
\set c random(1, 220)
\set s random(1, 4)
\if :op <= 6
UPDATE customers SET segment = (ARRAY['retail', 'smb', 'enterprise', 'public'])[:s] WHERE id = :c;
\elif :op <= 8
INSERT INTO customers VALUES (:c, 'new', 'n' || :c) ON CONFLICT (id) DO UPDATE SET name = excluded.name || '+';
\else
DELETE FROM customers WHERE id = :c AND :c > 180;
\endif
});
for my $round (1 .. 2)
{
	my @runs;
	my %out;
	for ([ 'orders', $orders, $ow, 1500 ], [ 'customers', $customers, $cw, 400 ])
	{
		my ($name, $node, $script, $n) = @$_;
		$out{$name} = '';
		push @runs, IPC::Run::start([ 'pgbench', '-n', '-c', '2', '-j', '2', '-t', $n, '-f', $script,
			'-d', $node->connstr('postgres') ], '>', \$out{$name}, '2>', \my $e);
	}
	$_->finish for @runs;
	like($out{orders}, qr{processed: 3000/3000}, "write mix $round: orders written");
	like($out{customers}, qr{processed: 800/800}, "write mix $round: customers written");
	check("write mix $round");
}

# the reporting worker is stopped hard while replication goes on
$report->stop('immediate');
$orders->safe_psql('postgres', q{UPDATE orders SET amount = amount + 1 WHERE id % 4 = 0;
INSERT INTO orders (customer_id, day, amount) SELECT 1 + g % 200, '2026-03-05', 3 FROM generate_series(1, 2000) g;});
$customers->safe_psql('postgres', q{UPDATE customers SET segment = 'smb' WHERE id % 10 = 0;});
$report->start;
check('after an immediate stop of the subscriber');
is($report->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('orders'::regclass, 'customers'::regclass) AND NOT tgisinternal}),
	'0', 'no trigger on the subscribed tables');

$_->stop for ($report, $orders, $customers);
done_testing();
