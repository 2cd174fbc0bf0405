# Jobs behind the trust boundary: a job runs in a session of its owner
# (connected as that role), security-restricted, with the search_path
# recorded when it was scheduled and a time limit; its commit, deferred
# triggers included, runs with its owner's rights only; one role's jobs
# cannot take every job worker; a job cannot move another role's
# subscription checkpoint. Every attack here is replayed as a role with
# nothing but LOGIN (and CREATE on a schema of its own where it says so).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('job_security');
$node->append_conf('postgresql.conf', "event_patterns.max_job_workers = 4\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION event_patterns;
	CREATE ROLE eve LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE svc NOLOGIN;
	GRANT svc TO bob;
	CREATE SCHEMA eve_s AUTHORIZATION eve;
	CREATE SCHEMA svc_s AUTHORIZATION svc;
	CREATE SCHEMA bob_s AUTHORIZATION bob;
});
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ep.workers WHERE pid IS NOT NULL")
  or die 'no worker';

sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', "SET ROLE $role; $sql");
}

sub wait_runs
{
	my ($target, $n) = @_;
	return $node->poll_query_until('postgres', qq{
		SELECT count(*) >= $n FROM ep.job_runs r JOIN ep.job_registry j USING (job_id)
		 WHERE j.target = '$target' AND r.status <> 'running'});
}

sub is_superuser
{
	return $node->safe_psql('postgres',
		"SELECT rolsuper FROM pg_roles WHERE rolname = '$_[0]'");
}

# --- the attack of the issue: a deferred trigger on a temporary table -------
as_role('eve', q{SELECT ep.schedule_job('j', '1 second', $j$
	CREATE TEMP TABLE tt(x int);
	CREATE FUNCTION pg_temp.evil() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALTER ROLE eve SUPERUSER'; RETURN NULL; END$$;
	CREATE CONSTRAINT TRIGGER t AFTER INSERT ON pg_temp.tt DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.evil();
	INSERT INTO pg_temp.tt VALUES (1);
$j$)});
ok(wait_runs('j', 2), 'the temporary-table job ran');
is(is_superuser('eve'), 'f', 'a job firing a deferred trigger at commit does not make its owner superuser');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.jobs WHERE target = 'j'"),
	qr/security-restricted/, 'temporary objects are refused in a job (security-restricted operation)');

# --- the same with a permanent table the role owns: the commit is the owner's
as_role('eve', q{
	CREATE TABLE eve_s.t(x int);
	CREATE FUNCTION eve_s.evil() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN EXECUTE 'ALTER ROLE eve SUPERUSER'; RETURN NULL; END$$;
	CREATE CONSTRAINT TRIGGER t AFTER INSERT ON eve_s.t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION eve_s.evil();
	SELECT ep.unschedule_job('j');
	SELECT ep.schedule_job('j2', '1 second', 'INSERT INTO eve_s.t VALUES (1)');
});
ok(wait_runs('j2', 2), 'the deferred-trigger job ran');
is(is_superuser('eve'), 'f', 'deferred triggers fired by a job\'s commit run as the job\'s owner');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.jobs WHERE target = 'j2'"),
	qr/permission denied|must be superuser|security-restricted/, 'the deferred trigger was refused');
as_role('eve', "SELECT ep.unschedule_job('j2')");

# a job that tries directly, or through SET ROLE / SET SESSION AUTHORIZATION
as_role('eve', q{SELECT ep.schedule_job('j3', '1 second', 'ALTER ROLE eve SUPERUSER')});
as_role('eve', q{SELECT ep.schedule_job('j4', '1 second', 'SET SESSION AUTHORIZATION postgres')});
ok(wait_runs('j3', 1) && wait_runs('j4', 1), 'the direct attempts ran');
is(is_superuser('eve'), 'f', 'a job cannot make its owner superuser');
as_role('eve', "SELECT ep.unschedule_job('j3'), ep.unschedule_job('j4')");

# --- the job's session is its owner's ------------------------------------
as_role('eve', q{
	CREATE TABLE eve_s.who(session_user_name name, current_user_name name, path text);
	SET search_path = eve_s, public;
	SELECT ep.schedule_job('who', '1 second',
		'INSERT INTO who SELECT session_user, current_user, current_setting(''search_path'')');
});
ok(wait_runs('who', 1), 'the job with unqualified names ran');
is($node->safe_psql('postgres', 'SELECT session_user_name, current_user_name, path FROM eve_s.who LIMIT 1'),
	'eve|eve|eve_s, public, pg_temp',
	'a job runs connected as its owner with the search_path recorded when it was scheduled');
is($node->safe_psql('postgres', "SELECT search_path FROM ep.jobs WHERE target = 'who'"),
	'eve_s, public', 'ep.jobs shows the recorded search_path');
as_role('eve', "SELECT ep.unschedule_job('who')");

# pg_stat_activity shows the owner
as_role('eve', q{SELECT ep.schedule_job('nap', '1 second', 'SELECT pg_sleep(3)')});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) >= 1 FROM pg_stat_activity
	 WHERE backend_type = 'event_patterns job' AND usename = 'eve'}),
	'the job process is connected as its owner');
as_role('eve', "SELECT ep.unschedule_job('nap')");

# a role without LOGIN: the session is still the owner's
as_role('svc', q{
	CREATE TABLE svc_s.who(session_user_name name, current_user_name name);
	SELECT ep.schedule_job('svc_who', '1 second',
		'INSERT INTO svc_s.who SELECT session_user, current_user');
});
ok(wait_runs('svc_who', 1), 'the job of a role without LOGIN ran');
is($node->safe_psql('postgres', 'SELECT session_user_name, current_user_name FROM svc_s.who LIMIT 1'),
	'svc|svc', 'a job of a role without LOGIN runs with that role as session user');
