-- Service channels: the producer's API (create, send, forward, reply,
-- grants) and its errors. Delivery to consumers is tested in TAP
-- (test/tap/t/100_channels*.pl).
\pset null '(null)'
SET client_min_messages = warning;
CREATE ROLE ch_orders;
CREATE ROLE ch_clerk;
CREATE ROLE ch_mallory;
GRANT CREATE ON DATABASE regression TO ch_orders;

-- channel names are global: service.topic, lower case
SELECT ep.create_channel('Orders');
SELECT ep.create_channel('orders..events');
SELECT ep.create_channel(NULL);
SELECT ep.create_channel(repeat('x', 49));
-- creating a channel creates a publication: CREATE on the database
SET ROLE ch_mallory;
SELECT ep.create_channel('mallory.events');
SET ROLE ch_orders;
SELECT ep.create_channel('orders.events');
SELECT ep.create_channel('orders.events');
SELECT ep.create_channel('orders.replies');
RESET ROLE;
SELECT channel, role, owner, source, backlog, consumers, pruned_count FROM ep.channels ORDER BY 1;
SELECT pubname, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication ORDER BY 1;
SELECT pubname, schemaname, tablename, attnames FROM pg_publication_tables ORDER BY 1;

-- send: in the caller's transaction
SET ROLE ch_orders;
SELECT ep.send('orders.events', 'OrderPlaced', '{"order": 1}', 'order-1') IS NOT NULL AS sent;
BEGIN;
SELECT ep.send('orders.events', 'OrderPlaced', '{"order": 2}', 'order-2') IS NOT NULL AS sent;
ROLLBACK;
BEGIN;
SELECT ep.send('orders.events', 'OrderPlaced', '{"order": 3}', 'order-3',
               '{"reply_to": "orders.replies", "correlation_id": "c-3"}') IS NOT NULL AS sent;
SAVEPOINT s;
SELECT ep.send('orders.events', 'OrderCancelled', '{"order": 3}', 'order-3') IS NOT NULL AS sent;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT channel, message_type, key, payload, headers, received_seq FROM ep.messages ORDER BY position;
SELECT count(DISTINCT message_id) AS ids, bool_and(sent_at <= now() + interval '1 minute') AS dated
  FROM ep.messages;
-- bad input
SELECT ep.send(NULL, 'T', '{}');
SELECT ep.send('orders.events', NULL, '{}');
SELECT ep.send('orders.events', '', '{}');
SELECT ep.send('orders.events', 'T', '{}', NULL, '[1, 2]');
SELECT ep.send('orders.events', 'T', '{}', NULL, '"x"');
SELECT ep.send('no.such', 'T', '{}');
-- nothing was written by the failures
SELECT count(*) FROM ep.messages;

-- other roles may neither send nor read unless granted
SET ROLE ch_mallory;
SELECT ep.send('orders.events', 'OrderPlaced', '{"forged": true}');
SELECT count(*) FROM ep.messages;
SELECT count(*) FROM ep.channels;
INSERT INTO ep.messages (channel, message_id, position, message_type, sent_at)
VALUES ('orders.events', gen_random_uuid(), 1000, 'Forged', now());
INSERT INTO ep_channels."orders.events" (channel, message_id, position, message_type, sent_at)
VALUES ('orders.events', gen_random_uuid(), 1000, 'Forged', now());
SELECT ep.grant_channel('orders.events', 'ch_mallory', '{send}');
SELECT ep.forward_events('orders.events');
SELECT ep.subscribe_channel('orders.events', 'dbname=regression');
SET ROLE ch_orders;
SELECT ep.grant_channel('orders.events', 'ch_clerk', '{send}');
SELECT ep.grant_channel('orders.events', 'ch_clerk', '{write}');
SELECT ep.grant_channel('orders.events', 'ch_clerk', '{}');
SET ROLE ch_clerk;
SELECT ep.send('orders.events', 'OrderPlaced', '{"order": 4}', 'order-4') IS NOT NULL AS sent;
SELECT count(*) AS clerk_reads FROM ep.messages;   -- send does not give read
SET ROLE ch_orders;
SELECT ep.grant_channel('orders.events', 'ch_clerk', '{read}');
SET ROLE ch_clerk;
SELECT count(*) AS clerk_reads FROM ep.messages;
SET ROLE ch_orders;
SELECT ep.revoke_channel('orders.events', 'ch_clerk', '{send}');
SET ROLE ch_clerk;
SELECT ep.send('orders.events', 'OrderPlaced', '{"order": 5}');

