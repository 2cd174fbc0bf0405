-- CQRS projections: API and apply behaviour, driven by ep.apply_projections()
\pset null '(null)'
SET event_patterns.projection_retry_backoff = 0;
SET client_min_messages = warning;

CREATE TABLE seen (n serial, pos bigint, type text, data jsonb, who name);
CREATE FUNCTION record_event(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen (pos, type, data, who)
    VALUES (e.global_position, e.event_type, e.data, current_user);
END $$;

-- events stored before the projection exists are caught up from the table
SELECT ep.append('acc-1', 'Opened', '{"owner": "ann"}');
SELECT ep.append('acc-1', 'Deposited', '{"amount": 10}');
SELECT ep.append('acc-2', 'Opened', '{"owner": "bob"}');
SELECT ep.create_projection('all_events', 'record_event(ep.events)');
SELECT name, mode, status, last_position, lag_events, parked FROM ep.projections;
SELECT ep.apply_projections();
SELECT pos, type, data FROM seen ORDER BY n;

-- later events come from decoding, in commit order, once
SELECT ep.append('acc-1', 'Withdrawn', '{"amount": 3}');
SELECT ep.append_events('acc-3', '[{"type": "Opened"}, {"type": "Deposited", "data": {"amount": 1}}]');
SELECT ep.apply_projections();
SELECT ep.apply_projections();   -- nothing left: exactly once
SELECT pos, type FROM seen ORDER BY n;
SELECT count(*) = count(DISTINCT pos) AS no_duplicates FROM seen;
-- the first three came from the table, the next three from decoding
SELECT name, status, last_position, lag_events, applied_count, decoded_count FROM ep.projections;
SELECT ep.wait_for_projection('all_events', '1 second');
SELECT ep.wait_for_projection(NULL, '1 second');

-- a rolled-back append is never applied
BEGIN;
SELECT ep.append('acc-9', 'Opened', '{}');
ROLLBACK;
SELECT ep.append('acc-1', 'Deposited', '{"amount": 5}');
SELECT ep.apply_projections();
SELECT pos, type FROM seen ORDER BY n DESC LIMIT 1;

-- a large (TOASTed) event arrives whole through decoding
SELECT ep.append('big-1', 'Big', jsonb_build_object('blob',
       (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i)));
SELECT ep.apply_projections();
SELECT type, length(data->>'blob') FROM seen WHERE type = 'Big';
SELECT name, decoded_count FROM ep.projections;

-- filters: event types and category
CREATE TABLE balances (account text PRIMARY KEY, balance numeric NOT NULL);
CREATE FUNCTION balance_h(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.balances AS b VALUES (e.stream_id,
        CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                          ELSE -(e.data->>'amount')::numeric END)
    ON CONFLICT (account) DO UPDATE SET balance = b.balance + excluded.balance;
END $$;
SELECT ep.create_projection('balances', 'balance_h(ep.events)',
                            event_types => ARRAY['Deposited', 'Withdrawn'], category => 'acc');
SELECT ep.apply_projections();
SELECT * FROM balances ORDER BY account;

-- poison events: retried, parked, the projection goes on
SET event_patterns.projection_max_retries = 2;
CREATE TABLE poison_seen (pos bigint);
CREATE FUNCTION picky(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.data ? 'bad' THEN RAISE EXCEPTION 'cannot handle event %', e.global_position; END IF;
    INSERT INTO public.poison_seen VALUES (e.global_position);
END $$;
SELECT ep.create_projection('picky', 'picky(ep.events)', category => 'poison');
SELECT ep.append('poison-1', 'A', '{}');
SELECT ep.append('poison-1', 'B', '{"bad": true}');
SELECT ep.append('poison-1', 'C', '{}');
SELECT ep.apply_projections();
SELECT e.event_type FROM poison_seen p JOIN ep.events e ON e.global_position = p.pos ORDER BY p.pos;
SELECT projection, e.event_type, error, attempts
  FROM ep.parked_events pe JOIN ep.events e USING (global_position);
SELECT name, status, parked, last_error FROM ep.projections WHERE name = 'picky';
-- retry_parked hands them back; a handler that is fixed now succeeds
SELECT ep.retry_parked('picky');
SELECT ep.retry_parked('picky');   -- already handed back
CREATE OR REPLACE FUNCTION picky(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.poison_seen VALUES (e.global_position);
END $$;
SELECT ep.apply_projections();
SELECT e.event_type FROM poison_seen p JOIN ep.events e ON e.global_position = p.pos ORDER BY p.pos;
SELECT name, parked FROM ep.projections WHERE name = 'picky';

-- pause and resume
SELECT ep.pause_projection('all_events');
SELECT ep.append('acc-4', 'Opened', '{}');
SELECT ep.apply_projections();
SELECT name, status, lag_events FROM ep.projections WHERE name = 'all_events';
SELECT ep.wait_for_projection('all_events', '10 ms');   -- paused: times out
SELECT ep.resume_projection('all_events');
SELECT ep.apply_projections();
SELECT name, status, lag_events FROM ep.projections WHERE name = 'all_events';
SELECT type FROM seen ORDER BY n DESC LIMIT 1;

-- rebuild: the owner resets the read model, every event is replayed once
TRUNCATE seen;
SELECT ep.rebuild_projection('all_events');
SELECT name, status, last_position FROM ep.projections WHERE name = 'all_events';
SELECT ep.apply_projections();
SELECT name, status FROM ep.projections WHERE name = 'all_events';
SELECT (SELECT count(*) FROM seen) = (SELECT count(*) FROM ep.events) AS replayed_all,
       (SELECT count(DISTINCT pos) FROM seen) = (SELECT count(*) FROM seen) AS once;

-- a small batch size keeps rounds bounded; repeated rounds finish the job
SELECT ep.rebuild_projection('all_events');
TRUNCATE seen;
SELECT ep.apply_projections(5);
SELECT count(*) FROM seen;
SELECT ep.apply_projections(1000);
SELECT (SELECT count(*) FROM seen) = (SELECT count(*) FROM ep.events) AS replayed_all;

-- table projection: change data capture
CREATE TABLE posts (id int PRIMARY KEY, author text NOT NULL, body text);
INSERT INTO posts VALUES (1, 'ann', 'first');
CREATE TABLE changes (n serial, op text, old_row jsonb, new_row jsonb);
CREATE FUNCTION capture(op text, old_row jsonb, new_row jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.changes (op, old_row, new_row) VALUES (op, old_row, new_row);
END $$;
SELECT ep.create_table_projection('posts_cdc', 'posts', 'capture(text, jsonb, jsonb)');
SELECT ep.apply_projections();  -- TRUNCATE, then the existing rows
INSERT INTO posts VALUES (2, 'bob', 'hi'), (3, 'cat', 'yo');
UPDATE posts SET body = 'first!' WHERE id = 1;
UPDATE posts SET id = 30 WHERE id = 3;
DELETE FROM posts WHERE id = 2;
BEGIN; INSERT INTO posts VALUES (99, 'nobody', 'rolled back'); ROLLBACK;
SELECT ep.apply_projections();
TRUNCATE posts;
INSERT INTO posts VALUES (4, 'dan', 'again');
SELECT ep.apply_projections();
SELECT ep.apply_projections();
SELECT op, old_row, new_row FROM changes ORDER BY n;
-- a paused table projection keeps its changes in the slot
SELECT ep.pause_projection('posts_cdc');
INSERT INTO posts VALUES (5, 'eve', 'while paused');
SELECT ep.apply_projections();
SELECT ep.apply_projections();
SELECT count(*) FROM changes WHERE new_row->>'author' = 'eve';
SELECT ep.resume_projection('posts_cdc');
SELECT ep.apply_projections();
SELECT op, new_row FROM changes WHERE new_row->>'author' = 'eve';
DELETE FROM posts WHERE id = 5;
-- REPLICA IDENTITY FULL gives whole old rows
ALTER TABLE posts REPLICA IDENTITY FULL;
UPDATE posts SET body = 'full' WHERE id = 4;
DELETE FROM posts WHERE id = 4;
SELECT ep.apply_projections();
SELECT op, old_row, new_row FROM changes ORDER BY n DESC LIMIT 2;
SELECT name, kind, status, last_position, parked FROM ep.projections WHERE name = 'posts_cdc';
-- an UPDATE that leaves a TOASTed column alone: without REPLICA IDENTITY FULL
-- the column is left out of new_row; with FULL it comes from the old row
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
INSERT INTO docs VALUES (1, 't1', repeat('x', 5000));
SELECT ep.create_table_projection('docs_cdc', 'docs', 'capture(text, jsonb, jsonb)');
SELECT ep.apply_projections();
UPDATE docs SET title = 't2';
SELECT ep.apply_projections();
SELECT op, old_row, new_row ? 'body' AS has_body, new_row->>'title' AS title
  FROM changes ORDER BY n DESC LIMIT 1;
ALTER TABLE docs REPLICA IDENTITY FULL;
UPDATE docs SET title = 't3';
SELECT ep.apply_projections();
SELECT op, length(old_row->>'body') AS old_body, length(new_row->>'body') AS new_body,
       new_row->>'title' AS title
  FROM changes ORDER BY n DESC LIMIT 1;
SELECT ep.drop_projection('docs_cdc');

-- inline projection: same transaction as the append
CREATE TABLE inline_seen (pos bigint, type text);
CREATE FUNCTION inline_h(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF e.event_type = 'Explode' THEN RAISE EXCEPTION 'inline handler refuses'; END IF;
    INSERT INTO public.inline_seen VALUES (e.global_position, e.event_type);
END $$;
SELECT ep.create_projection('inline', 'inline_h(ep.events)', mode => 'inline', category => 'inl');
SELECT ep.append('inl-1', 'Created', '{}');
SELECT ep.append('other-1', 'Created', '{}');
SELECT type FROM inline_seen;
\set VERBOSITY terse
SELECT ep.append('inl-1', 'Explode', '{}');   -- aborts the append
\set VERBOSITY default
SELECT ep.stream_version('inl-1');
SELECT name, mode, status, lag_events FROM ep.projections WHERE name = 'inline';
SELECT ep.wait_for_projection('inline', '0 s');
SELECT ep.drop_projection('inline');
SELECT ep.append('inl-1', 'Again', '{}');
SELECT count(*) FROM inline_seen;

-- handlers run as the projection's owner, never as the superuser
CREATE ROLE proj_user LOGIN;
GRANT USAGE, CREATE ON SCHEMA public TO proj_user;
GRANT INSERT ON seen TO proj_user;
GRANT USAGE ON SEQUENCE seen_n_seq TO proj_user;
CREATE TABLE private_data (x int);
SET ROLE proj_user;
CREATE FUNCTION public.user_h(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen (pos, type, who) VALUES (e.global_position, 'as-user', current_user);
END $$;
SELECT ep.create_projection('user_proj', 'public.user_h(ep.events)', category => 'usr');
SELECT name, owner FROM ep.projections;   -- sees only its own projections
SELECT ep.drop_projection('all_events');  -- not visible to this role
RESET ROLE;
SELECT ep.append('usr-1', 'Created', '{}');
SELECT ep.apply_projections();
SELECT type, who FROM seen WHERE type = 'as-user';
-- a handler of that owner cannot touch what the owner may not
CREATE OR REPLACE FUNCTION public.user_h(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.private_data VALUES (1);
END $$;
SET event_patterns.projection_max_retries = 0;
SELECT ep.append('usr-1', 'Again', '{}');
SELECT ep.apply_projections();
SELECT projection, error, attempts FROM ep.parked_events WHERE projection = 'user_proj';
SELECT count(*) FROM private_data;

-- an owner who loses the right to run the handler: the projection fails
-- instead of running it; once allowed again, resume_projection goes on
RESET event_patterns.projection_max_retries;
CREATE FUNCTION su_h(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.seen (pos, type, who) VALUES (e.global_position, 'su_h', current_user) $$;
REVOKE ALL ON FUNCTION su_h(ep.events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION su_h(ep.events) TO proj_user;
SET ROLE proj_user;
SELECT ep.create_projection('granted', 'public.su_h(ep.events)', category => 'rev');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION su_h(ep.events) FROM proj_user;
SELECT ep.append('rev-1', 'Created', '{}');
SELECT ep.apply_projections();
SELECT name, status, last_error, lag_events FROM ep.projections WHERE name = 'granted';
GRANT EXECUTE ON FUNCTION su_h(ep.events) TO proj_user;
SELECT ep.resume_projection('granted');
SELECT ep.apply_projections();
SELECT name, status, lag_events FROM ep.projections WHERE name = 'granted';
SELECT type, who FROM seen WHERE type = 'su_h';

-- bad input: clear errors, nothing written
SELECT ep.create_projection(NULL, 'record_event(ep.events)');
SELECT ep.create_projection('', 'record_event(ep.events)');
SELECT ep.create_projection('all_events', 'record_event(ep.events)');
SELECT ep.create_projection('x', 'record_event(ep.events)', mode => 'sync');
SELECT ep.create_projection('x', 'capture(text, jsonb, jsonb)');
SELECT ep.create_projection('x', 'record_event(ep.events)', event_types => ARRAY[NULL::text]);
SELECT ep.create_projection('x', 'record_event(ep.events)', category => '');
SELECT ep.create_table_projection('x', 'posts', 'record_event(ep.events)');
SELECT ep.create_table_projection('x', 'ep.events', 'capture(text, jsonb, jsonb)');
CREATE TABLE no_key (a int);
SELECT ep.create_table_projection('x', 'no_key', 'capture(text, jsonb, jsonb)');
CREATE UNLOGGED TABLE unlogged_t (a int PRIMARY KEY);
SELECT ep.create_table_projection('x', 'unlogged_t', 'capture(text, jsonb, jsonb)');
CREATE VIEW a_view AS SELECT 1 AS a;
SELECT ep.create_table_projection('x', 'a_view', 'capture(text, jsonb, jsonb)');
SELECT ep.pause_projection('missing');
SELECT ep.resume_projection(NULL);
SELECT ep.rebuild_projection('missing');
SELECT ep.drop_projection('missing');
SELECT ep.retry_parked('missing');
SELECT ep.wait_for_projection('missing', '1 s');
SELECT ep.wait_for_projection('all_events', NULL);
SELECT ep.apply_projections(0);
BEGIN;
SELECT ep.append('acc-1', 'Deposited', '{"amount": 1}');
SELECT ep.wait_for_projection('all_events', '1 s');
ROLLBACK;
SELECT count(*) FROM ep.projections WHERE name = 'x';

-- drop
SELECT ep.drop_projection('posts_cdc');
SELECT ep.drop_projection('picky');
SELECT name FROM ep.projections ORDER BY name;
SELECT count(*) FROM ep.parked_events WHERE projection = 'picky';
SELECT count(*) FROM pg_replication_slots
 WHERE slot_name = 'ep_' || (SELECT oid FROM pg_database WHERE datname = current_database());
-- DROP EXTENSION lets go of the slot
DROP EXTENSION event_patterns CASCADE;
SELECT count(*) FROM pg_replication_slots
 WHERE slot_name = 'ep_' || (SELECT oid FROM pg_database WHERE datname = current_database());
DROP TABLE seen, balances, poison_seen, posts, changes, inline_seen, private_data,
           no_key, unlogged_t, docs;
DROP VIEW a_view;
DROP FUNCTION capture(text, jsonb, jsonb);
DROP OWNED BY proj_user;
DROP ROLE proj_user;
CREATE EXTENSION event_patterns;
