-- event_patterns demo: every feature, on a throwaway cluster (make demo).
\pset footer off
\pset null '(null)'
\set ON_ERROR_STOP 1
\echo
\echo '################################################################'
\echo '# event_patterns demo'
\echo '################################################################'
CREATE EXTENSION event_patterns;
SELECT extversion AS "installed version" FROM pg_extension WHERE extname = 'event_patterns';

\echo
\echo '== 1. Event store: a bank account whose balance is the sum of its events'
SELECT ep.append('account-42', 'Opened', '{"owner": "ada"}', expected_version => 0) AS version;
SELECT ep.append_events('account-42', '[
    {"type": "Deposited", "data": {"amount": 100}},
    {"type": "Withdrawn", "data": {"amount": 30}, "metadata": {"channel": "atm"}}
]', expected_version => 1) AS version;
SELECT stream_version, event_type, data, metadata FROM ep.read_stream('account-42');
SELECT sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::numeric
                           WHEN 'Withdrawn' THEN -(data->>'amount')::numeric
                           ELSE 0 END) AS balance
  FROM ep.read_stream('account-42');

\echo
\echo '-- optimistic concurrency: a writer with a stale version gets EP001'
\set ON_ERROR_STOP 0
\set VERBOSITY default
SELECT ep.append('account-42', 'Deposited', '{"amount": 5}', expected_version => 1);
\set ON_ERROR_STOP 1

\echo
\echo '-- idempotent appends: retrying the same event ids writes nothing'
SELECT ep.append_events('order-7', '[{"type": "Placed", "id": "0b7c5c9e-5d1e-4c59-9a38-6d8f3c3f0a01"}]') AS first_try,
       ep.append_events('order-7', '[{"type": "Placed", "id": "0b7c5c9e-5d1e-4c59-9a38-6d8f3c3f0a01"}]') AS retry;
SELECT count(*) AS events_in_order_7 FROM ep.read_stream('order-7');

\echo
\echo '-- global order and categories (readers never skip an event that commits late)'
SELECT ep.append('account-43', 'Opened', '{"owner": "grace"}');
SELECT global_position, stream_id, stream_version, event_type FROM ep.read_all(0, 10);
SELECT global_position, stream_id, event_type FROM ep.read_category('account');

\echo
\echo '-- a persistent subscription: poll, process, ack'
SELECT ep.create_subscription('ledger', category => 'account');
SELECT global_position, stream_id, event_type FROM ep.poll('ledger', 2);
SELECT ep.ack('ledger', (SELECT max(global_position) FROM ep.poll('ledger', 2)));
SELECT global_position, stream_id, event_type FROM ep.poll('ledger');

\echo
\echo '-- stream limits and deletion'
SELECT ep.set_stream_metadata('account-43', max_count => 1);
SELECT ep.append('account-43', 'Deposited', '{"amount": 7}');
SELECT stream_version, event_type FROM ep.read_stream('account-43');
SELECT ep.delete_stream('order-7');
SELECT count(*) AS visible_after_soft_delete FROM ep.read_stream('order-7');
SELECT ep.delete_stream('account-43', hard => true);
\set ON_ERROR_STOP 0
SELECT ep.append('account-43', 'Deposited', '{"amount": 1}');
\set ON_ERROR_STOP 1

\echo
\echo '-- events are immutable (EP004)'
\set ON_ERROR_STOP 0
UPDATE ep.events SET data = '{"amount": 1000000}' WHERE stream_id = 'account-42';
\set ON_ERROR_STOP 1

\echo
\echo '== 2. Folds, temporal queries, snapshots, upcasting, redaction'
CREATE FUNCTION public.balance(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
    + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                        WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric ELSE 0 END)
$$;
SELECT ep.aggregate('account-42', 'public.balance(jsonb, ep.events)') AS now,
       ep.aggregate('account-42', 'public.balance(jsonb, ep.events)', as_of_version => 2) AS as_of_version_2;
\echo '-- a snapshot every 2 events: later folds start from it, results stay identical'
SELECT ep.set_snapshot_policy('public.balance(jsonb, ep.events)', 2);
SELECT ep.aggregate('account-42', 'public.balance(jsonb, ep.events)') AS with_snapshot;
SELECT stream_id, version, state FROM ep.snapshots;
\echo '-- upcasting: Deposited v1 {amount} becomes v2 {amount, currency} on every read'
CREATE FUNCTION public.deposited_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
  $$ SELECT data || '{"currency": "EUR"}' $$;
