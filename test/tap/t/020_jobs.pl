# The job scheduler: a failing job backs off and never stops the others,
# jobs run as their owner (never as a superuser), a long job runs in its
# own process while the others go on, one run of a job at a time, and an
# interrupted run is recorded as failed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('jobs');
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ep.workers WHERE pid IS NOT NULL")
  or die 'no worker';

# --- a failing job backs off; a healthy one keeps running -------------------
$node->safe_psql('postgres', q{
	SELECT ep.schedule_job('bad', '1 second', 'SELECT 1/0');
	SELECT ep.schedule_job('good', '1 second', 'SELECT 1');
});
ok($node->poll_query_until('postgres',
	"SELECT failures >= 3 FROM ep.job_registry WHERE target = 'bad'"),
	'the failing job was retried');
is($node->safe_psql('postgres', q{
	SELECT last_status, last_error FROM ep.jobs WHERE target = 'bad'}),
	'failed|division by zero', 'ep.jobs shows the failure');
cmp_ok($node->safe_psql('postgres', q{
	SELECT count(*) FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
	 WHERE j.target = 'bad' AND r.status = 'failed' AND r.message = 'division by zero'}),
	'>=', 3, 'ep.job_runs lists the failed runs with their message');
# the gaps between runs grow: about 1 s, then 2 s, then 4 s
my $gaps = $node->safe_psql('postgres', q{
	SELECT string_agg(extract(epoch FROM gap)::numeric(6,1)::text, ' ' ORDER BY run_id)
	  FROM (SELECT run_id, started_at - lag(started_at) OVER (ORDER BY run_id) AS gap
	          FROM ep.job_runs r JOIN ep.jobs j USING (job_id) WHERE j.target = 'bad') s
	 WHERE gap IS NOT NULL});
my @gaps = split / /, $gaps;
cmp_ok($gaps[1], '>', $gaps[0] + 0.5, "backoff grows between retries ($gaps)");
ok($node->safe_psql('postgres', q{
	SELECT next_run_at - last_run_at > interval '3 seconds' FROM ep.jobs WHERE target = 'bad'})
	  eq 't', 'next_run_at moves out beyond the schedule');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) >= 3 FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
	 WHERE j.target = 'good' AND r.status = 'succeeded'}),
	'the healthy job kept running meanwhile');
is($node->safe_psql('postgres', q{
	SELECT last_status, failures FROM ep.jobs WHERE target = 'good'}),
	'succeeded|0', 'the healthy job has no failures');

# fixing the job resets its failures
$node->safe_psql('postgres', "SELECT ep.schedule_job('bad', '1 second', 'SELECT 2')");
$node->safe_psql('postgres', "UPDATE ep.job_registry SET next_run_at = now() WHERE target = 'bad'");
ok($node->poll_query_until('postgres', q{
	SELECT last_status = 'succeeded' AND failures = 0 FROM ep.jobs WHERE target = 'bad'}),
	'the repaired job succeeds and its failures are reset');
$node->safe_psql('postgres', "SELECT ep.unschedule_job('bad'); SELECT ep.unschedule_job('good')");

# --- jobs run as their owner ------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE alice NOLOGIN;
	CREATE SCHEMA alice_s AUTHORIZATION alice;
	CREATE TABLE alice_s.seen (who text, path text, at timestamptz DEFAULT now());
	ALTER TABLE alice_s.seen OWNER TO alice;
	CREATE TABLE public.secret (x int);
	SELECT ep.schedule_job('su_job', '1 day', 'SELECT 1');
});
$node->safe_psql('postgres', q{
	SET ROLE alice;
	SELECT ep.schedule_job('whoami', '1 second',
		$$INSERT INTO alice_s.seen (who, path) SELECT current_user, current_setting('search_path')$$);
	SELECT ep.schedule_job('peek', '1 hour', 'SELECT * FROM public.secret');
	SELECT ep.schedule_job('escape', '1 hour', 'RESET ROLE; SELECT pg_read_file(''postgresql.conf'')');
	UPDATE ep.job_registry SET next_run_at = now();
});
ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM alice_s.seen"),
	'the non-superuser job ran');
is($node->safe_psql('postgres', "SELECT DISTINCT who || ' / ' || path FROM alice_s.seen"),
	'alice / "$user", public, pg_temp',
	'it ran as its owner with the search_path of the session that scheduled it (pg_temp last)');
ok($node->poll_query_until('postgres', q{
	SELECT last_status = 'failed' FROM ep.jobs WHERE target = 'peek'}),
	'a job cannot read what its owner cannot');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.jobs WHERE target = 'peek'"),
	qr/permission denied for table secret/, 'with the owner\'s permission error');
