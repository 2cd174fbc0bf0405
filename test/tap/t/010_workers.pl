# Per-database workers: started by the launcher within seconds of
# CREATE EXTENSION, restarted when they die, stopped by DROP EXTENSION,
# out of the way of DROP DATABASE / RENAME / CREATE DATABASE ... TEMPLATE,
# back after a crash restart, and switched off by event_patterns.enabled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EPTest;

my $node = ep_node('workers');
# the test framework turns this off; the crash test below needs it
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->start;

# pid of the worker of a database, as pg_stat_activity shows it ('' if none)
sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity"
		  . " WHERE backend_type = 'event_patterns worker' AND datname = '$db'");
}

sub wait_worker
{
	my ($db, $not_pid) = @_;
	my $cond = "backend_type = 'event_patterns worker' AND datname = '$db'";
	$cond .= " AND pid <> $not_pid" if $not_pid;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE $cond");
}

sub wait_no_worker
{
	my ($db) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity"
		  . " WHERE backend_type = 'event_patterns worker' AND datname = '$db'");
}

# the launcher runs, connected to no database
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_patterns launcher'"
	  . " AND datname IS NULL AND application_name = 'event_patterns launcher'"),
	'1', 'one launcher, connected to no database');

# no extension anywhere: no worker stays
$node->safe_psql('postgres', 'CREATE DATABASE db1');
$node->safe_psql('postgres', 'CREATE DATABASE db2');
ok(wait_no_worker('db1'), 'no worker where the extension is not installed');

# two databases: a worker each, within seconds of CREATE EXTENSION
my $t0 = time();
$node->safe_psql('db1', 'CREATE EXTENSION event_patterns');
$node->safe_psql('db2', 'CREATE EXTENSION event_patterns');
ok(wait_worker('db1'), 'worker started in db1');
ok(wait_worker('db2'), 'worker started in db2');
my $elapsed = time() - $t0;
cmp_ok($elapsed, '<', 5, "both workers started within seconds ($elapsed s)");
ok(wait_no_worker('postgres'), 'still no worker in postgres');

# ep.workers lists the current database's worker
my $pid1 = worker_pid('db1');
is($node->safe_psql('db1', 'SELECT database, pid, started_at IS NOT NULL, state IN (\'idle\', \'running\') FROM ep.workers'),
	"db1|$pid1|t|t", 'ep.workers shows the worker of db1');
is($node->safe_psql('db2', 'SELECT count(*) FROM ep.workers WHERE database = \'db2\''),
	'1', 'ep.workers of db2 lists only its own worker');
is($node->safe_psql('postgres',
	"SELECT application_name FROM pg_stat_activity WHERE pid = $pid1"),
	'event_patterns worker', 'application_name names the extension');

# restart after pg_terminate_backend
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid1)");
ok(wait_worker('db1', $pid1), 'worker restarted after pg_terminate_backend');
isnt(worker_pid('db1'), $pid1, 'the new worker is a new process');

# a worker that dies again soon is restarted after a longer delay (backoff)
my $pid2 = worker_pid('db1');
$t0 = time();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid2)");
ok(wait_worker('db1', $pid2), 'restarted again');
$elapsed = time() - $t0;
cmp_ok($elapsed, '>=', 1.5, "the second restart waited longer ($elapsed s)");

# commits wake the worker: a job scheduled far in the past runs at once
$node->safe_psql('db1', "SELECT ep.schedule_job('tick', '1 hour', 'SELECT 1')");
$node->safe_psql('db1', "UPDATE ep.job_registry SET next_run_at = now() - interval '10 days' WHERE target = 'tick'");
ok($node->poll_query_until('db1',
	"SELECT count(*) = 1 FROM ep.job_runs r JOIN ep.jobs j USING (job_id) WHERE j.target = 'tick' AND r.status = 'succeeded'"),
	'a late job runs once');
ok($node->poll_query_until('db1',
	"SELECT next_run_at > now() + interval '50 minutes' FROM ep.jobs WHERE target = 'tick'"),
	'and is rescheduled from now');
