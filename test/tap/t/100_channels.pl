# Service channels between two clusters (orders -> payments) and between two
# databases of one cluster (orders -> audit): every committed message is
# handled exactly once and in the producer's commit order per key, across
# an immediate shutdown of the consumer and of the producer in the middle of
# a burst of concurrent producers; a poison message is parked and the rest
# goes on. The handler belongs to a non-superuser and uses unqualified names.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use File::Path;
use EPTest;

my $extra = qq{
max_wal_senders = 12
max_replication_slots = 20
event_patterns.channel_retention = 3600
event_patterns.projection_retry_backoff = 10
wal_receiver_status_interval = 1s
};
my $orders = ep_node('orders');
$orders->append_conf('postgresql.conf', $extra);
# the producer also listens on 127.0.0.1 and in a socket directory of the
# server's user outside the sticky /tmp (made by test/install-deps.sh)
my $trusted_dir = '/run/postgresql/ep_tap_' . $orders->port;
File::Path::rmtree($trusted_dir);
mkdir($trusted_dir, 0700) or die "cannot make $trusted_dir: $!";
$orders->append_conf('postgresql.conf',
	"unix_socket_directories = '" . $orders->host . ", $trusted_dir'\nlisten_addresses = '127.0.0.1'\n");
$orders->start;
my $payments = ep_node('payments');
$payments->append_conf('postgresql.conf', $extra);
$payments->start;

$orders->safe_psql('postgres', q{CREATE DATABASE orders});
$orders->safe_psql('postgres', q{CREATE DATABASE audit});
$orders->safe_psql('orders', q{
CREATE EXTENSION event_patterns;
SELECT ep.create_channel('orders.events');
CREATE TABLE ctr (k text PRIMARY KEY, v int NOT NULL DEFAULT 0);
INSERT INTO ctr SELECT 'k' || g, 0 FROM generate_series(1, 5) g;
-- a producer: each transaction bumps one key's counter and sends it, so the
-- commit order per key is the order of seq
CREATE PROCEDURE producer(n int) LANGUAGE plpgsql AS $$
DECLARE
    key text;
    seq int;
BEGIN
    FOR i IN 1..n LOOP
        key := 'k' || (1 + floor(random() * 5))::int;
        UPDATE ctr SET v = v + 1 WHERE k = key RETURNING v INTO seq;
        PERFORM ep.send('orders.events', 'Tick', jsonb_build_object('seq', seq), key);
        COMMIT;
    END LOOP;
END $$;
});
# messages sent before anyone subscribed arrive with the initial copy
$orders->safe_psql('orders', 'CALL producer(20)');

