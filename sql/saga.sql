-- Sagas: definitions and their errors, local sagas driven by hand with
-- ep.run_sagas() (the worker is off in this suite): all steps succeed; a
-- step fails and the earlier ones are compensated in reverse order; retries
-- then success; a timeout; a compensation that fails for good; steps that
-- wait for ep.complete_step / ep.fail_step; history in the event store;
-- rights of other roles (a hostile one).
\pset null '(null)'
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE ROLE regress_saga_shop LOGIN;        -- owns the saga types
CREATE ROLE regress_saga_clerk LOGIN IN ROLE regress_saga_shop;  -- works for the shop
CREATE ROLE regress_saga_eve LOGIN;         -- hostile
CREATE SCHEMA shop AUTHORIZATION regress_saga_shop;
GRANT CREATE ON DATABASE regression TO regress_saga_eve;

------------------------------------------------------------------------
-- The shop's services: side effects are rows of shop.log, in order.
-- Everything below is written with unqualified names: they resolve with
-- the search_path recorded by ep.define_saga.
------------------------------------------------------------------------
SET ROLE regress_saga_shop;
SET search_path = shop, public;
CREATE TABLE log (n serial PRIMARY KEY, saga_id text, what text, who text DEFAULT current_user);
CREATE TABLE stock (item text PRIMARY KEY, available int NOT NULL CHECK (available >= 0));
INSERT INTO stock VALUES ('book', 100);
CREATE TABLE flaky (saga_id text PRIMARY KEY, failures_left int);

CREATE FUNCTION reserve(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    UPDATE stock SET available = available - 1 WHERE item = data->>'item';
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'reserve');
    RETURN jsonb_build_object('reserved', data->>'item');
END $$;
CREATE FUNCTION release(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    UPDATE stock SET available = available + 1 WHERE item = data->>'reserved';
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'release');
    RETURN NULL;
END $$;
CREATE FUNCTION charge(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'charge');   -- rolled back on error
    IF (data->>'amount')::int > 100 THEN
        RAISE EXCEPTION 'payment of % declined', data->>'amount';
    END IF;
    RETURN jsonb_build_object('charged', (data->>'amount')::int);
END $$;
CREATE FUNCTION refund(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'refund');
    RETURN jsonb_build_object('refunded', data->'charged');
END $$;
CREATE FUNCTION ship(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF data->>'address' IS NULL THEN
        RAISE EXCEPTION 'no address to ship to';
    END IF;
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'ship');
    RETURN '"shipped"';          -- not an object: kept under the step's name
END $$;
-- fails as many times as flaky.failures_left says, then succeeds; a failed
-- attempt leaves nothing behind, so it counts the failures the saga's
-- history records
CREATE FUNCTION wobbly(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE failed int;
BEGIN
    SELECT count(*) INTO failed FROM ep.events e
     WHERE e.stream_id LIKE 'saga\_%-' || saga_id AND e.event_type = 'SagaStepAttemptFailed';
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'wobbly');
    IF failed < (SELECT failures_left FROM flaky f WHERE f.saga_id = wobbly.saga_id) THEN
        RAISE EXCEPTION 'transient failure %', failed + 1;
    END IF;
    RETURN '{"wobbly": "ok"}';
END $$;
CREATE FUNCTION broken(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'broken');
    RAISE EXCEPTION 'the warehouse is on fire';
END $$;
-- asks another service and waits: returns NULL
CREATE FUNCTION ask(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'ask');
    RETURN NULL;
