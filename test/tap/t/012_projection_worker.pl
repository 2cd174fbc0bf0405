# Async projections applied by the per-database background worker (no manual
# apply rounds): exactly once and in order across a crash (immediate stop) in
# the middle of a burst and across pg_terminate_backend of the worker;
# read-your-writes through ep.wait_for_projection; poison events parked by the
# worker; handlers run as the projection's owner; lag is reported.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use EPTest;

my $node = ep_node('proj_worker');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE reader LOGIN;
CREATE TABLE applied (n bigserial, pos bigint NOT NULL, who name NOT NULL);
GRANT INSERT ON applied TO reader;
GRANT USAGE ON SEQUENCE applied_n_seq TO reader;
CREATE FUNCTION record(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'Poison' THEN
        RAISE EXCEPTION 'cannot digest event %', e.global_position;
    END IF;
    INSERT INTO public.applied (pos, who) VALUES (e.global_position, current_user);
END $$;
GRANT EXECUTE ON FUNCTION record(ep.events) TO reader;
CREATE PROCEDURE burst(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM ep.append('s-' || (i % 7), 'E', pg_catalog.jsonb_build_object('i', i));
        COMMIT;
    END LOOP;
END $$;
});
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM ep.workers')
  or die 'no worker';
$node->safe_psql('postgres', q{
SET ROLE reader;
SELECT ep.create_projection('all', 'record(ep.events)');
});

# read-your-writes: the append is applied when wait_for_projection returns
$node->safe_psql('postgres', "SELECT ep.append('ryw-1', 'E', '{}')");
is($node->safe_psql('postgres', q{
SELECT ep.append('ryw-1', 'E', '{}');
SELECT ep.wait_for_projection('all', '30 seconds');
SELECT count(*) FROM applied a JOIN ep.events e ON e.global_position = a.pos WHERE e.stream_id = 'ryw-1'}),
	"2\nt\n2", 'wait_for_projection returns once the worker applied everything committed before');
is($node->safe_psql('postgres', "SELECT DISTINCT who FROM applied"), 'reader',
	'the worker runs the handler as the projection owner');

# a poison event is retried, parked, and the projection goes on
$node->safe_psql('postgres', q{
SELECT ep.append('poison-1', 'Poison', '{}');
SELECT ep.append('poison-1', 'E', '{}');
});
ok($node->poll_query_until('postgres', "SELECT parked = 1 FROM ep.projections WHERE name = 'all'"),
	'the worker parks a poison event');
ok($node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM applied a JOIN ep.events e ON e.global_position = a.pos
 WHERE e.stream_id = 'poison-1'}), 'and applies the events after it');
like($node->safe_psql('postgres', "SELECT error FROM ep.parked_events"), qr/cannot digest/,
	'ep.parked_events shows the error');

# a crash in the middle of a burst the worker is applying
my ($out, $err) = ('', '');
my $writer = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', 'CALL burst(1000000)' ],
	'>', \$out, '2>', \$err);
$node->poll_query_until('postgres', 'SELECT count(*) > 2000 FROM applied')
  or die 'the worker applied nothing';
$node->stop('immediate');
$writer->finish;
$node->start;

# and a worker killed in the middle of another burst
$writer = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', 'CALL burst(3000)' ],
	'>', \$out, '2>', \$err);
$node->poll_query_until('postgres', 'SELECT count(*) = 1 AND bool_and(pid IS NOT NULL) FROM ep.workers')
  or die 'no worker after restart';
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM applied');
$node->poll_query_until('postgres', "SELECT count(*) > $before + 200 FROM applied");
$node->safe_psql('postgres', 'SELECT pg_terminate_backend(pid) FROM ep.workers');
$writer->finish;

ok($node->poll_query_until('postgres', "SELECT ep.wait_for_projection('all', '5 seconds')"),
	'the restarted worker catches up');
my $events = $node->safe_psql('postgres', "SELECT count(*) FROM ep.events WHERE event_type = 'E'");
cmp_ok($events, '>', 3000, "the bursts committed events ($events)");
is($node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT pos) FROM applied'), '0',
	'no event applied twice');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ep.events e
 WHERE e.event_type = 'E' AND NOT EXISTS (SELECT 1 FROM applied a WHERE a.pos = e.global_position)}),
	'0', 'no event skipped');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
    SELECT e.stream_version, lag(e.stream_version) OVER (PARTITION BY e.stream_id ORDER BY a.n) AS prev
      FROM applied a JOIN ep.events e ON e.global_position = a.pos
     WHERE e.stream_id NOT LIKE 'poison%') x
 WHERE x.prev IS NOT NULL AND x.prev <> x.stream_version - 1}),
	'0', 'each stream applied in order');
is($node->safe_psql('postgres', "SELECT lag_events, status FROM ep.projections WHERE name = 'all'"),
	'0|running', 'no lag once caught up');

$node->stop;
done_testing();
