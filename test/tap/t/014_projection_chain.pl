# A projection handler that appends events feeds the other projections:
# events a handler appends are decoded like any other, while the handler's
# other writes are dropped before decoding (origin DoNotReplicateId). Both
# projections are live (applied from decoding by the worker) when the
# events arrive; every order must reach the audit projection exactly once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('proj_chain');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE TABLE orders (id text PRIMARY KEY, n int NOT NULL);
CREATE TABLE audit (pos bigint PRIMARY KEY, order_id text NOT NULL);
CREATE FUNCTION on_order(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO orders VALUES (e.stream_id, 1)
    ON CONFLICT (id) DO UPDATE SET n = orders.n + 1;
    PERFORM ep.append('audit-' || e.global_position, 'Audited',
                      pg_catalog.jsonb_build_object('order', e.stream_id));
END $$;
CREATE FUNCTION on_audit(e ep.events) RETURNS void LANGUAGE sql AS $$
    INSERT INTO audit VALUES (e.global_position, e.data->>'order')
$$;
});
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM ep.workers')
  or die 'no worker';
$node->safe_psql('postgres', q{
SELECT ep.create_projection('orders', 'on_order(ep.events)', category => 'order');
SELECT ep.create_projection('audit', 'on_audit(ep.events)', category => 'audit');
});
# a first event, so that both projections have gone live through decoding
$node->safe_psql('postgres', q{SELECT ep.append('order-0', 'Placed', '{}')});
ok($node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM audit'),
	'the first audited order arrives');

$node->safe_psql('postgres', q{
SELECT count(ep.append('order-' || (i % 17), 'Placed', '{}')) FROM generate_series(1, 300) i;
});
$node->safe_psql('postgres', q{
SELECT format('SELECT ep.append(%L, %L, %L)', 'order-' || i, 'Placed', '{}') FROM generate_series(1, 50) i \gexec
});
ok($node->poll_query_until('postgres', q{
	SELECT (SELECT count(*) FROM audit) = 351
	   AND (SELECT sum(n) FROM orders) = 351
	   AND ep.wait_for_projection(NULL, '30 seconds')}),
	'every event appended by a handler reached the other projection');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ep.events WHERE category = 'audit'}), '351',
	'one audit event per order');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ep.projections WHERE parked > 0 OR status <> 'running'}), '0',
	'nothing parked, both running');
$node->stop;
done_testing();
