# Read nodes: the no-skip guarantee across native logical replication.
# Writers append to random streams on the writer and commit out of order
# (random sleeps between append and commit, some roll back), while readers
# on two read nodes -- a database of the same cluster and a database of
# another cluster -- page through ep.read_all / ep.read_category / ep.poll
# from the last position they saw. Each must receive every committed event
# exactly once, in ascending position order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use EPTest;

my $conf = "max_connections = 40\nmax_wal_senders = 12\nmax_replication_slots = 20\n"
  . "max_logical_replication_workers = 8\n";
my $a = ep_node('writer_cluster');
$a->append_conf('postgresql.conf', $conf);
$a->start;
my $b = ep_node('reader_cluster');
$b->append_conf('postgresql.conf', $conf);
$b->start;

my $reader_sql = q{
CREATE EXTENSION event_patterns;
CREATE TABLE seen (seq bigserial PRIMARY KEY, pos bigint NOT NULL, via text NOT NULL);
CREATE PROCEDURE reader(p_seconds float8, p_via text)
LANGUAGE plpgsql AS $$
DECLARE
    last bigint := 0;
    r record;
    deadline timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
    n int;
BEGIN
    LOOP
        n := 0;
        IF p_via = 'all' THEN
            FOR r IN SELECT global_position FROM ep.read_all(last, 200) LOOP
                INSERT INTO seen (pos, via) VALUES (r.global_position, p_via);
                last := r.global_position; n := n + 1;
            END LOOP;
        ELSIF p_via = 'poll' THEN
            FOR r IN SELECT global_position FROM ep.poll('sub', 200) LOOP
                INSERT INTO seen (pos, via) VALUES (r.global_position, p_via);
                last := r.global_position; n := n + 1;
            END LOOP;
            IF n > 0 THEN PERFORM ep.ack('sub', last); END IF;
        ELSE
            FOR r IN SELECT global_position FROM ep.read_category(p_via, last, 200) LOOP
                INSERT INTO seen (pos, via) VALUES (r.global_position, p_via);
                last := r.global_position; n := n + 1;
            END LOOP;
        END IF;
        COMMIT;
        EXIT WHEN n = 0 AND clock_timestamp() > deadline;
        IF n = 0 THEN PERFORM pg_sleep(0.002); END IF;
    END LOOP;
END
$$;
};

$a->safe_psql('postgres', 'CREATE DATABASE w');
$a->safe_psql('postgres', 'CREATE DATABASE r1');
$a->safe_psql('w', 'CREATE EXTENSION event_patterns');
# some history before the readers exist: it arrives with the initial copy
$a->safe_psql('w', q{SELECT ep.append('stress-' || (i % 40), 'E', '{}') FROM generate_series(1, 300) i});
$a->safe_psql('w', 'SELECT ep.publish_store()');

$a->safe_psql('r1', $reader_sql);
$b->safe_psql('postgres', 'CREATE DATABASE r2');
$b->safe_psql('r2', $reader_sql);
my $wconn = $a->connstr('w');
$a->safe_psql('r1', "SELECT ep.follow_store('same_cluster', \$\$$wconn\$\$)");
$b->safe_psql('r2', "SELECT ep.follow_store('other_cluster', \$\$$wconn\$\$)");
for my $r ([ $a, 'r1' ], [ $b, 'r2' ])
{
	$r->[0]->safe_psql($r->[1], "SELECT ep.create_subscription('sub')");
}

my $script = $a->basedir . '/writer.sql';
open my $fh, '>', $script or die $!;
print $fh <<'SQL';
\set s random(1, 40)
\set d random(0, 4000)
\set batch random(1, 4)
\set abort random(1, 10)
BEGIN;
SELECT ep.append_events('stress-' || :s,
    (SELECT jsonb_agg(jsonb_build_object('type', 'E')) FROM generate_series(1, :batch)));
SELECT pg_sleep(:d / 1000000.0);
SELECT CASE WHEN :abort = 1 THEN 'ROLLBACK' ELSE 'COMMIT' END AS fin \gset
:fin;
SQL
close $fh;

my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '8', '-j', '4', '-T', '8', '-f', $script,
	  '-h', $a->host, '-p', $a->port, 'w' ],
	'>', \$out, '2>', \$err);

# readers on both nodes at once: global order, one category, a subscription
my @bg;
for my $r ([ $a, 'r1' ], [ $b, 'r2' ])
{
	for my $via ('stress', 'poll')
	{
		my $s = $r->[0]->background_psql($r->[1]);
		$s->query_until(qr/started/, "\\echo started\nCALL reader(14, '$via');\n");
		push @bg, $s;
	}
}
my ($o1, $e1) = ('', '');
my $r2all = IPC::Run::start(
	[ 'psql', '-X', '-d', $b->connstr('r2'), '-c', "CALL reader(14, 'all')" ],
	'>', \$o1, '2>', \$e1);
$a->safe_psql('r1', "CALL reader(14, 'all')", timeout => 180);
$r2all->finish;
$_->quit for @bg;
$bench->finish;
like($out, qr/number of transactions actually processed: [1-9]/, 'writers ran')
  or diag($err);

my $events = $a->safe_psql('w', 'SELECT count(*) FROM ep.events');
cmp_ok($events, '>', 400, "writers committed $events events");

# the readers read until they saw nothing new after the deadline; by then
# replication must have delivered everything
for my $r ([ $a, 'r1' ], [ $b, 'r2' ])
{
	my ($node, $db) = @$r;
	is($node->safe_psql($db, 'SELECT count(*) FROM ep.events'), $events,
		"$db: the copy holds every committed event");
	for my $via ('all', 'stress', 'poll')
	{
		is($node->safe_psql($db, "SELECT count(*) FROM seen WHERE via = '$via'"),
			$events, "$db '$via': received as many events as were committed");
		is($node->safe_psql($db,
			"SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.pos = e.global_position AND s.via = '$via')"),
			'0', "$db '$via': skipped no event");
		is($node->safe_psql($db,
			"SELECT count(*) - count(DISTINCT pos) FROM seen WHERE via = '$via'"),
			'0', "$db '$via': received no event twice");
		is($node->safe_psql($db, qq{
			SELECT count(*) FROM (
			  SELECT pos, lag(pos) OVER (ORDER BY seq) AS prev FROM seen WHERE via = '$via') x
			 WHERE pos <= prev}),
			'0', "$db '$via': received positions in ascending order");
	}
}

$a->stop;
$b->stop;
done_testing();
