# Projections a first-time user cannot break, applied by the worker:
# - the handler written the natural way (unqualified names, the creator's
#   search_path) works;
# - a handler that always fails parks events at once (errors retrying cannot
#   cure), goes 'failed' after event_patterns.projection_max_consecutive_failures
#   with last_error and one WARNING, and holds nobody back;
# - a transient error is retried (without sleeping in the worker) and succeeds;
# - pause/drop/create/rebuild return at once while a handler is sleeping;
# - wait_for_projection returns false at once for a failed projection;
# - a handler's SET does not leak into the worker (the next handler sees its
#   own search_path).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EPTest;

my $node = ep_node('proj_failures');
$node->append_conf('postgresql.conf', "event_patterns.naptime = 100\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
$node->safe_psql('postgres', q{
CREATE ROLE app LOGIN;
GRANT CREATE ON SCHEMA public TO app;
});

# 1. the issue's example, unchanged, as an ordinary role
$node->safe_psql('postgres', q{
SET ROLE app;
CREATE TABLE balances(account text PRIMARY KEY, balance numeric NOT NULL DEFAULT 0);
CREATE FUNCTION apply_balance(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO balances VALUES (e.stream_id, (e.data->>'amount')::numeric)
  ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance;
END $$;
SELECT ep.create_projection('balances', 'apply_balance(ep.events)', ARRAY['Deposited'], 'acc');
});
$node->safe_psql('postgres', q{
SELECT ep.append('acc-' || (g % 10), 'Deposited', jsonb_build_object('amount', 1))
  FROM generate_series(1, 3000) g;
});
my $t0 = time;
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('balances', '60 s')"), 't',
   'the natural handler applies every event');
note(sprintf('3000 events applied in %.2f s', time - $t0));
is($node->safe_psql('postgres', 'SELECT sum(balance) FROM balances'), '3000', 'balances are right');
is($node->safe_psql('postgres', "SELECT status || ' ' || parked FROM ep.projections WHERE name = 'balances'"),
   'running 0', 'nothing parked');

# 2. a handler that always fails (its table does not exist), next to a healthy one
$node->safe_psql('postgres', q{
SET ROLE app;
CREATE FUNCTION broken(e ep.events) RETURNS void LANGUAGE sql AS $$ SELECT 1 $$;
CREATE OR REPLACE FUNCTION broken(e ep.events) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO no_such_table VALUES (e.global_position); END $$;
CREATE TABLE healthy_seen (pos bigint PRIMARY KEY, path text);
CREATE FUNCTION healthy(e ep.events) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO healthy_seen VALUES (e.global_position, current_setting('search_path')) $$;
CREATE FUNCTION leaky(e ep.events) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM set_config('search_path', 'leaked', false); END $$;
SELECT ep.create_projection('broken', 'broken(ep.events)', ARRAY['Poison']);
SELECT ep.create_projection('leaky', 'leaky(ep.events)', ARRAY['Tick']);
SET search_path = public;
SELECT ep.create_projection('healthy', 'healthy(ep.events)', ARRAY['Tick']);
});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT ep.append('poison-' || g, 'Poison', '{}') FROM generate_series(1, 12) g});
ok($node->poll_query_until('postgres', "SELECT status = 'failed' FROM ep.projections WHERE name = 'broken'"),
   'a projection whose handler always fails goes failed');
is($node->safe_psql('postgres', "SELECT parked FROM ep.projections WHERE name = 'broken'"), '10',
   'it stopped after 10 parked events in a row');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.projections WHERE name = 'broken'"),
     qr/no_such_table/, 'last_error names the cause');
is($node->safe_psql('postgres', "SELECT min(attempts) || ' ' || max(attempts) FROM ep.parked_events WHERE projection = 'broken'"),
   '1 1', 'an error retrying cannot cure is parked without retries');
my $log = slurp_file($node->logfile, $log_offset);
my @warnings = ($log =~ /WARNING:  event_patterns: projection "broken" stopped/g);
is(scalar(@warnings), 1, 'one WARNING in the server log');

my $psql_timed = sub {
	my ($sql) = @_;
	my $s = time;
	my $out = $node->safe_psql('postgres', $sql);
	return ($out, time - $s);
};
my ($ok, $secs) = $psql_timed->("SELECT ep.wait_for_projection('broken', '30 s')");
is($ok, 'f', 'wait_for_projection is false for a failed projection');
cmp_ok($secs, '<', 2, 'and returns at once');

# the healthy projection keeps up while the broken one fails
$node->safe_psql('postgres', q{SELECT ep.append('poison-x-' || g, 'Poison', '{}') FROM generate_series(1, 5) g});
my $pos = $node->safe_psql('postgres', "SELECT ep.append('tick-1', 'Tick', '{}')");
($ok, $secs) = $psql_timed->("SELECT ep.wait_for_projection('healthy', '10 s')");
is($ok, 't', 'the healthy projection applies its event');
cmp_ok($secs, '<', 1.5, 'within a second');
is($node->safe_psql('postgres', 'SELECT path FROM healthy_seen'), 'public, pg_temp',
   'a handler runs with its own search_path, whatever another handler SET');

# resume after the cause is fixed: the projection goes on from where it stopped
$node->safe_psql('postgres', q{SET ROLE app; CREATE TABLE no_such_table (pos bigint);
                               SELECT ep.retry_parked('broken'); SELECT ep.resume_projection('broken');});
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('broken', '30 s')"), 't', 'resumed projection catches up');
ok($node->poll_query_until('postgres', "SELECT parked = 0 FROM ep.projections WHERE name = 'broken'"),
   'retried parked events are applied');
is($node->safe_psql('postgres', 'SELECT count(*) FROM no_such_table'), '17', 'every poison event applied once');

