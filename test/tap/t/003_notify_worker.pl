# event_patterns.notify: a listener of ep_events is woken after every
# appending commit, whatever the mode.
#   - worker (the default): appending transactions do not NOTIFY themselves
#     while the database's worker serves as notifier; the worker sends NOTIFY
#     ep_events right after they commit. Every single append is heard, within
#     seconds.
#   - with the worker gone (event_patterns.enabled = off), an appending
#     transaction notifies by itself: nobody is left without a wake-up.
#   - commit: the transaction notifies itself; off: nobody is told.
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

is($node->safe_psql('postgres', 'SHOW event_patterns.notify'), 'worker',
	'the coalesced notification is the default');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN ep_events');

sub clear
{
	$listener->query_safe('SELECT 1');
	$listener->{stdout} = '';
	$listener->{stderr} = '';
}

# true once the listener has received a notification on ep_events (polls
# for at most $tenths / 10 seconds)
sub heard
{
	my ($tenths) = @_;
	for (1 .. $tenths)
	{
		my $out = $listener->query_safe('SELECT 1');
		return 1
		  if (($listener->{stdout} // '') . ($listener->{stderr} // '') . $out) =~
		  /ep_events/;
		usleep(100_000);
	}
	return 0;
}

# every append of a sequence is heard on its own (default settings)
my $missed = 0;
for my $i (1 .. 20)
{
	clear();
	$node->safe_psql('postgres', "SELECT ep.append('n-$i', 'A', '{}')");
	$missed++ unless heard(50);
}
is($missed, 0, 'with the default settings every appending commit wakes the listener');

# an append in a transaction that also does other work, and a rolled-back
# subtransaction that appended, still lead to one wake-up after commit
clear();
$node->safe_psql('postgres', q{
	BEGIN;
	SAVEPOINT a;
	SELECT ep.append('n-sub', 'A', '{}');
	ROLLBACK TO a;
	SELECT ep.append('n-main', 'A', '{}');
	COMMIT;
});
ok(heard(50), 'an appending transaction with a rolled-back savepoint is heard');

# an aborted append wakes nobody
clear();
$node->psql('postgres', q{
	BEGIN;
	SELECT ep.append('n-aborted', 'A', '{}');
	ROLLBACK;
});
ok(!heard(5), 'a rolled-back append is not announced');

# the worker goes away: the transaction notifies by itself
$node->append_conf('postgresql.conf', 'event_patterns.enabled = off');
$node->reload;
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ep.workers')
	or die 'worker did not leave';
clear();
$node->safe_psql('postgres', "SELECT ep.append('n-alone', 'A', '{}')");
ok(heard(20), 'without a worker the appending transaction notifies by itself');

# and it takes the duty back when it returns
$node->append_conf('postgresql.conf', 'event_patterns.enabled = on');
$node->reload;
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ep.workers WHERE state <> 'starting'")
	or die 'worker did not come back';
clear();
$node->safe_psql('postgres', "SELECT ep.append('n-back', 'A', '{}')");
ok(heard(50), 'a listener hears appends once the worker is back');

# notify = commit remains selectable
clear();
$node->safe_psql('postgres', q{
	SET event_patterns.notify = commit;
	SELECT ep.append('n-commit', 'A', '{}');
});
ok(heard(20), 'a listener hears about an append made with notify = commit');

# with notify = off nobody is told
clear();
$node->safe_psql('postgres', q{
	SET event_patterns.notify = off;
	SELECT ep.append('n-off', 'A', '{}');
});
ok(!heard(5), 'no notification with notify = off');
$listener->quit;
$node->stop;
done_testing();
