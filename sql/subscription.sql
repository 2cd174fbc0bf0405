-- Persistent subscriptions with server-side checkpoints.
DROP EXTENSION IF EXISTS event_patterns;
CREATE EXTENSION event_patterns;

SELECT ep.append('invoice-1', 'Issued', '{"total": 10}');
SELECT ep.append('invoice-2', 'Issued', '{"total": 20}');
SELECT ep.append('invoice-1', 'Paid', '{}');
SELECT ep.append('customer-1', 'Joined', '{}');

SELECT ep.create_subscription('billing', 'invoice');
SELECT ep.create_subscription('payments', event_types => ARRAY['Paid']);
SELECT ep.create_subscription('late', from_position => 3);
SELECT max(global_position) AS p2 FROM ep.read_all(0, 2) \gset
SELECT max(global_position) AS p3 FROM ep.read_all(0, 3) \gset

-- poll does not move the checkpoint; ack does
SELECT global_position, stream_id, event_type FROM ep.poll('billing');
SELECT global_position FROM ep.poll('billing', 2);
SELECT ep.ack('billing', :p2);
SELECT global_position, event_type FROM ep.poll('billing');
SELECT ep.ack('billing', :p3);
SELECT count(*) FROM ep.poll('billing');
SELECT ep.append('invoice-3', 'Issued', '{}');
SELECT global_position, stream_id FROM ep.poll('billing');

SELECT global_position, event_type FROM ep.poll('payments');
SELECT global_position, stream_id FROM ep.poll('late');

-- consumer groups: each member has its own checkpoint
SELECT ep.create_subscription('grouped', 'invoice');
SELECT count(*) FROM ep.poll('grouped', 100, 0, 2) a;
SELECT (SELECT count(*) FROM ep.poll('grouped', 100, 0, 2))
     + (SELECT count(*) FROM ep.poll('grouped', 100, 1, 2)) AS total;
SELECT ep.ack('grouped', 100, 0);
SELECT count(*) FROM ep.poll('grouped', 100, 0, 2);
SELECT count(*) > 0 AS member1_unaffected FROM ep.poll('grouped', 100, 1, 2);
SELECT subscription, consumer_member, position FROM ep.subscription_checkpoints ORDER BY 1, 2;

-- bad input
SELECT ep.create_subscription('billing');
SELECT ep.create_subscription(NULL);
SELECT ep.create_subscription('');
SELECT ep.create_subscription('neg', from_position => -1);
SELECT ep.poll('nope');
SELECT ep.poll(NULL);
SELECT ep.poll('billing', -1);
SELECT ep.poll('billing', 10, 0);
SELECT ep.ack('nope', 1);
SELECT ep.ack('billing', -1);
SELECT ep.ack('billing', NULL);
SELECT ep.drop_subscription('nope');

-- only the subscription's owner (or a member of it) may move or drop it
CREATE ROLE ep_other;
SET SESSION AUTHORIZATION ep_other;
SELECT ep.ack('billing', 1);
SELECT ep.drop_subscription('billing');
SELECT count(*) FROM ep.poll('billing');  -- reading is allowed
RESET SESSION AUTHORIZATION;
DROP ROLE ep_other;

SELECT ep.drop_subscription('grouped');
SELECT count(*) FROM ep.subscription_checkpoints WHERE subscription = 'grouped';
SELECT name, category, event_types, from_position FROM ep.subscriptions ORDER BY name;
