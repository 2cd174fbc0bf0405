# event_patterns.notify = worker: appending transactions do not NOTIFY
# themselves; the database's worker sends NOTIFY ep_events right after they
# commit. A listener must hear about an append within seconds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use EPTest;

my $node = ep_node('notify');
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM ep.workers')
	or die 'worker did not start';

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN ep_events');

$node->safe_psql('postgres', q{
	SET event_patterns.notify = worker;
	SELECT ep.append('n-1', 'A', '{}');
});

my $heard = 0;
for (1 .. 100)
{
	my $out = $listener->query_safe('SELECT 1');
	if ($listener->{stdout} =~ /ep_events/ || $out =~ /ep_events/ ||
		($listener->{stderr} // '') =~ /ep_events/)
	{
		$heard = 1;
		last;
	}
	usleep(100_000);
}
ok($heard, 'a listener hears about an append made with notify = worker');

# with notify = off nobody is told
$listener->{stdout} = '';
$listener->{stderr} = '';
$node->safe_psql('postgres', q{
	SET event_patterns.notify = off;
	SELECT ep.append('n-2', 'A', '{}');
});
usleep(500_000);
my $out = $listener->query_safe('SELECT 1');
unlike(($listener->{stdout} // '') . ($listener->{stderr} // '') . $out, qr/ep_events/,
	'no notification with notify = off');
$listener->quit;
$node->stop;
done_testing();
