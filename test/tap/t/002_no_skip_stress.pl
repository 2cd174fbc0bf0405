# Stress test of the no-skip guarantee: many writers append to random
# streams and commit out of order (random sleeps between append and
# commit, some roll back), while a reader pages through ep.read_all from the
# last position it saw. The reader must receive every committed event
# exactly once, in ascending position order.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use EPTest;

my $node = ep_node('stress');
$node->append_conf('postgresql.conf', 'max_connections = 40');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE TABLE seen (seq bigserial PRIMARY KEY, pos bigint NOT NULL, via text NOT NULL);
CREATE PROCEDURE reader(p_seconds float8, p_category text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    last bigint := 0;
    r record;
    deadline timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
    n int;
BEGIN
    LOOP
        n := 0;
        IF p_category IS NULL THEN
            FOR r IN SELECT global_position FROM ep.read_all(last, 200) LOOP
                INSERT INTO seen (pos, via) VALUES (r.global_position, 'all');
                last := r.global_position; n := n + 1;
            END LOOP;
        ELSE
            FOR r IN SELECT global_position FROM ep.read_category(p_category, last, 200) LOOP
                INSERT INTO seen (pos, via) VALUES (r.global_position, p_category);
                last := r.global_position; n := n + 1;
            END LOOP;
        END IF;
        COMMIT;
        EXIT WHEN n = 0 AND clock_timestamp() > deadline;
        IF n = 0 THEN PERFORM pg_sleep(0.002); END IF;
    END LOOP;
END
$$;
});

my $script = $node->basedir . '/writer.sql';
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
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);

# two readers at once: global order and one category
my $cat = $node->background_psql('postgres');
$cat->query_until(qr/started/, "\\echo started\nCALL reader(10, 'stress');\n");
$node->safe_psql('postgres', 'CALL reader(10)', timeout => 120);
$cat->quit;
$bench->finish;
like($out, qr/number of transactions actually processed: [1-9]/, 'writers ran')
	or diag($err);

my $events = $node->safe_psql('postgres', 'SELECT count(*) FROM ep.events');
cmp_ok($events, '>', 100, "writers committed $events events");

for my $via ('all', 'stress')
{
	is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE via = '$via'"),
		$events, "reader '$via' received as many events as were committed");
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.pos = e.global_position AND s.via = '$via')"),
		'0', "reader '$via' skipped no event");
	is($node->safe_psql('postgres',
		"SELECT count(*) - count(DISTINCT pos) FROM seen WHERE via = '$via'"),
		'0', "reader '$via' received no event twice");
	is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM (
		  SELECT pos, lag(pos) OVER (ORDER BY seq) AS prev FROM seen WHERE via = '$via') x
		 WHERE pos <= prev}),
		'0', "reader '$via' received positions in ascending order");
}

$node->stop;
done_testing();
