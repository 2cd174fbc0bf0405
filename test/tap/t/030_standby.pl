# On a streaming standby no event_patterns process runs (no writes, no
# decoding); the jobs the primary runs replicate; after promotion the
# launcher starts and the promoted server runs the jobs itself.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $primary = ep_node('primary', allows_streaming => 1);
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
$primary->safe_psql('postgres', "SELECT ep.schedule_job('tick', '1 second', 'SELECT 1')");
$primary->poll_query_until('postgres', "SELECT count(*) >= 1 FROM ep.job_runs")
  or die 'the primary runs no jobs';

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

# let the standby replay a few job runs of the primary
my $runs = $primary->safe_psql('postgres', "SELECT count(*) FROM ep.job_runs");
$primary->poll_query_until('postgres', "SELECT count(*) >= $runs + 2 FROM ep.job_runs")
  or die 'the primary stopped running jobs';
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby in recovery');
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'event_patterns%'"),
	'0', 'no launcher, worker or job process on the standby');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM ep.workers'),
	'0', 'ep.workers is empty on the standby');
is($standby->safe_psql('postgres', "SELECT count(*) FROM ep.job_runs"),
	$primary->safe_psql('postgres', "SELECT count(*) FROM ep.job_runs"),
	'the standby has exactly the runs the primary recorded');

# reads work on the standby, with the worker runtime loaded
is($standby->safe_psql('postgres', "SELECT count(*) > 0 FROM ep.jobs"), 't',
	'ep.jobs is readable on the standby');

# promotion: the launcher starts and the worker runs the jobs
$primary->stop;
$standby->promote;
ok($standby->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM ep.workers WHERE pid IS NOT NULL"),
	'after promotion the worker starts');
$runs = $standby->safe_psql('postgres', "SELECT count(*) FROM ep.job_runs");
ok($standby->poll_query_until('postgres', "SELECT count(*) > $runs FROM ep.job_runs"),
	'and the promoted server runs the jobs');

my $log = slurp_file($standby->logfile);
unlike($log, qr/event_patterns.*(ERROR|FATAL)/, 'no event_patterns errors on the standby');

$standby->stop;
done_testing();
