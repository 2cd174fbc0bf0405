# A saga across two clusters: the orders service (cluster A) runs the saga;
# its payment step asks the payments service (cluster B) and waits. Requests
# and replies are plain tables carried by native logical replication; a
# table projection on each side reacts to them (B answers requests, A turns
# replies into ep.complete_step / ep.fail_step). Service channels (ep.send,
# message handlers) will replace the tables and table projections once they
# exist; the saga side does not change.
#   o-ok      paid: the saga completes
#   o-decl    declined: the reservation is released, the order cancelled
#   o-lost    B never answers: the step times out, compensation runs
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $a = ep_node('orders');
my $b = ep_node('payments');
$a->start;
$b->start;

# both services: the same request/reply tables, owned by the service role
for my $node ($a, $b)
{
	$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE svc LOGIN;
CREATE SCHEMA svc AUTHORIZATION svc;
SET ROLE svc;
CREATE TABLE svc.pay_requests (saga_id text PRIMARY KEY, amount int NOT NULL);
CREATE TABLE svc.pay_replies (saga_id text PRIMARY KEY, ok boolean NOT NULL, detail text);
CREATE TABLE svc.effects (n bigserial PRIMARY KEY, saga_id text, what text);
});
}

# payments (B): answer each request it receives
$b->safe_psql('postgres', q{
SET ROLE svc;
SET search_path = svc;
CREATE FUNCTION on_request(op text, old_row jsonb, new_row jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE amount int := (new_row->>'amount')::int;
BEGIN
    IF op <> 'INSERT' OR amount = 666 THEN
        RETURN;                       -- lost in the payments service
    END IF;
    INSERT INTO effects (saga_id, what) VALUES (new_row->>'saga_id', 'charge');
    INSERT INTO pay_replies VALUES (new_row->>'saga_id', amount <= 100,
                                    CASE WHEN amount <= 100 THEN 'paid ' || amount
                                         ELSE 'card declined' END);
END $$;
SELECT ep.create_table_projection('answer_requests', 'pay_requests', 'on_request(text, jsonb, jsonb)');
});

# orders (A): the saga, and replies turned into complete_step / fail_step
$a->safe_psql('postgres', q{
SET ROLE svc;
SET search_path = svc;
CREATE FUNCTION reserve(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO effects (saga_id, what) VALUES (saga_id, 'reserve') RETURNING '{"reserved": true}'::jsonb $$;
CREATE FUNCTION release(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO effects (saga_id, what) VALUES (saga_id, 'release') RETURNING NULL::jsonb $$;
CREATE FUNCTION pay(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pay_requests VALUES (saga_id, (data->>'amount')::int);
    RETURN NULL;                      -- wait for the reply
END $$;
CREATE FUNCTION refund(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO effects (saga_id, what) VALUES (saga_id, 'refund') RETURNING NULL::jsonb $$;
CREATE FUNCTION ship(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO effects (saga_id, what) VALUES (saga_id, 'ship') RETURNING '{"shipped": true}'::jsonb $$;
SELECT ep.define_saga('order', '[
    {"name": "reserve", "action": "reserve", "compensation": "release"},
    {"name": "pay",     "action": "pay",     "compensation": "refund", "timeout": "6 seconds"},
    {"name": "ship",    "action": "ship"}
]');
CREATE FUNCTION on_reply(op text, old_row jsonb, new_row jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF op <> 'INSERT' THEN
        RETURN;
    END IF;
    IF (new_row->>'ok')::boolean THEN
        PERFORM ep.complete_step(new_row->>'saga_id', 'pay',
                                 jsonb_build_object('payment', new_row->>'detail'));
    ELSE
        PERFORM ep.fail_step(new_row->>'saga_id', 'pay', new_row->>'detail');
    END IF;
END $$;
SELECT ep.create_table_projection('pay_replies', 'pay_replies', 'on_reply(text, jsonb, jsonb)');
});

# native logical replication: requests A -> B, replies B -> A
$a->safe_psql('postgres', "CREATE PUBLICATION pay_req FOR TABLE svc.pay_requests");
$b->safe_psql('postgres', "CREATE PUBLICATION pay_rep FOR TABLE svc.pay_replies");
my $aconn = $a->connstr . ' dbname=postgres';
my $bconn = $b->connstr . ' dbname=postgres';
$b->safe_psql('postgres', "CREATE SUBSCRIPTION pay_req CONNECTION '$aconn' PUBLICATION pay_req");
$a->safe_psql('postgres', "CREATE SUBSCRIPTION pay_rep CONNECTION '$bconn' PUBLICATION pay_rep");
$b->wait_for_subscription_sync($a, 'pay_req');
$a->wait_for_subscription_sync($b, 'pay_rep');

$a->safe_psql('postgres', q{
SET ROLE svc;
SELECT ep.start_saga('order', 'o-ok', '{"amount": 40}');
SELECT ep.start_saga('order', 'o-decl', '{"amount": 500}');
SELECT ep.start_saga('order', 'o-lost', '{"amount": 666}');
});

$a->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM ep.sagas WHERE status IN ('completed', 'compensated', 'failed')")
  or die "the sagas did not finish: "
  . $a->safe_psql('postgres', 'SELECT saga_id, status, current_step, phase FROM ep.sagas');

is($a->safe_psql('postgres', q{
SELECT saga_id, status, data->>'payment', last_error FROM ep.sagas ORDER BY saga_id}),
	"o-decl|compensated||step \"pay\" failed: card declined\n"
	. "o-lost|compensated||step \"pay\" timed out after 6 s\n"
	. "o-ok|completed|paid 40|",
	'paid, declined and timed-out sagas end as they should');
is($a->safe_psql('postgres', q{
SELECT saga_id, string_agg(what, ',' ORDER BY n) FROM svc.effects GROUP BY 1 ORDER BY 1}),
	"o-decl|reserve,release\no-lost|reserve,release\no-ok|reserve,ship",
	'orders: the stock of declined and lost payments is released');
is($b->safe_psql('postgres', q{
SELECT saga_id, string_agg(what, ',' ORDER BY n) FROM svc.effects GROUP BY 1 ORDER BY 1}),
	"o-decl|charge\no-ok|charge",
	'payments: each request answered once, the lost one never');
is($a->safe_psql('postgres', q{
SELECT string_agg(event_type, ',' ORDER BY stream_version) FROM ep.read_stream('saga_order-o-ok')}),
	'SagaStarted,SagaStepCompleted,SagaStepWaiting,SagaStepCompleted,SagaStepCompleted,SagaCompleted',
	'the history of the completed saga');

$a->stop;
$b->stop;
done_testing();