# 3. a transient error is retried and succeeds (the worker does not sleep on it)
$node->safe_psql('postgres', q{
SET ROLE app;
CREATE SEQUENCE attempts;
CREATE TABLE flaky_seen (pos bigint PRIMARY KEY);
CREATE FUNCTION flaky(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('attempts') <= 2 THEN
    RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure';
  END IF;
  INSERT INTO flaky_seen VALUES (e.global_position);
END $$;
SELECT ep.create_projection('flaky', 'flaky(ep.events)', ARRAY['Flaky']);
});
$node->safe_psql('postgres', "SELECT ep.append('flaky-1', 'Flaky', '{}')");
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('flaky', '30 s')"), 't', 'transient failure retried');
is($node->safe_psql('postgres', "SELECT count(*) || ' ' || (SELECT parked FROM ep.projections WHERE name = 'flaky') FROM flaky_seen"),
   '1 0', 'applied once, nothing parked');

# 4. the API never waits for a running handler
$node->safe_psql('postgres', q{
SET ROLE app;
CREATE FUNCTION sleepy(e ep.events) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(20) $$;
SELECT ep.create_projection('sleepy', 'sleepy(ep.events)', ARRAY['Sleep'], NULL, 'async',
                            current_setting('search_path'), '60 s');
});
$node->safe_psql('postgres', "SELECT ep.append('sleep-1', 'Sleep', '{}')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"),
   'the sleepy handler is running in the worker');
for my $call ("SELECT ep.pause_projection('healthy')", "SELECT ep.resume_projection('healthy')",
	"BEGIN; DELETE FROM healthy_seen; SELECT ep.rebuild_projection('healthy'); COMMIT", "SELECT ep.pause_projection('sleepy')",
	"SET ROLE app; SELECT ep.create_projection('late', 'healthy(ep.events)', ARRAY['Nothing'])",
	"SELECT ep.drop_projection('late')", "SELECT ep.drop_projection('sleepy')")
{
	my (undef, $s) = $psql_timed->($call);
	cmp_ok($s, '<', 1, "returns within a second: $call");
}
# the dropped projection's round is undone; the rebuilt one replays
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('healthy', '60 s')"), 't', 'rebuilt projection catches up');
is($node->safe_psql('postgres', "SELECT count(*) FROM ep.projections WHERE name IN ('sleepy', 'late')"), '0', 'dropped');

# 5. a slow handler gets a runner of its own: the others keep their lag
$node->safe_psql('postgres', q{
SET ROLE app;
CREATE TABLE slow_seen (pos bigint PRIMARY KEY);
CREATE FUNCTION slowpoke(e ep.events) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(1.5); INSERT INTO slow_seen VALUES (e.global_position); END $$;
SELECT ep.create_projection('slowpoke', 'slowpoke(ep.events)', ARRAY['Slow']);
});
$node->safe_psql('postgres', q{SELECT ep.append('slow-' || g, 'Slow', '{}') FROM generate_series(1, 4) g});
ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'event_patterns projection runner'"),
   'the slow projection is applied by a runner of its own');
for my $i (1 .. 3)
{
	$node->safe_psql('postgres', "SELECT ep.append('tick-r$i', 'Tick', '{}')");
	($ok, $secs) = $psql_timed->("SELECT ep.wait_for_projection('healthy', '10 s')");
	is($ok, 't', "healthy projection applies tick $i next to the slow one");
	cmp_ok($secs, '<', 1.5, 'within about a second');
}
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('slowpoke', '60 s')"), 't', 'the slow projection catches up');
is($node->safe_psql('postgres', 'SELECT count(*) FROM slow_seen'), '4', 'each slow event applied once');
like(slurp_file($node->logfile, $log_offset), qr/projection "slowpoke" is slow; a runner of its own applies it/,
     'the server log says why');

# 6. a slow table projection takes turns with the others: after its turn
#    (projection_slow_call) it yields at a source transaction's boundary
$node->safe_psql('postgres', q{
SET ROLE app;
CREATE TABLE orders_src (id int PRIMARY KEY);
CREATE TABLE orders_seen (id int PRIMARY KEY);
CREATE FUNCTION slow_rows(op text, old_row jsonb, new_row jsonb) RETURNS void LANGUAGE plpgsql AS
  $$ BEGIN
       IF op = 'INSERT' THEN
         PERFORM pg_sleep(0.2); INSERT INTO orders_seen VALUES ((new_row->>'id')::int);
       END IF;
     END $$;
SELECT ep.create_table_projection('slow_rows', 'orders_src', 'slow_rows(text, jsonb, jsonb)');
});
# (its initial copy of the table is one piece of work, not taken in turns:
# let it finish first)
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('slow_rows', '30 s')"), 't',
	'the table projection has its initial copy');
# twenty source transactions: four seconds of handler work
$node->safe_psql('postgres', join("\n", map { "INSERT INTO orders_src VALUES ($_);" } 1 .. 20));
for my $i (1 .. 3)
{
	$node->safe_psql('postgres', "SELECT ep.append('tick-t$i', 'Tick', '{}')");
	($ok, $secs) = $psql_timed->("SELECT ep.wait_for_projection('healthy', '10 s')");
	is($ok, 't', "healthy projection applies tick $i next to the slow table projection");
	cmp_ok($secs, '<', 1.5, 'within about a second');
}
is($node->safe_psql('postgres', "SELECT ep.wait_for_projection('slow_rows', '60 s')"), 't',
	'the slow table projection catches up');
is($node->safe_psql('postgres', 'SELECT count(*), count(DISTINCT id) FROM orders_seen'), '20|20',
	'each source row applied exactly once across its turns');

$node->stop;
done_testing();