is($node->safe_psql('db1', "SELECT count(*) FROM ep.job_runs r JOIN ep.jobs j USING (job_id) WHERE j.target = 'tick'"), '1',
	'the missed runs are not caught up one by one');

# DROP EXTENSION stops the worker; CREATE EXTENSION starts it again
$t0 = time();
$node->safe_psql('db2', 'DROP EXTENSION event_patterns');
ok(wait_no_worker('db2'), 'DROP EXTENSION stops the worker');
$elapsed = time() - $t0;
cmp_ok($elapsed, '<', 5, "at once ($elapsed s)");
$node->safe_psql('db2', 'CREATE EXTENSION event_patterns');
ok(wait_worker('db2'), 're-create starts it again');

# a DROP EXTENSION that rolls back leaves a worker running
$node->safe_psql('db2', 'BEGIN; DROP EXTENSION event_patterns; ROLLBACK;');
ok(wait_worker('db2'), 'rolled-back DROP EXTENSION: worker back');

# ALTER DATABASE RENAME with a worker connected
$node->safe_psql('postgres', 'ALTER DATABASE db2 RENAME TO db2b');
ok(wait_worker('db2b'), 'rename succeeds and the worker comes back');

# ALTER DATABASE SET TABLESPACE with a worker connected
my $tsdir = $node->basedir . '/ts1';
mkdir $tsdir or die "mkdir $tsdir: $!";
$node->safe_psql('postgres', "CREATE TABLESPACE ts1 LOCATION '$tsdir'");
$node->safe_psql('postgres', 'ALTER DATABASE db2b SET TABLESPACE ts1');
is($node->safe_psql('postgres',
	"SELECT t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = 'db2b'"),
	'ts1', 'SET TABLESPACE succeeds');
ok(wait_worker('db2b'), 'and the worker comes back');

# CREATE DATABASE from a template that has a worker; the copy gets one too
$node->safe_psql('postgres', 'CREATE DATABASE db3 TEMPLATE db2b');
ok(wait_worker('db3'), 'a database copied from one with the extension gets a worker');
ok(wait_worker('db2b'), 'and the template database has its worker again');

# DROP DATABASE with a worker running succeeds promptly
ok(wait_worker('db3'), 'db3 has a worker');
$t0 = time();
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE db3');
$elapsed = time() - $t0;
is($ret, 0, 'DROP DATABASE with a worker running succeeds') or diag($err);
cmp_ok($elapsed, '<', 5, "DROP DATABASE is prompt ($elapsed s)");

# ... also while the worker's job is in the middle of a long run
$node->safe_psql('db2b', "SELECT ep.schedule_job('sleepy', '1 second', 'SELECT pg_sleep(60)')");
$node->safe_psql('db2b', "UPDATE ep.job_registry SET next_run_at = now()");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_patterns job' AND datname = 'db2b'"),
	'a long job runs in its own process');
$t0 = time();
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE db2b');
$elapsed = time() - $t0;
is($ret, 0, 'DROP DATABASE during a long job succeeds') or diag($err);
cmp_ok($elapsed, '<', 5, "and is prompt ($elapsed s)");
ok(wait_no_worker('db2b'), 'nothing is left in the dropped database');

# commands that are bound to fail leave the worker alone
$pid1 = worker_pid('db1');
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE db1', extra_params => [ '-U', 'mallory' ]);
isnt($ret, 0, 'DROP DATABASE by a non-owner fails');
($ret, $out, $err) = $node->psql('postgres', 'BEGIN; DROP DATABASE db1;');
like($err, qr/cannot run inside a transaction block/, 'DROP DATABASE in a transaction block fails');
is(worker_pid('db1'), $pid1, 'and neither stopped the worker');

# crash restart of the server: workers come back
$pid1 = worker_pid('db1');
$node->stop('immediate');
$node->start;
ok(wait_worker('db1'), 'worker back after an immediate stop and start');