END $$;
-- wrong shapes
CREATE FUNCTION returns_text(saga_id text, data jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE FUNCTION one_arg(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE FUNCTION sets(saga_id text, data jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE PROCEDURE proc(saga_id text, data jsonb) LANGUAGE sql AS $$ SELECT 1 $$;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA shop FROM PUBLIC;

------------------------------------------------------------------------
-- 1. Definition errors: a clear SQLSTATE, nothing written
------------------------------------------------------------------------
SELECT pg_temp.try($$SELECT ep.define_saga('order', NULL)$$);
SELECT pg_temp.try($$SELECT ep.define_saga(NULL, '[{"name": "a", "action": "reserve"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order-x', '[{"name": "a", "action": "reserve"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '{"name": "a"}')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[42]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"action": "reserve"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve"}, {"name": "a", "action": "charge"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "compensate": "release"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "no_such_function"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "compensation": "no_such"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "returns_text"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "one_arg"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "sets"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "proc(text, jsonb)"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "timeout": "-5 seconds"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "timeout": "soon"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "retries": -1}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "retries": 1.5}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "retries": "3"}]')$$);
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "a", "action": "reserve", "retry_delay": "-1 s"}]')$$);
SELECT count(*) AS types, (SELECT count(*) FROM ep.saga_steps) AS steps FROM ep.saga_types;

------------------------------------------------------------------------
-- 2. The order saga: reserve -> charge -> ship
------------------------------------------------------------------------
SELECT ep.define_saga('order', '[
    {"name": "reserve", "action": "reserve", "compensation": "release"},
    {"name": "charge",  "action": "charge",  "compensation": "refund", "timeout": "1 minute"},
    {"name": "ship",    "action": "ship"}
]');
SELECT saga_type, owner, search_path FROM ep.saga_definitions;
SELECT step_no, name, action, compensation, timeout, retries, retry_delay
  FROM ep.saga_steps WHERE saga_type = 'order' ORDER BY step_no;
SELECT category, owner FROM ep.categories WHERE category = 'saga_order';

-- a search_path that would hijack unqualified names does not matter now
RESET search_path;
SELECT ep.start_saga('order', 'o-1', '{"item": "book", "amount": 10, "address": "Main St 1"}');
SELECT ep.start_saga('order', 'o-1', '{"item": "book", "amount": 99999}');  -- idempotent: ignored
SELECT saga_id, status, current_step, phase, deadline IS NULL AS no_deadline FROM ep.sagas;
SELECT ep.run_sagas();
SELECT saga_id, status, current_step, data, last_error FROM ep.sagas WHERE saga_id = 'o-1';
SELECT n, saga_id, what, who FROM shop.log ORDER BY n;
SELECT available FROM shop.stock;
-- the history: one stream per saga, category saga_<type>
SELECT stream_version, event_type, data - 'retry_at' AS data
  FROM ep.read_stream('saga_order-o-1') ORDER BY stream_version;

-- the last step fails: charge and reserve are compensated, in that order
TRUNCATE shop.log;
SELECT ep.start_saga('order', 'o-2', '{"item": "book", "amount": 20}');
SELECT ep.run_sagas();
SELECT saga_id, status, current_step, data, last_error FROM ep.sagas WHERE saga_id = 'o-2';
SELECT saga_id, what FROM shop.log ORDER BY n;
SELECT available FROM shop.stock;
SELECT event_type, data->>'step' AS step FROM ep.read_stream('saga_order-o-2') ORDER BY stream_version;

-- a declined payment (step 2) releases the stock; nothing of the failed
-- charge remains
TRUNCATE shop.log;
SELECT ep.start_saga('order', 'o-3', '{"item": "book", "amount": 500, "address": "x"}');
SELECT ep.run_sagas();
SELECT saga_id, status, last_error FROM ep.sagas WHERE saga_id = 'o-3';
SELECT saga_id, what FROM shop.log ORDER BY n;

-- the same saga id for another type is an error; unknown types too
SELECT ep.define_saga('other', '[{"name": "one", "action": "shop.ship"}]');
SELECT pg_temp.try($$SELECT ep.start_saga('other', 'o-1', '{}')$$);
SELECT pg_temp.try($$SELECT ep.start_saga('nope', 'x', '{}')$$);
SELECT pg_temp.try($$SELECT ep.start_saga('order', NULL, '{}')$$);
SELECT pg_temp.try($$SELECT ep.start_saga('order', 'o-9', '[1]')$$);
-- an active type cannot be redefined
SELECT ep.start_saga('order', 'o-busy', '{"item": "book", "amount": 1, "address": "x"}');
SELECT pg_temp.try($$SELECT ep.define_saga('order', '[{"name": "one", "action": "shop.ship"}]')$$);
SELECT ep.run_sagas();
SELECT status FROM ep.sagas WHERE saga_id = 'o-busy';

------------------------------------------------------------------------
-- 3. Retries with backoff, then success; and retries exhausted
------------------------------------------------------------------------
SET search_path = shop;
SELECT ep.define_saga('retrying', '[
    {"name": "first",  "action": "reserve", "compensation": "release"},
    {"name": "wobbly", "action": "wobbly",  "retries": 3, "retry_delay": 0}
]');
RESET search_path;
TRUNCATE shop.log;
INSERT INTO shop.flaky VALUES ('r-1', 2), ('r-2', 10);
SELECT ep.start_saga('retrying', 'r-1', '{"item": "book"}');
SELECT ep.start_saga('retrying', 'r-2', '{"item": "book"}');
SELECT ep.run_sagas();
SELECT saga_id, status, data, last_error FROM ep.sagas WHERE saga_type = 'retrying' ORDER BY saga_id;
SELECT saga_id, what, count(*) FROM shop.log GROUP BY saga_id, what ORDER BY saga_id, what;
SELECT event_type, data->>'attempt' AS attempt, data->>'error' AS error
  FROM ep.read_stream('saga_retrying-r-1') ORDER BY stream_version;

-- the backoff doubles from retry_delay: a retry is not due before it
SET search_path = shop;
SELECT ep.define_saga('slow_retry', '[{"name": "wobbly", "action": "wobbly", "retries": 2, "retry_delay": "1 hour"}]');
RESET search_path;
INSERT INTO shop.flaky VALUES ('s-1', 5);
SELECT ep.start_saga('slow_retry', 's-1', '{}');
SELECT ep.run_sagas();
SELECT status, attempts, next_run_at - updated_at AS backoff FROM ep.sagas WHERE saga_id = 's-1';
SELECT ep.run_sagas() AS nothing_due;

------------------------------------------------------------------------
-- 4. Waiting steps: complete_step, fail_step, timeout
------------------------------------------------------------------------
SET search_path = shop;
SELECT ep.define_saga('remote', '[
    {"name": "reserve", "action": "reserve", "compensation": "release"},
    {"name": "pay",     "action": "ask",     "compensation": "refund", "timeout": "300 ms"},
    {"name": "ship",    "action": "ship"}
]');
RESET search_path;
TRUNCATE shop.log;
SELECT ep.start_saga('remote', 'w-ok', '{"item": "book", "address": "x"}');
SELECT ep.start_saga('remote', 'w-fail', '{"item": "book"}');
SELECT ep.start_saga('remote', 'w-late', '{"item": "book"}');
SELECT ep.run_sagas();
SELECT saga_id, status, current_step, phase, deadline IS NOT NULL AS has_deadline
  FROM ep.sagas WHERE saga_type = 'remote' ORDER BY saga_id;
-- replies for the wrong step or an unknown one are errors
SELECT pg_temp.try($$SELECT ep.complete_step('w-ok', 'ship', '{}')$$);
SELECT pg_temp.try($$SELECT ep.complete_step('w-ok', 'nope', '{}')$$);
SELECT pg_temp.try($$SELECT ep.complete_step('nope', 'pay', '{}')$$);
SELECT pg_temp.try($$SELECT ep.fail_step('w-fail', 'pay', NULL)$$);
SELECT ep.complete_step('w-ok', 'pay', '{"paid": 10}');
SELECT ep.fail_step('w-fail', 'pay', 'card declined');
SELECT pg_sleep(0.4);
SELECT ep.run_sagas();
SELECT saga_id, status, current_step, data, last_error
  FROM ep.sagas WHERE saga_type = 'remote' ORDER BY saga_id;
SELECT saga_id, what FROM shop.log ORDER BY n;
-- a reply that comes too late is ignored
SELECT ep.complete_step('w-late', 'pay', '{"paid": 1}');
SELECT status FROM ep.sagas WHERE saga_id = 'w-late';
SELECT event_type, data->>'error' AS error FROM ep.read_stream('saga_remote-w-late') ORDER BY stream_version;

------------------------------------------------------------------------
-- 5. A compensation that fails for good leaves the saga failed
------------------------------------------------------------------------
SET search_path = shop;
SELECT ep.define_saga('doomed', '[
    {"name": "first",  "action": "reserve", "compensation": "broken", "retries": 1, "retry_delay": 0},
    {"name": "second", "action": "charge"}
]');
RESET search_path;
TRUNCATE shop.log;
SELECT ep.start_saga('doomed', 'd-1', '{"item": "book", "amount": 1000}');
SELECT ep.run_sagas();
SELECT saga_id, status, current_step, last_error FROM ep.sagas WHERE saga_id = 'd-1';
SELECT saga_id, what FROM shop.log ORDER BY n;
SELECT event_type FROM ep.read_stream('saga_doomed-d-1') ORDER BY stream_version;
SELECT ep.run_sagas() AS nothing_more;

------------------------------------------------------------------------
-- 6. Rights: the clerk (member of the shop role) may drive the shop's
--    sagas; a hostile role may not start, see, finish, drive or redefine
--    them, nor read their history
------------------------------------------------------------------------
RESET ROLE;
SET ROLE regress_saga_clerk;
SELECT ep.start_saga('remote', 'c-1', '{"item": "book"}');
SELECT ep.run_sagas();
SELECT ep.complete_step('c-1', 'pay', '{"paid": 3}');
SELECT status FROM ep.sagas WHERE saga_id = 'c-1';

RESET ROLE;
SET ROLE regress_saga_shop;
SELECT ep.start_saga('remote', 'e-1', '{"item": "book"}');
SELECT ep.run_sagas();

SET ROLE regress_saga_eve;
SELECT count(*) AS visible_sagas FROM ep.sagas;
SELECT count(*) AS visible_rows FROM ep.saga_instances;
SELECT count(*) AS visible_history FROM ep.events WHERE category = 'saga_remote';
SELECT pg_temp.try($$SELECT * FROM ep.read_stream('saga_remote-e-1')$$);
SELECT pg_temp.try($$SELECT ep.start_saga('remote', 'e-2', '{}')$$);
SELECT pg_temp.try($$SELECT ep.complete_step('e-1', 'pay', '{"paid": 0}')$$);
SELECT pg_temp.try($$SELECT ep.fail_step('e-1', 'pay', 'hostile')$$);
CREATE SCHEMA eve;
CREATE FUNCTION eve.eve_step(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('me', current_user::text) $$;
SELECT pg_temp.try($$SELECT ep.define_saga('remote', '[{"name": "x", "action": "eve.eve_step"}]')$$);
SELECT pg_temp.try($$SELECT ep.drop_saga('remote')$$);
SELECT ep.run_sagas() AS eve_ran;
SELECT pg_temp.try($$UPDATE ep.saga_instances SET status = 'completed'$$);
SELECT pg_temp.try($$INSERT INTO ep.saga_types VALUES ('x', 'regress_saga_shop', NULL, '[]')$$);
SELECT pg_temp.try($$SELECT ep._saga_advance('e-1', 'ok', NULL, NULL)$$);
-- the shop's functions are not the hostile role's to run
SELECT pg_temp.try($$SELECT ep.define_saga('evil', '[{"name": "x", "action": "shop.reserve"}]')$$);
-- a type of its own runs as itself, whoever drives it
SELECT ep.define_saga('evil', '[{"name": "x", "action": "eve.eve_step"}]');
SELECT ep.start_saga('evil', 'v-1', '{}');
RESET ROLE;
SELECT ep.run_sagas() AS superuser_ran;
SELECT saga_id, status, data FROM ep.sagas WHERE saga_type = 'evil';
SELECT saga_id, status FROM ep.sagas WHERE saga_id = 'e-1';

------------------------------------------------------------------------
-- 7. A step runs as the owner with the recorded search_path, and what it
--    SETs does not outlive it. Deferrable triggers fire during the call,
--    as the owner; a step that defers them itself fails (they must not run
--    at commit with the rights of whoever commits), nothing written.
------------------------------------------------------------------------
SET ROLE regress_saga_shop;
SET search_path = shop;
CREATE TABLE notes (saga_id text, who text);
CREATE TABLE audit (who text, sec boolean);
CREATE FUNCTION audit_trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit VALUES (current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER log_audit AFTER INSERT ON log DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION audit_trg();
CREATE FUNCTION setter(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('work_mem', '77MB', false);
    INSERT INTO notes VALUES (saga_id, current_user);
    RETURN jsonb_build_object('user', current_user::text, 'path', current_setting('search_path'));
END $$;
CREATE FUNCTION deferring(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'deferring');
    RETURN '{}';
END $$;
CREATE FUNCTION sneaky(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    SET CONSTRAINTS ALL DEFERRED;
    INSERT INTO log (saga_id, what) VALUES (saga_id, 'sneaky');
    RETURN '{}';
END $$;
SELECT ep.define_saga('audited', '[{"name": "only", "action": "setter"}]');
SELECT ep.define_saga('deferred', '[{"name": "only", "action": "deferring"}]');
SELECT ep.define_saga('sneaky', '[{"name": "only", "action": "sneaky"}]');
SELECT ep.start_saga('audited', 'a-1', '{}');
SELECT ep.start_saga('deferred', 'a-2', '{}');
SELECT ep.start_saga('sneaky', 'a-3', '{}');
RESET ROLE;
SET search_path = public;
SELECT ep.run_sagas();
SELECT current_setting('work_mem') <> '77MB' AS work_mem_untouched;
SELECT saga_id, status, data, last_error FROM ep.sagas WHERE saga_id IN ('a-1', 'a-2', 'a-3') ORDER BY 1;
SELECT * FROM shop.notes;
SELECT saga_id, what FROM shop.log WHERE what IN ('deferring', 'sneaky');
SELECT who, sec FROM shop.audit;

-- dropping a type: only without active sagas
SET ROLE regress_saga_shop;
SELECT pg_temp.try($$SELECT ep.drop_saga('remote')$$);
SELECT ep.drop_saga('audited');
SELECT count(*) FROM ep.sagas WHERE saga_type = 'audited';
RESET ROLE;