-- request/reply: reply_to and correlation_id
SET ROLE ch_orders;
SELECT ep.reply(m, 'OrderAck', '{"ok": true}') IS NOT NULL AS replied
  FROM ep.messages m WHERE m.key = 'order-3';
SELECT message_type, key, payload, headers - 'in_reply_to' AS headers,
       headers->>'in_reply_to' = (SELECT message_id::text FROM ep.messages WHERE key = 'order-3' AND channel = 'orders.events') AS links_request
  FROM ep.messages WHERE channel = 'orders.replies';
SELECT ep.reply(m, 'OrderAck', '{}') FROM ep.messages m WHERE m.key = 'order-1';

-- forwarding events: atomically with the append, matching ones only
SELECT ep.forward_events('orders.events', 'order', '{OrderShipped}');
SELECT ep.forward_events('orders.events', 'order', '{}');
SELECT ep.forward_events('no.such', 'order');
RESET ROLE;
GRANT EXECUTE ON FUNCTION ep.append(text, text, jsonb, jsonb, bigint, uuid) TO ch_orders;
SET ROLE ch_orders;
SELECT ep.append('order-ch7', 'OrderShipped', '{"to": "Oslo"}', '{"user": "ann"}');
SELECT ep.append('order-ch7', 'OrderPaid', '{}');
SELECT ep.append('invoice-ch7', 'OrderShipped', '{}');
BEGIN;
SELECT ep.append('order-ch8', 'OrderShipped', '{}');
ROLLBACK;
SELECT m.message_type, m.key, m.payload, m.headers - 'global_position' AS headers, m.message_id = e.event_id AS same_id,
       m.position = e.global_position AS same_position
  FROM ep.messages m JOIN ep.events e ON e.event_id = m.message_id
 WHERE m.channel = 'orders.events' ORDER BY m.position;
SELECT channel, category, event_types, owner FROM ep.channel_forwards;
SELECT ep.unforward_events('orders.events', 'order', '{OrderShipped}');
SELECT ep.append('order-ch9', 'OrderShipped', '{}');
SELECT count(*) AS forwarded FROM ep.messages WHERE key = 'order-ch9';
SELECT count(*) AS forward_trigger FROM pg_trigger WHERE tgname = 'events_forward_to_channels';

-- a forward checks its owner's privileges on every event: once the owner
-- lost send on the channel, or read on the category, it sends nothing
SELECT ep.grant_channel('orders.events', 'ch_clerk', '{send}');
SET ROLE ch_clerk;
SELECT ep.forward_events('orders.events', 'fwd');
SELECT ep.forward_events('orders.events', 'fwdown');
RESET ROLE;
SELECT ep.append('fwd-1', 'Noted', '{}') > 0 AS appended;
SELECT ep.append('fwdown-1', 'Noted', '{}') > 0 AS appended;
SELECT ep.set_category_owner('fwdown', 'ch_orders');
SET ROLE ch_orders;
SELECT ep.revoke_channel('orders.events', 'ch_clerk', '{send}');
RESET ROLE;
SELECT ep.append('fwd-2', 'Noted', '{}') > 0 AS appended;
SELECT ep.append('fwdown-2', 'Noted', '{}') > 0 AS appended;
SET ROLE ch_orders;
SELECT ep.grant_channel('orders.events', 'ch_clerk', '{send}');
RESET ROLE;
SELECT ep.append('fwd-3', 'Noted', '{}') > 0 AS appended;
SELECT ep.append('fwdown-3', 'Noted', '{}') > 0 AS appended;
SELECT key FROM ep.messages WHERE channel = 'orders.events' AND key LIKE 'fwd%' ORDER BY position;
SELECT ep.set_category_owner('fwdown', NULL);
SET ROLE ch_clerk;
SELECT ep.unforward_events('orders.events', 'fwd'), ep.unforward_events('orders.events', 'fwdown');
SET ROLE ch_orders;
SELECT ep.revoke_channel('orders.events', 'ch_clerk', '{send}');

-- the triggers that run as the extension owner fire only where they belong:
-- no forged messages from a table of another role
RESET ROLE;
CREATE SCHEMA ch_mal AUTHORIZATION ch_mallory;
SET ROLE ch_mallory;
CREATE TABLE ch_mal.fake (event_id uuid, global_position bigint, event_type text, stream_id text,
                          data jsonb, metadata jsonb, stream_version bigint, category text);
