# Service channels across three clusters (orders -> payments, shipping):
# the producer removes messages only once every consumer's slot has them
# and the retention has passed; consumers remove handled messages; a dead
# consumer is visible; a consumer whose slot was dropped re-synchronizes
# from what the producer still has without handling anything twice, and
# says what it lost when retention had already removed messages.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $extra = qq{
max_wal_senders = 10
max_replication_slots = 20
event_patterns.channel_retention = 2
wal_receiver_status_interval = 1s
};
my %node;
for my $name (qw(orders payments shipping))
{
	$node{$name} = ep_node($name);
	$node{$name}->append_conf('postgresql.conf', $extra);
	$node{$name}->start;
}
my ($orders, $payments, $shipping) = @node{qw(orders payments shipping)};

$orders->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
SELECT ep.create_channel('orders.events');
CREATE PROCEDURE send_some(n int, tag text) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM ep.send('orders.events', 'OrderPlaced', jsonb_build_object('i', i, 'tag', tag), tag || '-' || i);
        COMMIT;
    END LOOP;
END $$;
});
(my $conn = $orders->connstr('postgres')) =~ s/'/''/g;
for my $c ($payments, $shipping)
{
	$c->safe_psql('postgres', qq{
CREATE EXTENSION event_patterns;
SELECT ep.subscribe_channel('orders.events', '$conn');
CREATE TABLE handled (message_id uuid, key text);
CREATE FUNCTION on_order(m ep.messages) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO public.handled VALUES (m.message_id, m.key) \$\$;
SELECT ep.create_message_handler('h', 'orders.events', 'on_order(ep.messages)');
});
}

sub producer_count
{
	return $orders->safe_psql('postgres', "SELECT count(*) FROM ep.messages");
}

sub wait_handled
{
	my ($c, $n, $what) = @_;
	$c->poll_query_until('postgres', "SELECT count(*) >= $n FROM handled")
	  or diag($c->safe_psql('postgres', 'SELECT * FROM ep.projections; SELECT * FROM ep.channels'));
	is($c->safe_psql('postgres', 'SELECT count(*), count(DISTINCT message_id) FROM handled'),
		"$n|$n", $what);
}

$orders->safe_psql('postgres', "CALL send_some(50, 'a')");
wait_handled($payments, 50, 'payments handled the first batch once');
wait_handled($shipping, 50, 'shipping handled the first batch once');
# every consumer has them: the producer removes them after the retention
$orders->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ep.messages')
  or diag($orders->safe_psql('postgres', 'SELECT * FROM ep.channels; SELECT * FROM ep.channel_consumers; SELECT * FROM ep.channel_marks'));
is($orders->safe_psql('postgres', 'SELECT pruned_count FROM ep.channels'), '50', 'the producer pruned them');
# consumers remove handled messages after the retention too
$payments->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ep.messages');
is($payments->safe_psql('postgres', 'SELECT count(*) FROM handled'), '50', 'handled work stays');

# a dead consumer: the producer keeps what it has not received, and shows it
$shipping->safe_psql('postgres', q{ALTER SUBSCRIPTION "ep_channel:orders.events" DISABLE});
$orders->safe_psql('postgres', "CALL send_some(30, 'b')");
wait_handled($payments, 80, 'payments goes on while shipping is down');
sleep(4);
$orders->safe_psql('postgres', 'SELECT ep.maintain_channels()');
is(producer_count(), '30', 'nothing is removed that a consumer has not received');
is($orders->safe_psql('postgres', q{SELECT backlog >= 30, consumers, lag_bytes > 0 FROM ep.channels}),
	't|2|t', 'ep.channels shows the backlog of the dead consumer');
is($orders->safe_psql('postgres', q{SELECT count(*) FROM ep.channel_consumers WHERE NOT active}),
	'1', 'ep.channel_consumers shows its inactive slot');
$shipping->safe_psql('postgres', q{ALTER SUBSCRIPTION "ep_channel:orders.events" ENABLE});
wait_handled($shipping, 80, 'shipping catches up once back');
$orders->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ep.messages');
is(producer_count(), '0', 'then the producer removes them');