as_role('svc', "SELECT ep.unschedule_job('svc_who')");

# --- subscriptions: a job moves only its owner's checkpoints ---------------
as_role('bob', q{SELECT ep.create_subscription('bobs')});
as_role('eve', q{SELECT ep.schedule_job('ack', '1 second', 'SELECT ep.ack(''bobs'', 999)')});
ok(wait_runs('ack', 1), 'the ack job ran');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.jobs WHERE target = 'ack'"),
	qr/must be a member of role "bob"/, 'a job cannot move another role\'s checkpoint');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ep.subscription_checkpoints WHERE subscription = 'bobs'}),
	'0', 'the checkpoint did not move');
as_role('eve', "SELECT ep.unschedule_job('ack')");
my ($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE eve; INSERT INTO ep.subscription_checkpoints VALUES ('bobs', -1, 5)");
like($err, qr/row-level security/, 'nor can a direct INSERT into the checkpoints');
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE eve; SELECT ep.drop_subscription('bobs')");
like($err, qr/must be a member of role "bob"/, 'nor drop it');
as_role('bob', q{SELECT ep.ack('bobs', 3)});
is($node->safe_psql('postgres', q{SELECT position FROM ep.subscription_checkpoints WHERE subscription = 'bobs'}),
	'3', 'its owner can');

# --- time limit ---------------------------------------------------------------
as_role('eve', q{SELECT ep.schedule_job('slow', '1 second', 'SELECT pg_sleep(60)', '1 second')});
ok(wait_runs('slow', 1), 'the slow job was stopped');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.jobs WHERE target = 'slow'"),
	qr/time limit of 1000 ms/, 'a job is cancelled at its time limit');
as_role('eve', "SELECT ep.unschedule_job('slow')");
($ret, $out, $err) = $node->psql('postgres',
	"SELECT ep.schedule_job('bad', '1 second', 'SELECT 1', '-1 second')");
like($err, qr/time_limit must be a positive interval/, 'a negative time limit is refused');

# a job that catches the cancel is terminated after a grace period
as_role('eve', q{SELECT ep.schedule_job('stubborn', '1 second', $j$DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.1); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$$j$, '1 second')});
ok(wait_runs('stubborn', 1), 'the job that swallows the cancel was stopped');
cmp_ok($node->safe_psql('postgres', q{
	SELECT extract(epoch FROM finished_at - started_at) FROM ep.job_runs r JOIN ep.job_registry j USING (job_id)
	 WHERE j.target = 'stubborn' ORDER BY run_id LIMIT 1}), '<', 10,
	'within its time limit and the grace period');
as_role('eve', "SELECT ep.unschedule_job('stubborn')");

# --- one role cannot take every job worker ---------------------------------
as_role('eve', q{
	SELECT ep.schedule_job('hog' || i, '1 second', 'SELECT pg_sleep(30)', '1 minute')
	  FROM generate_series(1, 4) i});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 2 FROM pg_stat_activity
	 WHERE backend_type = 'event_patterns job' AND usename = 'eve'}),
	'two of the role\'s sleeping jobs run');
as_role('bob', q{CREATE TABLE bob_s.bob_ran(at timestamptz);
	SELECT ep.schedule_job('bob', '1 second', 'INSERT INTO bob_s.bob_ran VALUES (now())')});
ok($node->poll_query_until('postgres', 'SELECT count(*) >= 2 FROM bob_s.bob_ran'),
	'another role\'s job runs meanwhile');
is($node->safe_psql('postgres', q{
	SELECT count(*) <= 2 FROM pg_stat_activity
	 WHERE backend_type = 'event_patterns job' AND usename = 'eve'}),
	't', 'never more than event_patterns.max_job_workers_per_role of one role');

# thousands of due jobs of one role (inserted directly, due since 1970) do
# not push another role's due job out of the scheduler's window (review F5)
as_role('eve', q{
	INSERT INTO ep.job_registry (kind, target, schedule, command, next_run_at, time_limit)
	SELECT 'custom', 'flood' || g, '1 day', 'SELECT pg_sleep(600)', 'epoch', '2 days'
	  FROM generate_series(1, 2000) g});
as_role('bob', q{CREATE TABLE bob_s.bob_late(at timestamptz);
	SELECT ep.schedule_job('bob_late', '1 second', 'INSERT INTO bob_s.bob_late VALUES (now())')});
ok($node->poll_query_until('postgres', 'SELECT count(*) >= 1 FROM bob_s.bob_late'),
	'another role\'s job runs although one role has 2,000 overdue jobs');

# no role may lock the scheduler's registry, and a role's lock on its own
# job rows does not stop the scheduler (review F4b2)
($ret, $out, $err) = $node->psql('postgres',
	'SET ROLE eve; BEGIN; LOCK TABLE ep.job_registry IN ACCESS EXCLUSIVE MODE; ROLLBACK');
like($err, qr/permission denied for table job_registry/, 'LOCK TABLE on the registry is refused');
my $locker = $node->background_psql('postgres', on_error_stop => 0);
$locker->query_safe(q{SET ROLE eve; BEGIN; SELECT count(*) FROM (SELECT job_id FROM ep.job_registry WHERE target LIKE 'flood%' OR target = 'hog1' FOR UPDATE) l});
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM bob_s.bob_late');
ok($node->poll_query_until('postgres', "SELECT count(*) > $before + 1 FROM bob_s.bob_late"),
	'jobs keep running while a role holds locks on its own job rows');
$locker->query_safe('ROLLBACK');
$locker->quit;
is(is_superuser('eve'), 'f', 'eve is still no superuser');

$node->stop;
done_testing();