# a backend crash makes the postmaster reinitialize; the worker comes back
$pid1 = worker_pid('db1');
# kill -9 a worker: a crash of a process with shared memory access
kill 'KILL', $pid1;
ok($node->poll_query_until('postgres', "SELECT 1", '1'), 'server accepts connections after the crash');
ok(wait_worker('db1', $pid1), 'worker back after a crash of the worker');

# commits wake the worker: with a naptime of an hour, an append still makes
# it run a round at once (state_change of its pg_stat_activity row moves)
$node->append_conf('postgresql.conf', 'event_patterns.naptime = 1h');
$node->reload;
ok($node->poll_query_until('postgres',
	"SELECT setting = '3600000' FROM pg_settings WHERE name = 'event_patterns.naptime'"),
	'naptime is an hour');
my $round_sql = "SELECT state_change FROM pg_stat_activity"
  . " WHERE backend_type = 'event_patterns worker' AND datname = 'db1' AND state = 'idle'";
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($round_sql) s"),
	'the worker is idle');
my $t1 = $node->safe_psql('postgres', $round_sql);
$node->safe_psql('db1', "SELECT ep.append('wake-1', 'Poked', '{}')");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_patterns worker'"
	  . " AND datname = 'db1' AND state_change > '$t1'"),
	'an append wakes the worker at commit');
# ... and so does a new job, which runs at once
$t1 = $node->safe_psql('postgres', $round_sql);
$node->safe_psql('db1', "SELECT ep.schedule_job('now', '1 hour', 'SELECT 1');"
	. " UPDATE ep.job_registry SET next_run_at = now() WHERE target = 'now'");
ok($node->poll_query_until('db1', "SELECT last_status = 'succeeded' FROM ep.jobs WHERE target = 'now'"),
	'a job changed at commit runs without waiting for the naptime');
$node->append_conf('postgresql.conf', 'event_patterns.naptime = 1s');
$node->reload;

# a terminated launcher is started again by the postmaster and takes over
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'event_patterns launcher'");
$pid1 = worker_pid('db1');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_patterns launcher'"
	  . " AND pid <> $launcher"),
	'the launcher is back');
ok(wait_worker('db1', $pid1), 'the new launcher took over with a new worker in db1');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_patterns worker' AND datname = 'db1'"),
	'1', 'exactly one worker there');

# event_patterns.enabled = off stops the workers; on starts them again
$node->append_conf('postgresql.conf', 'event_patterns.enabled = off');
$node->reload;
ok(wait_no_worker('db1'), 'enabled = off stops the worker');
$node->append_conf('postgresql.conf', 'event_patterns.enabled = on');
$node->reload;
ok(wait_worker('db1'), 'enabled = on starts it again');

# the worker's errors and exits are reported, nothing else worrying
$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/PANIC|TRAP|server process .* was terminated by signal 11/,
	'no PANIC, assertion failure or segfault in the log');

# event_patterns.max_workers bounds the workers; the rest is reported
my $small = ep_node('max_workers');
$small->append_conf('postgresql.conf', 'event_patterns.max_workers = 1');
$small->start;
$small->safe_psql('postgres', 'CREATE DATABASE a');
$small->safe_psql('postgres', 'CREATE DATABASE b');
$small->safe_psql('a', 'CREATE EXTENSION event_patterns');
ok($small->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_patterns worker' AND datname = 'a'"),
	'first database gets the only worker');
$small->safe_psql('b', 'CREATE EXTENSION event_patterns');
ok($small->wait_for_log(qr/cannot start a worker for database \d+.*\n.*event_patterns.max_workers/),
	'the second is reported, naming event_patterns.max_workers');
is($small->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'event_patterns worker'"),
	'1', 'and gets no worker');
$small->safe_psql('a', 'DROP EXTENSION event_patterns');
ok($small->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'event_patterns worker' AND datname = 'b'"),
	'when the slot frees up, the second database gets its worker');
$small->stop;

done_testing();
