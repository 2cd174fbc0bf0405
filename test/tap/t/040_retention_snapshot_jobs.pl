# The event store's scheduled work, run by the real scheduler: the default
# scavenge job (as the extension owner) removes what stream limits hide, and
# a snapshot policy's refresh job (as the role that set it, not a superuser)
# brings the snapshots of a stream up to date.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('es2_jobs');
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ep.workers WHERE pid IS NOT NULL")
  or die 'no worker';

is($node->safe_psql('postgres', q{
	SELECT kind, target, schedule, owner = (SELECT extowner::regrole::name FROM pg_extension
	                                          WHERE extname = 'event_patterns')
	  FROM ep.jobs WHERE kind = 'scavenge'}),
	'scavenge|ep.events|00:05:00|t', 'CREATE EXTENSION installs the scavenge job, owned by the extension owner');

# --- scavenging by the scheduler ---------------------------------------------
$node->safe_psql('postgres', q{
	SELECT ep.append('account-1', 'Deposited', '{"amount": 1}') FROM generate_series(1, 10);
	SELECT ep.set_stream_metadata('account-1', max_count => 3);
	SELECT ep._schedule_job('scavenge', 'ep.events', interval '1 second', 'SELECT ep.scavenge()');
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM ep.events WHERE stream_id = 'account-1'"),
	'the scavenge job removed the hidden events');
is($node->safe_psql('postgres', q{
	SELECT string_agg(stream_version::text, ',' ORDER BY stream_version) FROM ep.read_stream('account-1')}),
	'8,9,10', 'readers see what they saw before');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
	 WHERE j.kind = 'scavenge' AND r.status = 'succeeded'}),
	'its runs succeed');

# --- a snapshot refresh job runs as the policy's owner -----------------------
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	GRANT CREATE ON SCHEMA public TO app;
});
$node->safe_psql('postgres', q{
	SET ROLE app;
	CREATE FUNCTION public.counted(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS
	    $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1, 'by', current_user) $$;
	SELECT ep.append('order-1', 'Placed', '{}') FROM generate_series(1, 3);
	SELECT ep.set_snapshot_policy('public.counted(jsonb, ep.events)', 2, '1 second');
	SELECT ep.aggregate('order-1', 'public.counted(jsonb, ep.events)');
	SELECT ep.append('order-1', 'Placed', '{}') FROM generate_series(1, 3);
});
is($node->safe_psql('postgres', q{
	SELECT owner FROM ep.jobs WHERE kind = 'snapshot'}), 'app', 'the refresh job belongs to the policy owner');
ok($node->poll_query_until('postgres',
	"SELECT max(version) = 6 FROM ep.snapshots WHERE stream_id = 'order-1'"),
	'the refresh job wrote the newer snapshot');
is($node->safe_psql('postgres', q{
	SELECT state->>'n', state->>'by' FROM ep.snapshots WHERE stream_id = 'order-1' AND version = 6}),
	'6|app', 'the reducer ran as the job owner');
is($node->safe_psql('postgres', q{
	SELECT ep.aggregate('order-1', 'public.counted(jsonb, ep.events)')->>'n'}),
	'6', 'the fold from the snapshot equals the full fold');

$node->safe_psql('postgres', q{
	SET ROLE app;
	SELECT ep.set_snapshot_policy('public.counted(jsonb, ep.events)', NULL);
});
is($node->safe_psql('postgres', "SELECT count(*) FROM ep.jobs WHERE kind = 'snapshot'"),
	'0', 'removing the policy removes its job');

$node->stop;
done_testing();
