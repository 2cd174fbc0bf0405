# The projections' replication slot: lost (dropped by hand) or invalidated
# (max_slot_wal_keep_size exceeded), projections recover from ep.events and
# table projections reload their source, with no gap and no duplicate; and
# DROP DATABASE / DROP EXTENSION are not blocked by the slot.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('proj_slot');
$node->append_conf('postgresql.conf', "max_slot_wal_keep_size = 1MB\nmin_wal_size = 32MB\nmax_wal_size = 64MB");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE TABLE applied (pos bigint NOT NULL);
CREATE FUNCTION record(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.applied VALUES (e.global_position) $$;
CREATE TABLE src (id int PRIMARY KEY, v text);
CREATE TABLE copy (id int PRIMARY KEY, v text);
CREATE FUNCTION mirror(op text, o jsonb, n jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF op = 'TRUNCATE' THEN DELETE FROM public.copy;
    ELSIF op = 'DELETE' THEN DELETE FROM public.copy WHERE id = (o->>'id')::int;
    ELSE INSERT INTO public.copy VALUES ((n->>'id')::int, n->>'v')
         ON CONFLICT (id) DO UPDATE SET v = excluded.v;
    END IF;
END $$;
SELECT ep.create_projection('all', 'record(ep.events)');
SELECT ep.create_table_projection('mirror', 'src', 'mirror(text, jsonb, jsonb)');
});

my $slot = $node->safe_psql('postgres',
	"SELECT 'ep_' || oid FROM pg_database WHERE datname = 'postgres'");

sub append_some
{
	my ($from, $to) = @_;
	$node->safe_psql('postgres', qq{
SELECT ep.append('s-' || i % 5, 'E', '{}') FROM generate_series($from, $to) i;
INSERT INTO src SELECT i, 'v' || i FROM generate_series($from, $to) i;
UPDATE src SET v = v || '+' WHERE id % 4 = 0;
DELETE FROM src WHERE id % 9 = 0;
});
}

sub check_exact
{
	my ($what) = @_;
	for my $i (1 .. 50)
	{
		my $n = $node->safe_psql('postgres', 'SELECT ep.apply_projections(100000)');
		last if $n == 0;
	}
	# the database's worker may be applying the same projections meanwhile
	is($node->safe_psql('postgres', "SELECT ep.wait_for_projection(NULL, '60 seconds')"),
		't', "$what: the projections caught up");
	is($node->safe_psql('postgres', q{
SELECT (SELECT count(*) - count(DISTINCT pos) FROM applied)
     + (SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT 1 FROM applied a WHERE a.pos = e.global_position))
     + (SELECT count(*) FROM applied a WHERE NOT EXISTS (SELECT 1 FROM ep.events e WHERE a.pos = e.global_position))}),
		'0', "$what: every event applied exactly once");
	is($node->safe_psql('postgres', q{
SELECT count(*) FROM ((TABLE src EXCEPT ALL TABLE copy) UNION ALL (TABLE copy EXCEPT ALL TABLE src)) d}),
		'0', "$what: the table projection's copy equals its source");
}

append_some(1, 100);
check_exact('first rounds');

# slot lost: dropped by hand while events keep coming
append_some(101, 200);
$node->safe_psql('postgres', "SELECT pg_drop_replication_slot('$slot')");
append_some(201, 300);
check_exact('after the slot was dropped');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'1', 'the slot was created again');
is($node->safe_psql('postgres', "SELECT status FROM ep.projections WHERE name = 'mirror'"),
	'running', 'the table projection reloaded its source and runs again');

# slot invalidated: more WAL than max_slot_wal_keep_size while no round runs
# (the worker is switched off meanwhile, else one of its rounds may keep the
# slot up to date)
append_some(301, 400);
$node->safe_psql('postgres', "ALTER SYSTEM SET event_patterns.enabled = off");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'event_patterns worker'")
  or die "the worker did not stop";
for my $i (1 .. 4)
{
	$node->safe_psql('postgres', "INSERT INTO src SELECT g, repeat('x', 1000) FROM generate_series(100000, 103000) g; DELETE FROM src WHERE id >= 100000; SELECT pg_switch_wal(); CHECKPOINT;");
}
my $status = $node->safe_psql('postgres', "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$slot'");
ok($status eq 'lost' || $status eq 'unreserved', "the slot lost its WAL ($status)");
is($node->safe_psql('postgres', "SELECT wal_status FROM ep.projections WHERE name = 'all'"),
	$status, 'ep.projections shows the slot\'s wal_status');
$node->safe_psql('postgres', "ALTER SYSTEM RESET event_patterns.enabled");
$node->safe_psql('postgres', "SELECT pg_reload_conf()");
append_some(401, 500);
check_exact('after the slot was invalidated');
is($node->safe_psql('postgres', "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'reserved', 'a fresh slot replaced the invalidated one');

# DROP DATABASE with the slot in place
$node->safe_psql('postgres', 'CREATE DATABASE dropme');
$node->safe_psql('dropme', q{
CREATE EXTENSION event_patterns;
CREATE TABLE t (pos bigint);
CREATE FUNCTION h(e ep.events) RETURNS void LANGUAGE sql AS $$ INSERT INTO public.t VALUES (e.global_position) $$;
SELECT ep.create_projection('p', 'h(ep.events)');
SELECT ep.append('a-1', 'E', '{}');
SELECT ep.apply_projections();
});
my $dropme_slot = $node->safe_psql('postgres',
	"SELECT 'ep_' || oid FROM pg_database WHERE datname = 'dropme'");
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$dropme_slot'"),
	'1', 'the database has its slot');
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE dropme');
is($ret, 0, 'DROP DATABASE succeeds although the database had a slot') or diag($err);
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$dropme_slot'"),
	'0', 'the slot went with the database');

# DROP EXTENSION lets go of the slot too
$node->safe_psql('postgres', 'DROP EXTENSION event_patterns CASCADE');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'0', 'DROP EXTENSION dropped the slot');

$node->stop;
done_testing();
