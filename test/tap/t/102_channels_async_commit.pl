# A message handler's transaction commits without waiting for the WAL
# flush (as native apply does): an immediate shutdown right after a message
# was handled may take the handler's writes back, together with its
# progress (and the apply's asynchronous commit of the message with them),
# and the message is handled again, once. An event a reader has seen is
# never taken back by a crash and appended again as another event. The
# consumer's WAL writer is slowed down so that it does not flush in
# between, and the test checks that the handler's commit was indeed not
# flushed yet at a crash (it always was with synchronous commits). (A handler that appended events commits synchronously; the
# round's own bookkeeping commit that follows it flushes as well, so this
# test cannot tell the two apart.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $orders = ep_node('orders');
$orders->append_conf('postgresql.conf', "wal_receiver_status_interval = 1s\n");
$orders->start;
my $payments = ep_node('payments');
$payments->append_conf('postgresql.conf', qq{
wal_writer_delay = 10s
wal_writer_flush_after = 1GB
wal_receiver_status_interval = 1s
});
$payments->start;

$orders->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
SELECT ep.create_channel('orders.events');
});
(my $conn = $orders->connstr('postgres')) =~ s/'/''/g;
$payments->safe_psql('postgres', qq{
CREATE EXTENSION event_patterns;
SELECT ep.subscribe_channel('orders.events', '$conn');
CREATE ROLE payer LOGIN;
CREATE SCHEMA pay AUTHORIZATION payer;
SELECT ep.grant_channel('orders.events', 'payer', '{read}');
GRANT USAGE ON SCHEMA ep TO payer;
SET ROLE payer;
SET search_path = pay;
CREATE TABLE handled (message_id uuid, key text);
CREATE FUNCTION on_plain(m ep.messages) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO handled VALUES (m.message_id, m.key) \$\$;
CREATE FUNCTION on_audit(m ep.messages) RETURNS void LANGUAGE plpgsql AS \$\$
BEGIN
    PERFORM ep.append('audit-' || m.key, 'Seen', jsonb_build_object('message', m.message_id));
END \$\$;
SELECT ep.create_message_handler('plain', 'orders.events', 'on_plain(ep.messages)');
});

# first a handler that writes a table only: its commits are asynchronous
# and nothing else writes WAL here, so the crash comes before the flush
my $plain_q = q{SELECT count(*) FROM pay.handled};
my $unflushed = 0;
my $plain_n = q{(SELECT count(*) FROM pay.handled)};
for my $i (1 .. 3)
{
	$orders->safe_psql('postgres', "SELECT ep.send('orders.events', 'OrderPlaced', '{}', 'p$i')");
	$payments->poll_query_until('postgres', "SELECT $plain_n = $i")
	  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.projections'));
	$unflushed += $payments->safe_psql('postgres',
		"SELECT (pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn())::int");
	$payments->stop('immediate');
	$payments->start;
	$payments->poll_query_until('postgres', "SELECT $plain_n = $i AND (SELECT lag_events = 0 FROM ep.projections WHERE name = 'plain')")
	  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.projections'));
	is($payments->safe_psql('postgres', $plain_q), $i, "plain crash $i right after handling: handled once");
}
# the WAL writer flushes once at start, then every 10 s: right after a
# restart nothing but a synchronous commit flushes the handler's commit
ok($unflushed >= 1, "the handler's commit was not flushed yet at $unflushed of 3 crashes (asynchronous)");
$payments->safe_psql('postgres', q{
TRUNCATE pay.handled;
SET ROLE payer;
SET search_path = pay;
SELECT ep.create_message_handler('audit', 'orders.events', 'on_audit(ep.messages)');
});
# (it first handles the messages received before)
$payments->poll_query_until('postgres', q{SELECT count(*) = 3 FROM ep.events WHERE stream_id LIKE 'audit-p%'});

# then one that appends events as well

my $handled_q = q{SELECT (SELECT count(*) FROM pay.handled) || '|' ||
                         (SELECT count(*) FROM ep.events WHERE stream_id LIKE 'audit-k%')};
for my $i (1 .. 3)
{
	$orders->safe_psql('postgres', "SELECT ep.send('orders.events', 'OrderPlaced', '{}', 'k$i')");
	$payments->poll_query_until('postgres', "$handled_q = '$i|$i'")
	  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.projections'));
	my $seen = $payments->safe_psql('postgres',
		"SELECT event_id FROM ep.events WHERE stream_id = 'audit-k$i'");
	diag("crash $i: WAL not flushed at the crash: "
		  . $payments->safe_psql('postgres', "SELECT pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()"));
	# at once: the WAL writer has not flushed the asynchronous commits
	$payments->stop('immediate');
	$payments->start;
	$payments->poll_query_until('postgres', qq{
SELECT bool_and(status = 'running' AND lag_events = 0) FROM ep.projections
 WHERE name IN ('plain', 'audit')})
	  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.projections'));
	$payments->poll_query_until('postgres', "$handled_q = '$i|$i'");
	is($payments->safe_psql('postgres', $handled_q), "$i|$i",
		"crash $i right after handling: every message handled once by each handler");
	is($payments->safe_psql('postgres', "SELECT event_id FROM ep.events WHERE stream_id = 'audit-k$i'"),
		$seen, "crash $i: the event a reader saw before the crash is the one kept");
}
is($payments->safe_psql('postgres',
	q{SELECT count(*) = count(DISTINCT message_id) FROM pay.handled}), 't', 'nothing handled twice');

$payments->stop;
$orders->stop;
done_testing();
