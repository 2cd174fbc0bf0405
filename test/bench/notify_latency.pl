#!/usr/bin/perl
# notify_latency.pl MODE SAMPLES: listener wake-up latency of LISTEN ep_events.
#
# One connection listens on ep_events; another appends one event at a time
# with event_patterns.notify = MODE (commit, worker). For each append the
# latency is the time from the moment the appending statement (an autocommit
# transaction) returned to the moment the listener's connection delivered the
# notification. Appends are spaced a few milliseconds apart (randomly), so
# every sample measures a wake-up, not a coalesced burst. Prints
# "p50 p99 max timeouts" in milliseconds.
#
# Connection: the usual libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE).
use strict;
use warnings;
use DBI;
use IO::Select;
use Time::HiRes qw(time usleep);

my ($mode, $samples) = @ARGV;
die "usage: notify_latency.pl commit|worker SAMPLES\n" unless $mode && $samples;

my %attr = (AutoCommit => 1, RaiseError => 1, PrintError => 0);
my $listener = DBI->connect('dbi:Pg:', undef, undef, \%attr);
my $appender = DBI->connect('dbi:Pg:', undef, undef, \%attr);
$listener->do('LISTEN ep_events');
$appender->do("SET event_patterns.notify = $mode");
my $append = $appender->prepare(q{SELECT ep.append('lat-' || $1, 'Pinged', '{}')});
my $sel = IO::Select->new($listener->{pg_socket});

# drop whatever is pending (e.g. a notification for an earlier append)
sub drain
{
	while ($sel->can_read(0))
	{
		$listener->pg_notifies;
		last unless $sel->can_read(0);
	}
	1 while $listener->pg_notifies;
}

# wait for a notification; returns the time it was received, or undef
sub wait_notify
{
	my ($deadline) = @_;
	for (;;)
	{
		my $n = $listener->pg_notifies;
		return time if $n;
		my $left = $deadline - time;
		return undef if $left <= 0;
		$sel->can_read($left);
	}
}

my (@lat, $timeouts);
$timeouts = 0;
for my $i (1 .. $samples)
{
	usleep(5_000 + int(rand(10_000)));
	drain();
	$append->execute($i % 100);
	$append->fetchall_arrayref;
	my $t0 = time;
	my $t1 = wait_notify($t0 + 5);
	if (defined $t1) { push @lat, ($t1 - $t0) * 1000; }
	else { $timeouts++; }
}
$listener->disconnect;
$appender->disconnect;

@lat = sort { $a <=> $b } @lat;
sub pct
{
	my ($p) = @_;
	return 'n/a' unless @lat;
	my $k = int($p * (@lat - 1) + 0.5);
	return sprintf('%.2f', $lat[$k]);
}
printf "%s %s %s %d\n", pct(0.5), pct(0.99), (@lat ? sprintf('%.2f', $lat[-1]) : 'n/a'), $timeouts;