my $orders_conn = $orders->connstr('orders');
(my $orders_conn_sql = $orders_conn) =~ s/'/''/g;
my $consumer_setup = q{
CREATE EXTENSION IF NOT EXISTS event_patterns;
SELECT ep.subscribe_channel('orders.events', '%s');
DO $do$ BEGIN CREATE ROLE payer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $do$;
CREATE SCHEMA pay AUTHORIZATION payer;
SELECT ep.grant_channel('orders.events', 'payer', '{read}');
SET ROLE payer;
SET search_path = pay;
CREATE TABLE handled (message_id uuid, key text, seq int);
CREATE TABLE totals (key text PRIMARY KEY, n int NOT NULL, last_seq int NOT NULL, disorder int NOT NULL DEFAULT 0);
CREATE FUNCTION on_tick(m ep.messages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF m.payload ? 'poison' THEN
        RAISE EXCEPTION 'poison message';
    END IF;
    INSERT INTO handled VALUES (m.message_id, m.key, (m.payload->>'seq')::int);
    INSERT INTO totals AS t VALUES (m.key, 1, (m.payload->>'seq')::int)
    ON CONFLICT (key) DO UPDATE
       SET n = t.n + 1, last_seq = excluded.last_seq,
           disorder = t.disorder + CASE WHEN excluded.last_seq = t.last_seq + 1 THEN 0 ELSE 1 END;
END $$;
SELECT ep.create_message_handler('pay', 'orders.events', 'on_tick(ep.messages)');
};
$payments->safe_psql('postgres', sprintf($consumer_setup, $orders_conn_sql));
# same cluster, another database: the slot is created before the writes
$orders->safe_psql('audit', sprintf($consumer_setup, $orders_conn_sql));

sub check_consumer
{
	my ($node, $db, $what) = @_;
	my $expected = $orders->safe_psql('orders', q{SELECT count(*) FROM ep.messages WHERE NOT payload ? 'poison'});
	my $last = $orders->safe_psql('orders', q{SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM ctr WHERE v > 0});
	$node->poll_query_until($db, "SELECT count(*) >= $expected FROM pay.handled")
	  or diag($node->safe_psql($db, 'SELECT count(*) FROM pay.handled; SELECT * FROM ep.projections; SELECT * FROM ep.channels'));
	is($node->safe_psql($db, 'SELECT count(*), count(DISTINCT message_id) FROM pay.handled'),
		"$expected|$expected", "$what: every message handled exactly once");
	is($node->safe_psql($db, q{SELECT string_agg(key || '=' || last_seq, ',' ORDER BY key) FROM pay.totals}),
		$last, "$what: the last message of each key is the producer's last");
	is($node->safe_psql($db, 'SELECT coalesce(sum(disorder), 0) FROM pay.totals'),
		'0', "$what: per key in the producer's commit order");
}

check_consumer($payments, 'postgres', 'initial copy, other cluster');
check_consumer($orders, 'audit', 'initial copy, same cluster');
is($payments->safe_psql('postgres', q{SELECT owner FROM ep.projections WHERE name = 'pay'}),
	'payer', 'the handler runs as its owner');

# three concurrent producers; the consumer crashes in the middle
sub start_producers
{
	my ($n) = @_;
	my @procs;
	for my $i (1 .. 3)
	{
		my ($out, $err) = ('', '');
		push @procs, IPC::Run::start(
			[ 'psql', '-X', '-d', $orders_conn, '-c', "CALL producer($n)" ],
			'>', \$out, '2>', \$err);
	}
	return @procs;
}

my @procs = start_producers(700);
$payments->poll_query_until('postgres', 'SELECT count(*) > 300 FROM pay.handled');
$payments->stop('immediate');
$payments->start;
$_->finish for @procs;
check_consumer($payments, 'postgres', 'consumer crash mid-burst');
check_consumer($orders, 'audit', 'same-cluster consumer during that burst');

# the producer crashes in the middle of a burst
@procs = start_producers(2000);
$payments->poll_query_until('postgres', 'SELECT count(*) > 2500 FROM pay.handled');
$orders->stop('immediate');
$_->finish for @procs;
$orders->start;
check_consumer($payments, 'postgres', 'producer crash mid-burst');
check_consumer($orders, 'audit', 'same-cluster consumer after the producer crash');

# a poison message is retried, parked, and the rest goes on
$orders->safe_psql('orders', q{
SELECT ep.send('orders.events', 'Tick', '{"poison": true}', 'k9');
CALL producer(10);
});
check_consumer($payments, 'postgres', 'after a poison message');
$payments->poll_query_until('postgres', q{SELECT count(*) = 1 FROM ep.parked_events WHERE projection = 'pay'});
is($payments->safe_psql('postgres', q{SELECT error, new_row->'payload' FROM ep.parked_events WHERE projection = 'pay'}),
	'poison message|{"poison": true}', 'the poison message is parked with its error');
is($payments->safe_psql('postgres', q{SELECT status, parked FROM ep.projections WHERE name = 'pay'}),
	'running|1', 'the handler keeps running');
# parked messages outlive the consumer's clean-up, and a retry hands them back
$payments->safe_psql('postgres', q{
SET ROLE payer;
CREATE OR REPLACE FUNCTION pay.on_tick(m ep.messages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pay.handled VALUES (m.message_id, m.key, -1);
END $$;
SELECT ep.retry_parked('pay');
});
$payments->poll_query_until('postgres', q{SELECT count(*) = 0 FROM ep.parked_events});
is($payments->safe_psql('postgres', q{SELECT count(*) FROM pay.handled WHERE key = 'k9'}), '1',
	'the retried message is handled once');

# the consumer's view: nothing left to handle
$payments->poll_query_until('postgres', q{SELECT backlog = 0 FROM ep.channels});
is($payments->safe_psql('postgres', q{SELECT channel, role, subscription_active FROM ep.channels}),
	'orders.events|consumer|t', 'ep.channels on the consumer');
is($orders->safe_psql('orders', q{SELECT consumers FROM ep.channels}), '2', 'the producer sees two consumers');

# arrival order is the consumer's own: a received_seq carried by the row
# (a producer could publish the column) is replaced by the next number
is($payments->safe_psql('postgres', q{
	INSERT INTO ep_channels."orders.events" (channel, message_id, position, message_type, sent_at, received_seq)
	VALUES ('orders.events', gen_random_uuid(), 999999, 'Forged', now(), -5);
	SELECT received_seq > 0 FROM ep_channels."orders.events" WHERE message_type = 'Forged';
	DELETE FROM ep_channels."orders.events" WHERE message_type = 'Forged';}),
	't', 'the receive trigger numbers arrivals itself');

# waiting for a message handler counts only messages the caller may read
is($payments->safe_psql('postgres', q{
	CREATE ROLE nosy;
	INSERT INTO ep_channels."orders.events" (channel, message_id, position, message_type, sent_at)
	VALUES ('orders.events', gen_random_uuid(), 999998, 'Peek', now());
	SELECT 'ep_channels."orders.events"'::regclass::oid AS t \\gset
	SELECT ep._messages_pending(:t, 0, 1000000000)::text;
	SET ROLE nosy;
	SELECT ep._messages_pending(:t, 0, 1000000000)::text;
	RESET ROLE;
	DELETE FROM ep_channels."orders.events" WHERE message_type = 'Peek';}),
	"true\nfalse", 'pending messages of a channel are visible only to its readers');

# message scans take the plain ascending index on received_seq, whatever
# other index the table has (one made before it sorts first)
$orders->safe_psql('audit', q{
	SELECT indexrelid::regclass AS idx FROM pg_index
	 WHERE indrelid = 'ep_channels."orders.events"'::regclass
	   AND indkey::text = (SELECT attnum::text FROM pg_attribute
	                        WHERE attrelid = 'ep_channels."orders.events"'::regclass AND attname = 'received_seq') \gset
	DROP INDEX :idx;
	CREATE INDEX seq_desc ON ep_channels."orders.events" (received_seq DESC);
	CREATE INDEX seq_asc ON ep_channels."orders.events" (received_seq);
});
$orders->safe_psql('orders', 'CALL producer(30)');
check_consumer($orders, 'audit', 'with a descending index on received_seq made first');

# a parked message is not handed back once the handler's owner may no
# longer read the channel: the handler stops with status failed
$payments->safe_psql('postgres', q{
SET ROLE payer;
CREATE OR REPLACE FUNCTION pay.on_tick(m ep.messages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF m.payload ? 'poison' THEN
        RAISE EXCEPTION 'poison message';
    END IF;
    INSERT INTO pay.handled VALUES (m.message_id, m.key, -1);
END $$;
});
$orders->safe_psql('orders', q{SELECT ep.send('orders.events', 'Tick', '{"poison": true}', 'k8')});
$payments->poll_query_until('postgres', q{SELECT count(*) = 1 FROM ep.parked_events WHERE projection = 'pay'});
$payments->safe_psql('postgres', q{
SELECT ep.revoke_channel('orders.events', 'payer', '{read}');
SET ROLE payer;
CREATE OR REPLACE FUNCTION pay.on_tick(m ep.messages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pay.handled VALUES (m.message_id, m.key, -1);
END $$;
SELECT ep.retry_parked('pay');
});
$payments->poll_query_until('postgres', q{SELECT status = 'failed' FROM ep.projections WHERE name = 'pay'})
  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.projections'));
is($payments->safe_psql('postgres', q{SELECT count(*) FROM pay.handled WHERE key = 'k8'}) . '|'
	. $payments->safe_psql('postgres', q{SELECT count(*) FROM ep.parked_events WHERE projection = 'pay'}),
	'0|1', 'a parked message is not retried for a handler whose owner lost read');
like($payments->safe_psql('postgres', q{SELECT last_error FROM ep.projections WHERE name = 'pay'}),
	qr/permission denied to read channel "orders.events"/, 'the handler says why it stopped');

# a role that is not a superuser may subscribe when the producer checks
# the password in its connection string
$orders->safe_psql('orders', q{
CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'secret';
SELECT ep.create_channel('orders.pw');
SELECT ep.grant_channel('orders.pw', 'pwuser', '{read}');
SELECT ep.send('orders.pw', 'Early', '{}');
});
{
	my $hba = $orders->data_dir . '/pg_hba.conf';
	my $old = PostgreSQL::Test::Utils::slurp_file($hba);
	open(my $fh, '>', $hba) or die "cannot write $hba: $!";
	print $fh "local all pwuser scram-sha-256\nhost all pwuser 127.0.0.1/32 scram-sha-256\n$old";
	close($fh);
	$orders->reload;
}
$payments->safe_psql('postgres', q{
CREATE ROLE subscriber;
GRANT EXECUTE ON FUNCTION ep.subscribe_channel(text, text) TO subscriber;
});
# by address: the producer listens on 127.0.0.1 too
my $tcp = 'hostaddr=127.0.0.1 port=' . $orders->port . ' dbname=orders';
my ($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', '$tcp user=pwuser')");
like($err, qr/password is required/, 'no password: refused for a role that is not a superuser');
($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', '$tcp user=pwuser password=wrong')");
like($err, qr/could not connect to the producer.*password authentication failed/s, 'a wrong password: refused');
($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', '$tcp user=postgres password=anything')");
like($err, qr/The producer did not ask for the password/, 'a producer that trusts the connection: refused');
# by socket directory: only one nobody but the server's user may write to.
# The test cluster's own directory sits in the sticky /tmp, where anyone
# may make it again once it is gone.
my $sock = ' port=' . $orders->port . ' dbname=orders user=pwuser password=secret';
($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', 'host=" . $orders->host . "$sock')");
like($err, qr/trusted socket directory/, 'a socket directory under the sticky /tmp: refused');
system('setfacl', '-m', 'u:nobody:rwx', $trusted_dir) == 0 or die "setfacl failed";
($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', 'host=$trusted_dir$sock')");
like($err, qr/trusted socket directory/, 'a socket directory an access ACL lets another user write to: refused');
system('setfacl', '-b', $trusted_dir) == 0 or die "setfacl failed";
# a default ACL: a socket directory made in it again later would let
# another user write
system('setfacl', '-d', '-m', 'u:nobody:rwx', $trusted_dir) == 0 or die "setfacl failed";
($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', 'host=$trusted_dir$sock')");
like($err, qr/trusted socket directory/, 'a socket directory with a default ACL that lets another user write: refused');
system('setfacl', '-k', $trusted_dir) == 0 or die "setfacl failed";
($rc, $out, $err) = $payments->psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', 'host=$trusted_dir port=" . $orders->port
	  . " dbname=orders user=pwuser password=wrong')");
like($err, qr/could not connect to the producer.*password authentication failed/s,
	'a socket directory of the server\'s user is used (and the password checked)');
is($payments->safe_psql('postgres', q{SELECT count(*) FROM ep.channel_defs WHERE channel = 'orders.pw'}), '0',
	'nothing written by the refusals');
$payments->safe_psql('postgres',
	"SET ROLE subscriber; SELECT ep.subscribe_channel('orders.pw', '$tcp user=pwuser password=secret')");
$orders->safe_psql('orders', q{SELECT ep.send('orders.pw', 'Late', '{}')});
$payments->poll_query_until('postgres', q{SELECT count(*) = 2 FROM ep.messages WHERE channel = 'orders.pw'})
  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.channels'));
is($payments->safe_psql('postgres', q{SELECT owner, source !~ '(password|secret)' FROM ep.channels WHERE channel = 'orders.pw'}),
	'subscriber|t', 'subscribed with a checked password: owned by the role, no password shown');
# the subscription connects with the server's credentials switched off
like($payments->safe_psql('postgres', q{SELECT subconninfo FROM pg_subscription WHERE subname = 'ep_channel:orders.pw'}),
	qr/passfile='[^']*nonexistent.*sslcert='[^']*nonexistent/, 'the subscription presents none of the server\'s own credentials');

# a producer whose channel publication lists other tables: the subscription
# would apply them, by name, into the consumer's tables as the extension
# owner. Refused, and nothing stays behind (no definition, subscription or
# slot).
$payments->safe_psql('postgres', q{CREATE TABLE public.payroll (who text, amount int)});
$orders->safe_psql('orders', q{
CREATE TABLE public.payroll (who text, amount int);
SELECT ep.create_channel('orders.evil');
ALTER PUBLICATION "ep_channel:orders.evil" ADD TABLE public.payroll;
});
my $slots_before = $orders->safe_psql('orders', q{SELECT count(*) FROM pg_replication_slots});
($rc, $out, $err) = $payments->psql('postgres',
	"SELECT ep.subscribe_channel('orders.evil', '$orders_conn_sql')");
like($err, qr/lists other tables than the channel's/, 'a publication with other tables is refused');
is($payments->safe_psql('postgres', q{
SELECT (SELECT count(*) FROM ep.channel_defs WHERE channel = 'orders.evil') || '|' ||
       (SELECT count(*) FROM pg_subscription WHERE subname = 'ep_channel:orders.evil')}),
	'0|0', 'nothing was written on the consumer');
is($orders->safe_psql('orders', q{SELECT count(*) FROM pg_replication_slots}), $slots_before,
	'the slot made for it was dropped again');
$orders->safe_psql('orders', q{INSERT INTO public.payroll VALUES ('alice', 999999)});
$orders->safe_psql('orders', q{ALTER PUBLICATION "ep_channel:orders.evil" DROP TABLE public.payroll});
# what the producer has is copied at subscription: more than work_mem of
# it goes through a temporary file, closed before commit (no leak warning)
$orders->safe_psql('orders', q{SELECT count(ep.send('orders.evil', 'Early', jsonb_build_object('pad', repeat('x', 200)))) FROM generate_series(1, 2000)});
($rc, $out, $err) = $payments->psql('postgres',
	"SET work_mem = '64kB'; SELECT ep.subscribe_channel('orders.evil', '$orders_conn_sql')");
is($rc . '|' . $err, '0|', 'subscribed, copying 2,000 messages through a temporary file without a warning');
$orders->safe_psql('orders', q{SELECT ep.send('orders.evil', 'Fine', '{}')});
$payments->poll_query_until('postgres', q{SELECT count(*) = 2001 FROM ep.messages WHERE channel = 'orders.evil'})
  or diag($payments->safe_psql('postgres', 'SELECT * FROM ep.channels'));
is($payments->safe_psql('postgres', q{SELECT count(*) FROM public.payroll}), '0',
	'once the publication holds only the channel: subscribed, and the consumer\'s table untouched');

$payments->stop;
$orders->stop;
File::Path::rmtree($trusted_dir);
done_testing();