# shipping's slot is dropped while the producer still has its messages:
# re-synchronization copies them, nothing is handled twice
$orders->append_conf('postgresql.conf', 'event_patterns.channel_retention = 3600');
$orders->reload;
$orders->safe_psql('postgres', "CALL send_some(10, 'c')");
wait_handled($shipping, 90, 'shipping handled c');
$shipping->safe_psql('postgres', q{ALTER SUBSCRIPTION "ep_channel:orders.events" DISABLE});
$orders->safe_psql('postgres', "CALL send_some(20, 'd')");
my $slot = $shipping->safe_psql('postgres', 'SELECT slot_name FROM ep.channel_defs');
$orders->poll_query_until('postgres', "SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'");
$orders->safe_psql('postgres', "SELECT pg_drop_replication_slot('$slot')");
is($orders->safe_psql('postgres', 'SELECT consumers FROM ep.channels'), '1', 'the producer sees one consumer left');
$shipping->safe_psql('postgres', "SELECT ep.subscribe_channel('orders.events', '$conn')");
wait_handled($shipping, 110, 're-synchronized: the missing messages once, nothing twice');
is($shipping->safe_psql('postgres', 'SELECT last_error IS NULL FROM ep.channels'), 't', 'nothing was lost');

# again, but retention removes the messages before shipping comes back
$orders->append_conf('postgresql.conf', 'event_patterns.channel_retention = 2');
$orders->reload;
wait_handled($payments, 110, 'payments has everything');
$orders->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ep.messages');
$shipping->safe_psql('postgres', q{ALTER SUBSCRIPTION "ep_channel:orders.events" DISABLE});
$slot = $shipping->safe_psql('postgres', 'SELECT slot_name FROM ep.channel_defs');
$orders->poll_query_until('postgres', "SELECT NOT active FROM pg_replication_slots WHERE slot_name = '$slot'");
$orders->safe_psql('postgres', "SELECT pg_drop_replication_slot('$slot')");
$orders->safe_psql('postgres', "CALL send_some(15, 'e')");
wait_handled($payments, 125, 'payments handled e');
$orders->poll_query_until('postgres', 'SELECT count(*) = 0 FROM ep.messages');
my ($ret, $out, $err) = $shipping->psql('postgres', "SELECT ep.subscribe_channel('orders.events', '$conn')");
like($err, qr/messages may have been lost/, 're-synchronizing warns about what retention removed');
like($shipping->safe_psql('postgres', 'SELECT last_error FROM ep.channels'),
	qr/already removed messages with positions below \d+/, 'ep.channels says what was lost');
$orders->safe_psql('postgres', "CALL send_some(5, 'f')");
wait_handled($shipping, 115, 'later messages arrive again, once');

# a paused handler holds back the consumer's clean-up (it has not handled
# the messages); taking back its owner's read releases them
$payments->safe_psql('postgres', q{
CREATE ROLE idler;
CREATE SCHEMA idle AUTHORIZATION idler;
SELECT ep.grant_channel('orders.events', 'idler', '{read}');
SET ROLE idler;
CREATE FUNCTION idle.h(m ep.messages) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT ep.create_message_handler('idle', 'orders.events', 'idle.h(ep.messages)');
SELECT ep.pause_projection('idle');
});
$orders->safe_psql('postgres', "CALL send_some(10, 'g')");
wait_handled($payments, 140, 'payments handled g');
sleep(4);
$payments->safe_psql('postgres', 'SELECT ep.maintain_channels()');
is($payments->safe_psql('postgres', q{SELECT count(*) FROM ep.messages WHERE key LIKE 'g-%'}), '10',
	'a paused handler keeps its messages on the consumer');
$payments->safe_psql('postgres', q{SELECT ep.revoke_channel('orders.events', 'idler', '{read}')});
$payments->poll_query_until('postgres', q{SELECT count(*) = 0 FROM ep.messages WHERE key LIKE 'g-%'})
  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.channels'));
is($payments->safe_psql('postgres', q{SELECT backlog FROM ep.channels}), '0',
	'revoking its owner\'s read releases them');

$_->stop for values %node;
done_testing();
