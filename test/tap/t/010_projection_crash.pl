# Async projections apply every committed event and table change exactly once
# across an immediate shutdown (crash) in the middle of a burst of appends
# and apply rounds. Apply rounds are driven by ep.apply_projections().
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use EPTest;

my $node = ep_node('proj_crash');
# this test drives the apply rounds itself; 012_projection_worker.pl is the
# same story with the background worker applying
$node->append_conf('postgresql.conf', 'event_patterns.enabled = off');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE TABLE applied (n bigserial, pos bigint NOT NULL);
CREATE FUNCTION record(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.applied (pos) VALUES (e.global_position) $$;
CREATE TABLE src (id int PRIMARY KEY, v int);
CREATE TABLE cdc (n bigserial, op text, id int);
CREATE FUNCTION capture(op text, o jsonb, n jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.cdc (op, id) VALUES (op, COALESCE((n->>'id')::int, (o->>'id')::int)) $$;
CREATE PROCEDURE burst(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM ep.append('s-' || (i % 7), 'E', pg_catalog.jsonb_build_object('i', i));
        INSERT INTO src VALUES (i, i);
        IF i % 3 = 0 THEN UPDATE src SET v = v + 1 WHERE id = i - 1; END IF;
        COMMIT;
    END LOOP;
END $$;
CREATE PROCEDURE applier(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM ep.apply_projections(200);
        COMMIT;
    END LOOP;
END $$;
});
# some events before the projection exists: caught up from the table
$node->safe_psql('postgres', "CALL burst(50)");
$node->safe_psql('postgres', q{
SELECT ep.create_projection('all', 'record(ep.events)');
SELECT ep.create_table_projection('src_cdc', 'src', 'capture(text, jsonb, jsonb)');
SELECT ep.apply_projections();
});

# a burst of appends and apply rounds, then a crash in the middle
$node->safe_psql('postgres', "TRUNCATE src");
my ($out1, $err1, $out2, $err2) = ('', '', '', '');
my $connstr = $node->connstr('postgres');
my $writer = IPC::Run::start(
	[ 'psql', '-X', '-d', $connstr, '-c', 'CALL burst(100000)' ],
	'>', \$out1, '2>', \$err1);
my $applier = IPC::Run::start(
	[ 'psql', '-X', '-d', $connstr, '-c', 'CALL applier(100000)' ],
	'>', \$out2, '2>', \$err2);

# wait until the applier has applied something from decoding mid-burst
$node->poll_query_until('postgres',
	"SELECT decoded_count > 500 FROM ep.projections WHERE name = 'all'")
  or die "the applier never applied decoded events";
$node->stop('immediate');
$writer->finish;
$applier->finish;
$node->start;

my $events = $node->safe_psql('postgres', 'SELECT count(*) FROM ep.events');
ok($events > 250, "the burst committed events before the crash ($events)");

# drain: apply until nothing is left
for my $i (1 .. 200)
{
	my $n = $node->safe_psql('postgres', 'SELECT ep.apply_projections(100000)');
	my $lag = $node->safe_psql('postgres',
		"SELECT lag_events FROM ep.projections WHERE name = 'all'");
	last if $n == 0 && $lag == 0;
}

is($node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT pos) FROM applied'),
	'0', 'no event applied twice across the crash');
is($node->safe_psql('postgres',
	'SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT 1 FROM applied a WHERE a.pos = e.global_position)'),
	'0', 'no committed event skipped');
is($node->safe_psql('postgres',
	'SELECT count(*) FROM applied a WHERE NOT EXISTS (SELECT 1 FROM ep.events e WHERE a.pos = e.global_position)'),
	'0', 'nothing applied that was not committed');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
    SELECT e.stream_version, lag(e.stream_version) OVER (PARTITION BY e.stream_id ORDER BY a.n) AS prev
      FROM applied a JOIN ep.events e ON e.global_position = a.pos) x
 WHERE x.prev IS NOT NULL AND x.prev <> x.stream_version - 1}),
	'0', 'each stream applied in order, without holes');
ok($node->safe_psql('postgres',
	"SELECT decoded_count > 0 AND applied_count > decoded_count FROM ep.projections WHERE name = 'all'") eq 't',
	'events came both from the table (catch-up) and from decoding');

# the table projection saw every committed insert of src exactly once
# (after the TRUNCATE decoded before the burst)
my $cdc_dups = $node->safe_psql('postgres', q{
SELECT count(*) FROM (SELECT id FROM cdc
                       WHERE op = 'INSERT'
                         AND n > (SELECT max(n) FROM cdc WHERE op = 'TRUNCATE')
                       GROUP BY id HAVING count(*) > 1) d});
is($cdc_dups, '0', 'no table change applied twice across the crash');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM src s WHERE NOT EXISTS (
    SELECT 1 FROM cdc c WHERE c.op = 'INSERT' AND c.id = s.id
      AND c.n > (SELECT max(n) FROM cdc WHERE op = 'TRUNCATE'))}),
	'0', 'no committed table change skipped');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM cdc c WHERE c.op = 'UPDATE'}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM src WHERE v <> id}),
	'every committed update captured once');
is($node->safe_psql('postgres', 'SELECT ep.wait_for_projection(\'all\', \'5 s\')'),
	't', 'wait_for_projection: everything committed is applied');

# concurrent writers: positions commit out of order while rounds decode
$node->safe_psql('postgres', q{
CREATE PROCEDURE append_only(prefix text, n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM ep.append(prefix || '-' || (i % 5), 'E', '{}');
        IF i % 3 = 0 THEN COMMIT; END IF;
    END LOOP;
    COMMIT;
END $$;
});
my @procs;
for my $w (1 .. 3)
{
	my ($o, $e) = ('', '');
	push @procs, IPC::Run::start(
		[ 'psql', '-X', '-d', $connstr, '-c', "CALL append_only('w$w', 1500)" ],
		'>', \$o, '2>', \$e);
}
my ($o2, $e2) = ('', '');
my $ap = IPC::Run::start(
	[ 'psql', '-X', '-d', $connstr, '-c', 'CALL applier(300)' ],
	'>', \$o2, '2>', \$e2);
$_->finish for @procs;
$ap->finish;
for my $i (1 .. 50)
{
	last if $node->safe_psql('postgres', 'SELECT ep.apply_projections(100000)') == 0;
}
is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) - count(DISTINCT pos) FROM applied)
     + (SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT 1 FROM applied a WHERE a.pos = e.global_position))}),
	'0', 'concurrent writers: every event applied exactly once');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
    SELECT e.stream_version, lag(e.stream_version) OVER (PARTITION BY e.stream_id ORDER BY a.n) AS prev
      FROM applied a JOIN ep.events e ON e.global_position = a.pos) x
 WHERE x.prev IS NOT NULL AND x.prev <> x.stream_version - 1}),
	'0', 'concurrent writers: each stream applied in order');

$node->stop;
done_testing();