CREATE TRIGGER forge AFTER INSERT ON ch_mal.fake FOR EACH ROW EXECUTE FUNCTION ep._forward_events_trigger();
RESET ROLE;
CREATE TRIGGER forge AFTER INSERT ON ch_mal.fake FOR EACH ROW EXECUTE FUNCTION ep._forward_events_trigger();
SET ROLE ch_mallory;
INSERT INTO ch_mal.fake VALUES (gen_random_uuid(), 999999, 'RefundIssued', 'order-1', '{}', '{}', 1, 'order');
CREATE TABLE ch_mal.inbox (channel text, message_id uuid);
CREATE TRIGGER probe BEFORE INSERT ON ch_mal.inbox FOR EACH ROW EXECUTE FUNCTION ep._message_receive('dedup');
INSERT INTO ch_mal.inbox VALUES ('orders.events', gen_random_uuid());
-- a role without read gets no message, also through code that runs in a
-- superuser's session (here a projection applied by one)
SELECT count(*) FROM ep.channel_messages('orders.events');
CREATE TABLE ch_mal.loot (n bigint);
CREATE FUNCTION ch_mal.grab(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO ch_mal.loot SELECT count(*) FROM ep.channel_messages('orders.events') $$;
SELECT ep.create_projection('ch_grab', 'ch_mal.grab(ep.events)', event_types => ARRAY['ChGrab'],
                            category => NULL, mode => 'async', search_path => 'ch_mal');
RESET ROLE;
SET event_patterns.projection_max_retries = 0;
SELECT ep.append('grab-1', 'ChGrab', '{}') > 0 AS appended;
SELECT ep.apply_projections() >= 0 AS applied;
SELECT projection, error FROM ep.parked_events WHERE projection = 'ch_grab';
SELECT count(*) AS looted FROM ch_mal.loot;
RESET event_patterns.projection_max_retries;
SELECT ep.drop_projection('ch_grab');
DROP SCHEMA ch_mal CASCADE;
SET ROLE ch_orders;

-- consumers: only subscribed channels get handlers; the producer is not one
RESET ROLE;
CREATE FUNCTION on_message(m ep.messages) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SET ROLE ch_orders;
SELECT ep.create_message_handler('h', 'orders.events', 'on_message(ep.messages)');
SELECT ep.create_message_handler('h', 'other.events', 'on_message(ep.messages)');
RESET ROLE;
-- a channel table that is not a consumer's cannot be a message handler's source
INSERT INTO ep.projection_defs (name, kind, handler, mode, source)
VALUES ('forged', 'message', 'on_message(ep.messages)', 'async', 'ep_channels."orders.events"');
SELECT ep.subscribe_channel('orders.events', 'dbname=regression');
SELECT ep.subscribe_channel('Bad Name', 'dbname=regression');
SELECT ep.subscribe_channel('other.events', NULL);

-- the view of the producer side (no consumer yet: nothing is confirmed)
SELECT channel, role, backlog, consumers, wal_status, subscription_active FROM ep.channels ORDER BY 1;

-- drop: only the owner
SET ROLE ch_mallory;
SELECT ep.drop_channel('orders.replies');
SET ROLE ch_orders;
SELECT ep.drop_channel('orders.replies');
SELECT ep.drop_channel('orders.replies');
SELECT count(*) FROM pg_publication WHERE pubname = 'ep_channel:orders.replies';
SELECT ep.drop_channel('orders.events');
RESET ROLE;
SELECT count(*) AS messages_left, (SELECT count(*) FROM ep.channel_defs) AS channels_left FROM ep.messages;

-- ep.send reads a cache of the channel definitions: every change is seen
-- at once, in this session and in the transaction that made it, and an
-- aborted one is forgotten
SET ROLE ch_orders;
BEGIN;
SELECT ep.create_channel('cache.events');
SELECT ep.send('cache.events', 'T', '{}') IS NOT NULL AS sent_in_creating_xact;
ROLLBACK;
SELECT ep.send('cache.events', 'T', '{}');
SELECT ep.create_channel('cache.events');
SELECT ep.send('cache.events', 'T', '{"n": 1}') IS NOT NULL AS sent;
SET ROLE ch_clerk;
SELECT ep.send('cache.events', 'T', '{"n": 2}');
SET ROLE ch_orders;
SELECT ep.grant_channel('cache.events', 'ch_clerk', '{send}');
SET ROLE ch_clerk;
SELECT ep.send('cache.events', 'T', '{"n": 3}') IS NOT NULL AS sent_after_grant;
SET ROLE ch_orders;
BEGIN;
SELECT ep.revoke_channel('cache.events', 'ch_clerk', '{send}');
SET LOCAL ROLE ch_clerk;
SELECT ep.send('cache.events', 'T', '{"n": 4}');
ROLLBACK;
SET ROLE ch_clerk;
SELECT ep.send('cache.events', 'T', '{"n": 5}') IS NOT NULL AS sent_after_rolled_back_revoke;
SET ROLE ch_orders;
SELECT ep.revoke_channel('cache.events', 'ch_clerk', '{send}');
SET ROLE ch_clerk;
SELECT ep.send('cache.events', 'T', '{"n": 6}');
-- a revoke names what it takes back: NULL or unknown privileges are errors
SET ROLE ch_orders;
SELECT ep.grant_channel('cache.events', 'ch_clerk', '{send,read}');
SELECT ep.revoke_channel('cache.events', 'ch_clerk', NULL);
SELECT ep.revoke_channel('cache.events', 'ch_clerk', '{}');
SELECT ep.revoke_channel('cache.events', 'ch_clerk', '{send,NULL}');
SELECT ep.revoke_channel('cache.events', 'ch_clerk', '{write}');
SELECT ep.revoke_channel('cache.events', NULL, '{send}');
SELECT senders, readers FROM ep.channel_defs WHERE channel = 'cache.events';
SELECT ep.revoke_channel('cache.events', 'ch_clerk', '{read}');
SELECT senders, readers FROM ep.channel_defs WHERE channel = 'cache.events';
-- dropped and created again: the new table is written
SELECT ep.drop_channel('cache.events');
SELECT ep.send('cache.events', 'T', '{"n": 7}');
SELECT ep.create_channel('cache.events');
SELECT ep.send('cache.events', 'T', '{"n": 8}') IS NOT NULL AS sent_to_new_table;
SELECT payload FROM ep.messages WHERE channel = 'cache.events' ORDER BY position;
SELECT ep.drop_channel('cache.events');
RESET ROLE;

-- ep.send writes the channel's table itself (no executor) while it is as
-- created: every index has each message (amcheck), and a table changed
-- by a superuser (trigger, CHECK, expression index) gets a real INSERT
SET ROLE ch_orders;
SELECT ep.create_channel('direct.events');
SELECT count(ep.send('direct.events', 'T', jsonb_build_object('n', g), 'k' || g)) FROM generate_series(1, 200) g;
RESET ROLE;
CREATE EXTENSION amcheck;
SELECT c.relname, 'checked' AS heapallindexed
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid,
       LATERAL bt_index_check(i.indexrelid, true)
 WHERE i.indrelid = 'ep_channels."direct.events"'::regclass ORDER BY 1;
SET enable_seqscan = off;
SELECT count(*) AS found_by_index FROM ep.messages m
 WHERE m.channel = 'direct.events'
   AND m.message_id IN (SELECT x.message_id FROM ep_channels."direct.events" x);
RESET enable_seqscan;
CREATE TABLE direct_seen (message_type text);
CREATE FUNCTION direct_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.direct_seen VALUES (NEW.message_type);
    RETURN NEW;
END $$;
CREATE TRIGGER note AFTER INSERT ON ep_channels."direct.events" FOR EACH ROW EXECUTE FUNCTION direct_note();
SET ROLE ch_orders;
SELECT ep.send('direct.events', 'Noted', '{}') IS NOT NULL AS sent;
RESET ROLE;
SELECT message_type FROM direct_seen;
DROP TRIGGER note ON ep_channels."direct.events";
ALTER TABLE ep_channels."direct.events" ADD CONSTRAINT no_bad CHECK (message_type <> 'Bad');
SET ROLE ch_orders;
\set VERBOSITY terse
SELECT ep.send('direct.events', 'Bad', '{}');
\set VERBOSITY default
RESET ROLE;
ALTER TABLE ep_channels."direct.events" DROP CONSTRAINT no_bad;
CREATE UNIQUE INDEX direct_once ON ep_channels."direct.events" ((payload->>'once'));
SET ROLE ch_orders;
SELECT ep.send('direct.events', 'Once', '{"once": 1}') IS NOT NULL AS sent;
\set VERBOSITY terse
SELECT ep.send('direct.events', 'Once', '{"once": 1}');
\set VERBOSITY default
RESET ROLE;
DROP INDEX ep_channels.direct_once;
SELECT count(*) AS kept FROM ep.messages WHERE channel = 'direct.events';
DROP EXTENSION amcheck;
DROP TABLE direct_seen;
DROP FUNCTION direct_note();
SET ROLE ch_orders;
SELECT ep.drop_channel('direct.events');
RESET ROLE;

-- a channel's table bypasses ep.messages' row-level security when read
-- directly: default privileges of the extension owner do not reach it
ALTER DEFAULT PRIVILEGES IN SCHEMA ep_channels GRANT SELECT, INSERT ON TABLES TO PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA ep_channels GRANT ALL ON TABLES TO ch_mallory;
SET ROLE ch_orders;
SELECT ep.create_channel('acl.events');
SELECT ep.send('acl.events', 'Secret', '{"pin": 1234}') IS NOT NULL AS sent;
RESET ROLE;
GRANT USAGE ON SCHEMA ep_channels TO ch_mallory;
SELECT relacl IS NULL OR NOT EXISTS (SELECT 1 FROM aclexplode(relacl) a WHERE a.grantee <> relowner) AS owner_only
  FROM pg_class WHERE oid = 'ep_channels."acl.events"'::regclass;
SET ROLE ch_mallory;
SELECT payload FROM ep_channels."acl.events";
INSERT INTO ep_channels."acl.events" (channel, message_id, position, message_type, sent_at)
VALUES ('acl.events', gen_random_uuid(), 1, 'Forged', now());
RESET ROLE;
REVOKE USAGE ON SCHEMA ep_channels FROM ch_mallory;
ALTER DEFAULT PRIVILEGES IN SCHEMA ep_channels REVOKE SELECT, INSERT ON TABLES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA ep_channels REVOKE ALL ON TABLES FROM ch_mallory;
SET ROLE ch_orders;
SELECT ep.drop_channel('acl.events');
RESET ROLE;

-- a role that is not a superuser subscribes only with a password the
-- producer checks (the extension owner makes the connection)
GRANT EXECUTE ON FUNCTION ep.subscribe_channel(text, text) TO ch_clerk;
SELECT 'host=' || current_setting('unix_socket_directories') || ' port=' || current_setting('port')
       || ' dbname=regression password=secret' AS own_socket \gset
SET ROLE ch_clerk;
SELECT ep.subscribe_channel('some.events', 'dbname=regression');
SELECT ep.subscribe_channel('some.events', 'dbname=regression password=');
SELECT ep.subscribe_channel('some.events', 'dbname=regression password=secret');
-- this server's own socket directory, which pg_regress makes in the sticky
-- /tmp: anyone may make it again once it is gone (a producer that does not
-- ask for the password is refused in TAP 100_channels)
SELECT ep.subscribe_channel('some.events', :'own_socket');
SELECT ep.subscribe_channel('some.events', 'dbname=regression password=secret ::bad');
-- one server, reached again the same way: no names to resolve, no lists,
-- no files or services of the server's OS user
SELECT ep.subscribe_channel('some.events', 'host=localhost dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'host=/tmp port=5432 dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'host=@evil port=5432 dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'host=/nonexistent/dir dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'hostaddr=127.0.0.1 sslpassword=x dbname=regression password=secret');
-- named like a standby, the subscription could stand in for one the
-- producer waits for
SELECT ep.subscribe_channel('some.events', 'hostaddr=127.0.0.1 application_name=standby1 dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'hostaddr=127.0.0.1,10.0.0.9 dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'hostaddr=127.0.0.1 port=5432,5433 dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'hostaddr=db.example dbname=regression password=secret');
SELECT ep.subscribe_channel('some.events', 'service=producer password=secret');
SELECT ep.subscribe_channel('some.events', 'dbname=regression password=secret sslcert=/var/lib/postgresql/.postgresql/postgresql.crt');
SELECT ep.subscribe_channel('some.events', 'postgresql://u:secret@/regression?passfile=/tmp/pgpass');
-- nothing was written
SELECT count(*) AS channels_after_refusals FROM ep.channel_defs WHERE channel = 'some.events';
RESET ROLE;
-- what ep.channel_defs.source shows of a connection string: no password,
-- in whichever form it was given
SELECT ep._channel_conninfo_shown('postgresql://app:s3cr%20et@10.1.2.3:5433/orders?sslmode=require') AS uri_form;
SELECT ep._channel_conninfo_shown($$host=/tmp dbname='my db' password='it\'s secret' user=app$$) AS keyword_form;
REVOKE EXECUTE ON FUNCTION ep.subscribe_channel(text, text) FROM ch_clerk;
SELECT count(*) AS channels_left FROM ep.channel_defs;
DROP FUNCTION on_message(ep.messages);
REVOKE EXECUTE ON FUNCTION ep.append(text, text, jsonb, jsonb, bigint, uuid) FROM ch_orders;
REVOKE CREATE ON DATABASE regression FROM ch_orders;
DROP ROLE ch_orders, ch_clerk, ch_mallory;