ok($node->poll_query_until('postgres', q{
	SELECT last_status = 'failed' FROM ep.jobs WHERE target = 'escape'}),
	'a job cannot switch back to the worker\'s superuser');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.jobs WHERE target = 'escape'"),
	qr/cannot set parameter "role"/, 'RESET ROLE is refused inside a job');
is($node->safe_psql('postgres', q{
	SET ROLE alice; SELECT count(*) FROM ep.jobs WHERE owner <> 'alice'}),
	'0', 'alice sees only her own jobs');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ep.jobs WHERE owner <> 'alice' AND kind <> 'scavenge'}),
	'1', 'while the superuser sees the others too');

# owners are kept by OID: a renamed role's jobs go on running as it
$node->safe_psql('postgres', q{
	ALTER ROLE alice RENAME TO alice_renamed;
	DELETE FROM alice_s.seen;
	UPDATE ep.job_registry SET next_run_at = now() WHERE target = 'whoami';
});
ok($node->poll_query_until('postgres', "SELECT count(*) > 0 FROM alice_s.seen"),
	'the job of a renamed role still runs');
is($node->safe_psql('postgres', q{
	SELECT (SELECT DISTINCT who FROM alice_s.seen) || ' / ' || owner FROM ep.jobs WHERE target = 'whoami'}),
	'alice_renamed / alice_renamed', 'as that role, shown under its new name');
$node->safe_psql('postgres', "ALTER ROLE alice_renamed RENAME TO alice");
$node->safe_psql('postgres', "SET ROLE alice; SELECT ep.unschedule_job('whoami')");

# --- a long job runs in its own process; one run at a time -------------------
$node->safe_psql('postgres', q{
	SELECT ep.schedule_job('sleepy', '1 second', 'SELECT pg_sleep(60)');
	SELECT ep.schedule_job('quick', '1 second', 'SELECT 1');
});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_patterns job'
	   AND query = 'SELECT pg_sleep(60)'}),
	'the long job runs in a job process');
my $quick_before = $node->safe_psql('postgres', q{
	SELECT count(*) FROM ep.job_runs r JOIN ep.jobs j USING (job_id) WHERE j.target = 'quick'});
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) >= $quick_before + 3 FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
	 WHERE j.target = 'quick' AND r.status = 'succeeded'}),
	'other jobs go on while it runs');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ep.job_runs r JOIN ep.jobs j USING (job_id) WHERE j.target = 'sleepy'}),
	'1', 'the long job, due every second, has only its one run');
is($node->safe_psql('postgres', q{
	SELECT last_status FROM ep.jobs WHERE target = 'sleepy'}),
	'running', 'ep.jobs shows it running');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_patterns job'
	   AND query = 'SELECT pg_sleep(60)'}),
	'1', 'in one job process');

# --- an interrupted run is recorded as failed --------------------------------
$node->safe_psql('postgres', "SELECT ep.unschedule_job('quick')");
# hourly from now on, so that the retry after the failure is a minute away
$node->safe_psql('postgres', "SELECT ep.schedule_job('sleepy', '1 hour', 'SELECT pg_sleep(60)')");
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	 WHERE backend_type = 'event_patterns job'});
ok($node->poll_query_until('postgres', q{
	SELECT last_status = 'failed' AND failures = 1 FROM ep.jobs WHERE target = 'sleepy'}),
	'the interrupted run counts as a failure');
like($node->safe_psql('postgres', q{
	SELECT message FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
	 WHERE j.target = 'sleepy' ORDER BY run_id DESC LIMIT 1}),
	qr/interrupted/, 'and says so');

# --- the worker survives a restart without running a job twice ---------------
$node->safe_psql('postgres', "SELECT ep.unschedule_job('sleepy')");
$node->safe_psql('postgres', "SELECT ep.schedule_job('hourly', '1 hour', 'SELECT 1')");
$node->safe_psql('postgres', "UPDATE ep.job_registry SET next_run_at = now() WHERE target = 'hourly'");
ok($node->poll_query_until('postgres', q{
	SELECT last_status = 'succeeded' FROM ep.jobs WHERE target = 'hourly'}),
	'hourly job ran');
$node->restart;
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ep.workers WHERE state <> 'starting'"),
	'worker back after restart');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM ep.job_runs r JOIN ep.jobs j USING (job_id) WHERE j.target = 'hourly'}),
	'1', 'a job that is not due does not run again after a restart');

$node->stop;

# --- without the preload, scheduling warns that nothing will run -------------
my $plain = ep_node('jobs_plain', preload => 0);
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
my ($ret, $out, $err) = $plain->psql('postgres', "SELECT ep.schedule_job('x', '1 hour', 'SELECT 1')");
is($ret, 0, 'scheduling works without the preload');
like($err, qr/will not run.*\n.*shared_preload_libraries/s, 'but warns, naming shared_preload_libraries');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM ep.workers'), '0', 'ep.workers is empty');
$plain->stop;

done_testing();