SELECT ep.register_upcaster('Deposited', 1, 'public.deposited_v1_to_v2(jsonb)');
SELECT stream_version, event_type, data, schema_version FROM ep.read_stream('account-42');
SELECT data, schema_version AS stored_schema_version FROM ep.events
 WHERE stream_id = 'account-42' AND event_type = 'Deposited';
\echo '-- redaction for a data-protection request keeps positions and versions'
SELECT ep.append('customer-17', 'Registered', '{"email": "ada@example.com"}');
SELECT ep.redact_stream('customer-17', 'erasure request #114') AS redacted_events;
SELECT stream_version, event_type, data FROM ep.read_stream('customer-17');
SELECT stream_id, reason, redacted_by FROM ep.redactions;

\echo
\echo '== 3. Background workers and jobs'
SELECT pg_sleep(1.5);
SELECT database, pid IS NOT NULL AS running, state FROM ep.workers;
SELECT kind, target, schedule, owner FROM ep.jobs ORDER BY job_id;
SELECT ep.schedule_job('demo-heartbeat', '1 second', $$SELECT 1$$) > 0 AS scheduled;
SELECT pg_sleep(2.5);
SELECT j.target, r.status, r.message FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
 WHERE j.target = 'demo-heartbeat' ORDER BY r.started_at LIMIT 1;
SELECT ep.unschedule_job('demo-heartbeat');

\echo
\echo '== 4. CQRS projections driven by logical decoding (applied by the background worker)'
\echo '-- an event-sourced account balance, written the natural way: unqualified names,'
\echo '-- an ordinary role; the handler runs as that role with its search_path'
CREATE ROLE bank_app LOGIN;
GRANT CREATE ON SCHEMA public TO bank_app;
SET ROLE bank_app;
SET search_path = public;
CREATE TABLE balances (account text PRIMARY KEY, balance numeric NOT NULL);
CREATE FUNCTION apply_balance(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO balances AS b
    VALUES (e.stream_id, CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                                           ELSE -(e.data->>'amount')::numeric END)
    ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance;
END $$;
SELECT ep.create_projection('balances', 'apply_balance(ep.events)',
                            event_types => ARRAY['Deposited', 'Withdrawn'], category => 'account');
RESET search_path;
RESET ROLE;
SELECT name, owner, search_path FROM ep.projections WHERE name = 'balances';
SELECT ep.append('account-44', 'Deposited', '{"amount": 250}');
SELECT ep.append('account-44', 'Withdrawn', '{"amount": 50}');
\echo '-- read your writes: wait until the worker has applied everything committed so far'
SELECT ep.wait_for_projection('balances', '30 seconds') AS caught_up;
SELECT * FROM public.balances ORDER BY account;

\echo '-- change data capture: a normalized write model feeding a denormalized feed'
CREATE TABLE public.users (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.posts (id int PRIMARY KEY, author_id int NOT NULL REFERENCES public.users,
                           body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.feed (post_id int PRIMARY KEY, author_id int NOT NULL, author_name text NOT NULL,
                          body text NOT NULL, created_at timestamptz NOT NULL);
CREATE FUNCTION public.feed_from_posts(op text, old_row jsonb, new_row jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF op = 'TRUNCATE' THEN
        DELETE FROM public.feed;
    ELSIF op = 'DELETE' THEN
        DELETE FROM public.feed WHERE post_id = (old_row->>'id')::int;
    ELSE
        INSERT INTO public.feed
        SELECT (new_row->>'id')::int, u.id, u.name, new_row->>'body', (new_row->>'created_at')::timestamptz
          FROM public.users u WHERE u.id = (new_row->>'author_id')::int
        ON CONFLICT (post_id) DO UPDATE
           SET body = excluded.body, author_id = excluded.author_id, author_name = excluded.author_name;
    END IF;
END $$;
CREATE FUNCTION public.feed_from_users(op text, old_row jsonb, new_row jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF op = 'UPDATE' THEN
        UPDATE public.feed SET author_name = new_row->>'name' WHERE author_id = (new_row->>'id')::int;
    END IF;
END $$;
SELECT ep.create_table_projection('feed_posts', 'public.posts', 'public.feed_from_posts(text, jsonb, jsonb)');
SELECT ep.create_table_projection('feed_users', 'public.users', 'public.feed_from_users(text, jsonb, jsonb)');
INSERT INTO public.users VALUES (1, 'ann'), (2, 'bob');
INSERT INTO public.posts (id, author_id, body) VALUES (10, 1, 'hello'), (11, 2, 'hi ann');
UPDATE public.users SET name = 'Ann' WHERE id = 1;
DELETE FROM public.posts WHERE id = 11;
SELECT ep.wait_for_projection(NULL, '30 seconds') AS caught_up;
SELECT author_name, body FROM public.feed ORDER BY post_id;
\echo '-- when a handler fails: a poison event is retried, then parked; the projection goes on'
CREATE FUNCTION public.picky(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'bad' THEN RAISE EXCEPTION 'cannot handle event %', e.global_position; END IF;
END $$;
SELECT ep.create_projection('picky', 'public.picky(ep.events)', category => 'audit');
SELECT ep.append('audit-1', 'Checked', '{"bad": true}');
SELECT ep.append('audit-1', 'Checked', '{}');
SELECT pg_sleep(2);
SELECT ep.wait_for_projection('picky', '30 seconds') AS caught_up;
SELECT projection, error, attempts FROM ep.parked_events;
\echo '-- a handler that cannot work (its table is missing) parks at once, without retries;'
\echo '-- after 10 such events in a row the projection stops as failed, and others go on'
CREATE FUNCTION public.archive(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.archive_log VALUES (e.global_position); END $$;
SELECT ep.create_projection('archive', 'public.archive(ep.events)', category => 'ledger');
SELECT ep.append('ledger-' || g, 'Booked', '{}') FROM generate_series(1, 12) g;
SELECT pg_sleep(3);
SELECT name, status, parked, last_error FROM ep.projections WHERE name = 'archive';
SELECT ep.wait_for_projection('archive', '30 seconds') AS waits_for_a_failed_projection;
\echo '-- fix the cause, hand the parked events back, resume: nothing lost'
CREATE TABLE public.archive_log (pos bigint PRIMARY KEY);
SELECT ep.retry_parked('archive');
SELECT ep.resume_projection('archive');
SELECT ep.wait_for_projection('archive', '30 seconds') AS caught_up;
SELECT pg_sleep(1);
SELECT count(*) AS archived FROM public.archive_log;
SELECT name, mode, status, lag_events, parked FROM ep.projections ORDER BY name;

\echo
\echo '== 5. Incrementally maintained materialized views'
\echo '-- a daily sales summary per category and region, deferred and refreshed on a schedule'
CREATE TABLE public.sales (id serial PRIMARY KEY, day date, category text, region text, amount numeric);
INSERT INTO public.sales (day, category, region, amount)
SELECT date '2026-11-01' + g % 7, (ARRAY['books', 'games', 'music'])[1 + g % 3],
       (ARRAY['north', 'south'])[1 + g % 2], (g * 37) % 200
  FROM generate_series(1, 10000) g;
SELECT ep.create_incremental_view('daily_sales',
    'SELECT day, category, region, count(*) AS orders, sum(amount) AS revenue, max(amount) AS biggest
       FROM public.sales GROUP BY day, category, region', 'deferred');
SELECT ep.schedule_refresh('daily_sales', '2 seconds');
INSERT INTO public.sales (day, category, region, amount) VALUES ('2026-11-01', 'books', 'north', 500);
UPDATE public.sales SET amount = amount + 1 WHERE id <= 10;
SELECT name, refresh, schedule, pending_changes, is_stale FROM ep.incremental_views;
\echo '-- ... the background worker refreshes it on its schedule, as the view owner'
SELECT pg_sleep(4);
SELECT name, pending_changes, is_stale, last_refreshed_at IS NOT NULL AS refreshed FROM ep.incremental_views;
SELECT * FROM daily_sales WHERE day = '2026-11-01' ORDER BY category, region;
SELECT j.kind, j.target, r.status FROM ep.job_runs r JOIN ep.jobs j USING (job_id)
 WHERE j.kind = 'view_refresh' ORDER BY r.started_at LIMIT 1;
\echo '-- the view equals its query'
SELECT count(*) AS differing_rows FROM (
  (SELECT * FROM daily_sales EXCEPT ALL
   SELECT day, category, region, count(*), sum(amount), max(amount) FROM public.sales GROUP BY 1, 2, 3)
  UNION ALL
  (SELECT day, category, region, count(*), sum(amount), max(amount) FROM public.sales GROUP BY 1, 2, 3
   EXCEPT ALL SELECT * FROM daily_sales)) d;
\echo '-- an immediate outer-join view: every region with its orders, kept exact by each write'
CREATE TABLE public.regions (region text PRIMARY KEY, manager text);
INSERT INTO public.regions VALUES ('north', 'Ada'), ('south', 'Grace'), ('east', 'Linus');
SELECT ep.create_incremental_view('region_totals',
    'SELECT r.region, r.manager, count(s.id) AS orders, sum(s.amount) AS revenue
       FROM public.regions r LEFT JOIN public.sales s ON s.region = r.region
      GROUP BY r.region, r.manager');
SELECT * FROM region_totals ORDER BY region;
INSERT INTO public.sales (day, category, region, amount) VALUES ('2026-11-02', 'games', 'east', 99);
UPDATE public.regions SET manager = 'Barbara' WHERE region = 'north';
SELECT * FROM region_totals ORDER BY region;
\echo '-- a live aggregate over the event store, maintained in each appending transaction'
SELECT ep.create_incremental_view('event_counts',
    'SELECT category, event_type, count(*) AS n, max(global_position) AS last_position
       FROM ep.events GROUP BY category, event_type');
SELECT ep.append('order-8', 'Placed', '{"total": 30}');
SELECT ep.append('order-8', 'Shipped', '{}');
SELECT category, event_type, n FROM event_counts ORDER BY 1, 2;
\echo '-- anything else works with full refresh (recomputed, only the difference is written)'
SELECT ep.create_incremental_view('top_days',
    'SELECT day, sum(amount) AS revenue FROM public.sales GROUP BY day ORDER BY 2 DESC LIMIT 3', 'full');
SELECT * FROM top_days ORDER BY revenue DESC;
\set ON_ERROR_STOP 0
SELECT ep.create_incremental_view('not_incremental',
    'SELECT day, sum(amount) AS revenue FROM public.sales GROUP BY day ORDER BY 2 DESC LIMIT 3', 'immediate');
\set ON_ERROR_STOP 1
\echo '-- shapes beyond deltas are kept exact by recompute-and-diff: a CTE with NOT EXISTS'
SELECT ep.create_incremental_view('idle_regions',
    'WITH big AS (SELECT region FROM public.sales WHERE amount > 50)
     SELECT r.region, r.manager FROM public.regions r
      WHERE NOT EXISTS (SELECT 1 FROM big b WHERE b.region = r.region)');
SELECT * FROM idle_regions ORDER BY region;
INSERT INTO public.regions VALUES ('west', 'Ken');
SELECT * FROM idle_regions ORDER BY region;
SELECT name, strategy FROM ep.ivm_views WHERE name IN ('idle_regions', 'region_totals') ORDER BY 1;

\echo '-- services sharing one database: category ownership'
CREATE ROLE shipping_svc LOGIN;
CREATE ROLE billing_svc LOGIN;
SELECT ep.set_category_owner('parcel', 'shipping_svc');
SET ROLE shipping_svc;
SELECT ep.append('parcel-1', 'Packed', '{"weight": 2}');
RESET ROLE;
SET ROLE billing_svc;
\set ON_ERROR_STOP 0
SELECT ep.append('parcel-1', 'Tampered', '{}');            -- 42501: not billing's category
\set ON_ERROR_STOP 1
SELECT count(*) AS parcel_events_billing_sees FROM ep.events WHERE category = 'parcel';
RESET ROLE;
SELECT ep.grant_category('parcel', 'billing_svc', ARRAY['read']);
SET ROLE billing_svc;
SELECT count(*) AS after_grant FROM ep.read_category('parcel');
RESET ROLE;
SELECT category, owner, grants FROM ep.categories;

\echo '-- jobs run in a session of their owner, with a time limit'
SET ROLE shipping_svc;
SELECT ep.schedule_job('shipping_tick', '1 second', 'SELECT session_user, current_user', '10 seconds');
RESET ROLE;
SELECT pg_sleep(2.5);
SELECT target, owner, last_status, time_limit FROM ep.jobs WHERE target = 'shipping_tick';
SET ROLE shipping_svc;
SELECT ep.unschedule_job('shipping_tick');
RESET ROLE;

\echo
\echo '== 6. Sagas: place order -> reserve stock -> charge payment -> ship, with compensations'
\echo '-- the shop service owns the saga; the payments service answers requests it receives'
\echo '-- (here projections in the same database; across databases requests and replies'
\echo '-- travel by logical replication, see test/tap/t/111_saga_two_clusters.pl)'
CREATE ROLE shop_svc LOGIN;
CREATE SCHEMA shop AUTHORIZATION shop_svc;
SET ROLE shop_svc;
SET search_path = shop;
CREATE TABLE orders (order_id text PRIMARY KEY, item text, amount int, status text);
CREATE TABLE stock (item text PRIMARY KEY, available int NOT NULL CHECK (available >= 0));
INSERT INTO stock VALUES ('book', 10);
CREATE TABLE shipments (order_id text PRIMARY KEY, item text);
CREATE TABLE payment_requests (order_id text PRIMARY KEY, amount int);

CREATE FUNCTION place_order(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO orders VALUES (saga_id, data->>'item', (data->>'amount')::int, 'pending')
    RETURNING jsonb_build_object('order', status) $$;
CREATE FUNCTION cancel_order(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    UPDATE orders SET status = 'cancelled' WHERE order_id = saga_id
    RETURNING jsonb_build_object('order', status) $$;
CREATE FUNCTION reserve_stock(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    UPDATE stock SET available = available - 1 WHERE item = data->>'item'
    RETURNING jsonb_build_object('reserved', item) $$;
CREATE FUNCTION release_stock(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    UPDATE stock SET available = available + 1 WHERE item = data->>'reserved'
    RETURNING jsonb_build_object('released', item) $$;
-- asks the payments service and waits for its reply (returns NULL)
CREATE FUNCTION charge_payment(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO payment_requests VALUES (saga_id, (data->>'amount')::int) RETURNING NULL::jsonb $$;
CREATE FUNCTION refund_payment(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('refunded', data->'paid') $$;
CREATE FUNCTION ship_order(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$
    WITH s AS (INSERT INTO shipments VALUES (saga_id, data->>'item'))
    UPDATE orders SET status = 'shipped' WHERE order_id = saga_id
    RETURNING jsonb_build_object('order', status) $$;
SELECT ep.define_saga('order', '[
    {"name": "place",   "action": "place_order",    "compensation": "cancel_order"},
    {"name": "reserve", "action": "reserve_stock",  "compensation": "release_stock", "retries": 2},
    {"name": "pay",     "action": "charge_payment", "compensation": "refund_payment", "timeout": "3 seconds"},
    {"name": "ship",    "action": "ship_order"}
]');

-- the payments service: approves up to 100, declines more, never answers 666;
-- it answers with events (stream payment-<order>)
CREATE FUNCTION payments_answer(op text, old_row jsonb, new_row jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE amount int := (new_row->>'amount')::int;
BEGIN
    IF op = 'INSERT' AND amount <> 666 THEN
        PERFORM ep.append('payment-' || (new_row->>'order_id'),
                          CASE WHEN amount <= 100 THEN 'PaymentApproved' ELSE 'PaymentDeclined' END,
                          jsonb_build_object('order_id', new_row->>'order_id', 'amount', amount));
    END IF;
END $$;
SELECT ep.create_table_projection('payments_service', 'payment_requests',
                                  'payments_answer(text, jsonb, jsonb)');
-- the shop turns the answers into the outcome of its waiting step
CREATE FUNCTION payment_reply(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'PaymentApproved' THEN
        PERFORM ep.complete_step(e.data->>'order_id', 'pay', jsonb_build_object('paid', e.data->'amount'));
    ELSE
        PERFORM ep.fail_step(e.data->>'order_id', 'pay', 'card declined');
    END IF;
END $$;
SELECT ep.create_projection('payment_replies', 'payment_reply(ep.events)', category => 'payment');

\echo '-- three orders: one paid, one declined, one the payments service never answers'
SELECT ep.start_saga('order', 'order-1', '{"item": "book", "amount": 30}');
SELECT ep.start_saga('order', 'order-2', '{"item": "book", "amount": 500}');
SELECT ep.start_saga('order', 'order-3', '{"item": "book", "amount": 666}');
SELECT ep.start_saga('order', 'order-1', '{"item": "book", "amount": 30}');   -- idempotent
RESET search_path;
RESET ROLE;
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN (SELECT count(*) FROM ep.sagas WHERE saga_type = 'order'
                    AND status IN ('completed', 'compensated', 'failed')) = 3;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT saga_id, status, last_error, data->>'paid' AS paid FROM ep.sagas WHERE saga_type = 'order' ORDER BY saga_id;
SELECT * FROM shop.orders ORDER BY order_id;
SELECT * FROM shop.stock;
\echo '-- the history of each saga is a stream of the event store (category saga_order)'
SELECT stream_version, event_type, data->>'step' AS step, data->>'error' AS error
  FROM ep.read_stream('saga_order-order-2') ORDER BY stream_version;

\echo
\echo '== 7. CQRS with a separate query database: the writer publishes its store,'
\echo '--    a read database of the same cluster follows it and hosts the feed'
SELECT ep.publish_store();
SELECT current_database() AS writer_db, current_setting('port') AS port,
       split_part(current_setting('unix_socket_directories'), ',', 1) AS sockdir \gset
CREATE DATABASE demo_query;
\c demo_query
CREATE EXTENSION event_patterns;
-- the slot is created on the writer first, so this works within one cluster
SELECT ep.follow_store('query_db', format('dbname=%s port=%s host=%s', :'writer_db', :'port', :'sockdir'));
\echo '-- the denormalized feed, a projection of an ordinary role on the query database'
CREATE ROLE feed_app LOGIN;
GRANT CREATE ON SCHEMA public TO feed_app;
SET ROLE feed_app;
SET search_path = public;
CREATE TABLE post_feed (post text PRIMARY KEY, author text NOT NULL, body text NOT NULL,
                        likes int NOT NULL DEFAULT 0, at_position bigint NOT NULL);
CREATE FUNCTION feed_handler(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'PostWritten' THEN
        INSERT INTO post_feed (post, author, body, at_position)
        VALUES (e.stream_id, e.data->>'author', e.data->>'body', e.global_position);
    ELSIF e.event_type = 'PostLiked' THEN
        UPDATE post_feed SET likes = likes + 1, at_position = e.global_position WHERE post = e.stream_id;
    END IF;
END $$;
SELECT ep.create_projection('post_feed', 'feed_handler(ep.events)', category => 'post');
RESET search_path;
RESET ROLE;
\echo '-- appends on the query database are refused (EP005), with a hint naming the writer'
\set ON_ERROR_STOP 0
SELECT ep.append('post-1', 'PostWritten', '{}');
\set ON_ERROR_STOP 1

\c :writer_db
\echo '-- commands on the writer; last_position() is the read-your-writes token'
SELECT ep.append('post-1', 'PostWritten', '{"author": "ann", "body": "hello from the write side"}');
SELECT ep.append('post-2', 'PostWritten', '{"author": "bob", "body": "CQRS, two databases"}');
SELECT ep.append('post-1', 'PostLiked', '{"by": "bob"}');
SELECT ep.last_position() AS token \gset
SELECT role, follower, wal_status FROM ep.store_status;

\c demo_query
\echo '-- read your writes on the query database: wait for the token, then for the feed'
SELECT ep.wait_for_position(:token, '30 seconds') AS replicated;
SELECT ep.wait_for_projection('post_feed', '30 seconds') AS projected;
SELECT post, author, body, likes, at_position = :token AS includes_my_like
  FROM public.post_feed ORDER BY post;
SELECT role, readable_position >= :token AS readable, lag_events, active FROM ep.store_status;
SELECT ep.unfollow_store('query_db');
\c :writer_db
SELECT ep.unpublish_store();
DROP DATABASE demo_query;

\echo
\echo '== 8. Cross-service reporting: async views over logical replication'
\echo '-- two services own their databases (orders, customers) and publish their tables;'
\echo '-- a reporting database subscribes to both and keeps revenue per customer segment'
\echo '-- per day as an async view: maintained by the worker from the WAL of the reporting'
\echo '-- database (the apply worker fires no statement triggers, so immediate and deferred'
\echo '-- views could not follow replicated changes)'
CREATE DATABASE orders_svc;
CREATE DATABASE customers_svc;
CREATE DATABASE reporting;
\set conn_orders 'host=/tmp user=postgres dbname=orders_svc port=' :port
\set conn_customers 'host=/tmp user=postgres dbname=customers_svc port=' :port
\c orders_svc
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, day date NOT NULL, amount numeric NOT NULL);
INSERT INTO orders (customer_id, day, amount)
SELECT 1 + g % 29, date '2026-11-01' + g % 3, (g * 13) % 90 FROM generate_series(1, 300) g;
CREATE PUBLICATION orders_pub FOR TABLE orders;
-- same cluster: the subscription's slot is created beforehand
SELECT 'slot created' FROM pg_create_logical_replication_slot('orders_sub', 'pgoutput');
\c customers_svc
CREATE TABLE customers (id int PRIMARY KEY, name text, segment text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['retail', 'smb', 'enterprise'])[1 + g % 3]
  FROM generate_series(1, 30) g;
CREATE PUBLICATION customers_pub FOR TABLE customers;
SELECT 'slot created' FROM pg_create_logical_replication_slot('customers_sub', 'pgoutput');
\c reporting
CREATE EXTENSION event_patterns;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, day date NOT NULL, amount numeric NOT NULL);
CREATE TABLE customers (id int PRIMARY KEY, name text, segment text NOT NULL);
-- async views need whole old rows in this database's WAL
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE customers REPLICA IDENTITY FULL;
CREATE SUBSCRIPTION orders_sub CONNECTION :'conn_orders' PUBLICATION orders_pub WITH (create_slot = false);
CREATE SUBSCRIPTION customers_sub CONNECTION :'conn_customers' PUBLICATION customers_pub WITH (create_slot = false);
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT count(*) FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')) = 0
              AND (SELECT count(*) FROM pg_subscription_rel) = 2;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
\echo '-- an immediate view over a replicated table would go stale: refused'
\set ON_ERROR_STOP 0
SELECT ep.create_incremental_view('revenue_now',
    'SELECT c.segment, sum(o.amount) AS revenue FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.segment');
\set ON_ERROR_STOP 1
SELECT ep.create_incremental_view('revenue_by_segment',
    'SELECT c.segment, o.day, count(*) AS orders, sum(o.amount) AS revenue
       FROM orders o JOIN customers c ON c.id = o.customer_id
      GROUP BY c.segment, o.day', 'async');
SELECT ep.wait_for_view('revenue_by_segment');
SELECT * FROM revenue_by_segment ORDER BY day, segment;
\echo '-- both services keep writing ...'
\c orders_svc
INSERT INTO orders (customer_id, day, amount) VALUES (3, '2026-11-01', 1000), (7, '2026-11-02', 250);
UPDATE orders SET amount = amount * 2 WHERE id % 10 = 0;
DELETE FROM orders WHERE id % 25 = 0;
INSERT INTO orders (id, customer_id, day, amount) VALUES (100000, 1, '2026-11-03', 1);
\c customers_svc
UPDATE customers SET segment = 'enterprise' WHERE id IN (3, 4, 5);
UPDATE customers SET name = 'marker' WHERE id = 1;
\c reporting
\echo '-- ... the reporting database receives their commits, the worker applies them to the view'
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM orders WHERE id = 100000)
              AND EXISTS (SELECT 1 FROM customers WHERE id = 1 AND name = 'marker');
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT ep.wait_for_view('revenue_by_segment');
SELECT * FROM revenue_by_segment ORDER BY day, segment;
SELECT name, refresh, is_stale, lag_bytes IS NOT NULL AS lag_known, last_error FROM ep.incremental_views;
SELECT count(*) AS triggers_on_replicated_tables FROM pg_trigger
 WHERE tgrelid IN ('orders'::regclass, 'customers'::regclass) AND NOT tgisinternal;
\echo '-- the view equals its query'
SELECT count(*) AS differing_rows FROM (
  (SELECT * FROM revenue_by_segment EXCEPT ALL
   SELECT c.segment, o.day, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1, 2)
  UNION ALL
  (SELECT c.segment, o.day, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1, 2
   EXCEPT ALL SELECT * FROM revenue_by_segment)) d;
DROP SUBSCRIPTION orders_sub;
DROP SUBSCRIPTION customers_sub;
\c demo

\echo
\echo '== 9. Service channels: orders, payments and shipping, a database each'
\echo '-- orders sends OrderPlaced (its event store forwards them); payments charges'
\echo '-- and answers on its own channel (reply_to / correlation_id); shipping and'
\echo '-- orders handle the answers. Each handler runs exactly once per message.'
CREATE DATABASE orders;
CREATE DATABASE payments;
CREATE DATABASE shipping;
SELECT format('host=%s port=%s dbname=', split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port')) AS conn \gset

\c orders
CREATE EXTENSION event_patterns;
SELECT ep.create_channel('orders.events');
-- the order stream is the service's public feed: no double bookkeeping
SELECT ep.forward_events('orders.events', 'order', '{OrderPlaced}');
CREATE TABLE order_status (order_id text PRIMARY KEY, status text NOT NULL);

\c payments
CREATE EXTENSION event_patterns;
SELECT ep.create_channel('payments.events');
SELECT ep.subscribe_channel('orders.events', :'conn' || 'orders');
CREATE TABLE charges (order_id text PRIMARY KEY, amount numeric NOT NULL, charged_at timestamptz DEFAULT now());
CREATE FUNCTION charge(m ep.messages) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO charges (order_id, amount) VALUES (m.key, (m.payload->>'amount')::numeric);
    -- the answer goes out in the same transaction as the charge (outbox)
    PERFORM ep.reply(m, 'PaymentCaptured', jsonb_build_object('amount', m.payload->'amount'));
END $$;
SELECT ep.create_message_handler('charge', 'orders.events', 'charge(ep.messages)');

\c shipping
CREATE EXTENSION event_patterns;
SELECT ep.subscribe_channel('payments.events', :'conn' || 'payments');
CREATE TABLE shipments (order_id text PRIMARY KEY, created_at timestamptz DEFAULT now());
CREATE FUNCTION ship(m ep.messages) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO shipments (order_id) VALUES (m.key) $$;
SELECT ep.create_message_handler('ship', 'payments.events', 'ship(ep.messages)', '{PaymentCaptured}');

\c orders
SELECT ep.subscribe_channel('payments.events', :'conn' || 'payments');
CREATE FUNCTION paid(m ep.messages) RETURNS void LANGUAGE sql
    AS $$ UPDATE order_status SET status = 'paid' WHERE order_id = m.key $$;
SELECT ep.create_message_handler('paid', 'payments.events', 'paid(ep.messages)');

\echo '-- 400 orders, one transaction each; after 150, the payments consumer is killed'
\echo '-- (its apply worker and its event_patterns worker are terminated)'
CREATE PROCEDURE place_orders(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO order_status VALUES ('order-' || i, 'placed');
        PERFORM ep.append('order-' || i, 'OrderPlaced', jsonb_build_object('amount', 10 + i % 7),
                          '{"reply_to": "payments.events"}');
        COMMIT;
        IF i = 150 THEN
            PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = 'payments'
               AND backend_type IN ('logical replication worker', 'event_patterns worker');
        END IF;
    END LOOP;
END $$;
CALL place_orders(400);
DO $$ BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT count(*) FROM order_status WHERE status = 'paid') = 400;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT status, count(*) FROM order_status GROUP BY status;
SELECT channel, role, consumers, backlog FROM ep.channels ORDER BY 1;

\c payments
SELECT count(*) AS charges, count(DISTINCT order_id) AS distinct_orders, sum(amount) AS total FROM charges;
SELECT name, status, parked, lag_events FROM ep.projections;

\c shipping
DO $$ BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT count(*) FROM shipments) = 400;
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT count(*) AS shipments, count(DISTINCT order_id) AS distinct_orders FROM shipments;
SELECT channel, role, source, backlog, subscription_active FROM ep.channels;
\c demo
