-- The trust boundary: code the extension runs on somebody's behalf runs as
-- its owner, security-restricted, with the search_path recorded when it was
-- created; nothing it SETs survives the call; a hostile ordinary role can
-- neither borrow the owner's rights nor change what the owner's code means.
-- (Jobs: TAP 021_job_security; views: ivm_security; categories: categories.)
\pset null '(null)'
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE ROLE regress_sec_owner LOGIN;
CREATE ROLE regress_sec_eve LOGIN;
CREATE ROLE regress_sec_upc LOGIN;
CREATE SCHEMA sec AUTHORIZATION regress_sec_owner;
GRANT CREATE ON DATABASE regression TO regress_sec_eve;
GRANT TEMPORARY ON DATABASE regression TO regress_sec_eve;

-- what the hostile role's code would leave behind if it ever ran
CREATE TABLE public.eve_log (who text, what text);
GRANT INSERT, SELECT ON public.eve_log TO PUBLIC;

------------------------------------------------------------------------
-- 1. Inline projections run in every appender's transaction: creating one
--    needs TRIGGER on ep.events, also through a direct INSERT.
------------------------------------------------------------------------
SET ROLE regress_sec_eve;
CREATE SCHEMA eve_schema;
SET search_path = eve_schema, public;
CREATE FUNCTION eve_handler(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'every append fails'; END $$;
SELECT pg_temp.try($$SELECT ep.create_projection('eve_inline', 'eve_handler(ep.events)', mode => 'inline')$$);
SELECT pg_temp.try($$INSERT INTO ep.projection_defs (name, kind, handler, mode)
                     VALUES ('eve_inline', 'events', 'eve_handler(ep.events)', 'inline')$$);
SELECT count(*) AS eve_projections FROM ep.projection_defs;
RESET search_path;
RESET ROLE;

------------------------------------------------------------------------
-- 2. A trusted role's inline handler, written with unqualified names: it
--    runs as its owner with the owner's search_path; its SETs do not reach
--    the appender; the appender's pg_temp cannot redefine what it means.
------------------------------------------------------------------------
GRANT TRIGGER ON ep.events TO regress_sec_owner;
SET ROLE regress_sec_owner;
SET search_path = sec, public;
CREATE TABLE sec.seen (pos bigint, cur text, ses text, amount text);
CREATE FUNCTION sec.on_event(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seen VALUES (e.global_position, current_user, session_user, (e.data->>'amount')::text);
    PERFORM set_config('search_path', 'eve_schema, pg_catalog', false);
    PERFORM set_config('work_mem', '77MB', false);
    SET statement_timeout = 1;
END $$;
SELECT ep.create_projection('sec_inline', 'on_event(ep.events)', ARRAY['SecDeposited'], mode => 'inline');
RESET search_path;
SELECT name, search_path FROM ep.projections WHERE name = 'sec_inline';
RESET ROLE;

SET ROLE regress_sec_eve;
-- a domain named text in the appender's temporary schema, whose check would
-- run the appender's code as the handler's owner
CREATE FUNCTION pg_temp.evil(t pg_catalog.text) RETURNS boolean LANGUAGE sql AS
    $$ INSERT INTO public.eve_log VALUES (current_user, 'domain check'); SELECT true $$;
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.evil(VALUE));
SHOW work_mem;
SELECT ep.append('sec-1', 'SecDeposited', '{"amount": 5}') > 0 AS appended;
SHOW search_path;
SHOW work_mem;
SHOW statement_timeout;
DROP DOMAIN pg_temp.text;
RESET ROLE;
SELECT cur, ses, amount FROM sec.seen;
SELECT * FROM public.eve_log;
SELECT ep.drop_projection('sec_inline');
REVOKE TRIGGER ON ep.events FROM regress_sec_owner;

------------------------------------------------------------------------
-- 3. Async handlers (applied here by ep.apply_projections, in the worker
--    otherwise): same rules; settings do not leak into the applying session.
------------------------------------------------------------------------
SET ROLE regress_sec_owner;
SET search_path = sec;
CREATE TABLE sec.async_seen (pos bigint, cur text);
CREATE FUNCTION sec.on_async(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO async_seen VALUES (e.global_position, current_user);
    PERFORM set_config('search_path', 'eve_schema, pg_catalog', false);
    PERFORM set_config('work_mem', '78MB', false);
END $$;
SELECT ep.create_projection('sec_async', 'on_async(ep.events)', ARRAY['SecDeposited']);
RESET search_path;
RESET ROLE;
SELECT ep.apply_projections();
SHOW search_path;
SHOW work_mem;
SELECT cur FROM sec.async_seen;
SELECT ep.drop_projection('sec_async');

------------------------------------------------------------------------
-- 4. Upcasters run as their function's owner (whoever reads), with the
--    registering session's search_path.
------------------------------------------------------------------------
CREATE FUNCTION public.up_by(d jsonb) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN RETURN d || jsonb_build_object('run_by', current_user::text); END $$;
ALTER FUNCTION public.up_by(jsonb) OWNER TO regress_sec_upc;
SELECT ep.append('sec-2', 'SecOpened', '{}') > 0 AS appended;
SELECT ep.register_upcaster('SecOpened', 1, 'public.up_by(jsonb)');
SET ROLE regress_sec_eve;
SELECT data->>'run_by' AS run_by, schema_version FROM ep.read_stream('sec-2');
RESET ROLE;
SELECT data->>'run_by' AS run_by FROM ep.read_all(0, 1000) WHERE stream_id = 'sec-2';
SELECT ep.unregister_upcaster('SecOpened', 1);

-- a chain can be registered in one statement
CREATE FUNCTION public.paid_1(d jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT d || '{"v": 2}' $$;
CREATE FUNCTION public.paid_2(d jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$ SELECT d || '{"v": 3}' $$;
SELECT ep.register_upcaster('SecPaid', 1, 'public.paid_1(jsonb)'), ep.register_upcaster('SecPaid', 2, 'public.paid_2(jsonb)');
SELECT event_type, from_schema_version FROM ep.upcasters WHERE event_type = 'SecPaid' ORDER BY 1, 2;
SELECT ep.unregister_upcaster('SecPaid', 2), ep.unregister_upcaster('SecPaid', 1);

-- reads lift rows in batches: interleaved events whose upcasters belong to
-- different owners each run as their own owner, and the reader's settings
-- are untouched afterwards
CREATE FUNCTION public.up_mine(d jsonb) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN PERFORM set_config('work_mem', '7MB', false);
       RETURN d || jsonb_build_object('run_by', current_user::text); END $$;
ALTER FUNCTION public.up_mine(jsonb) OWNER TO regress_sec_owner;
SELECT ep.register_upcaster('SecMixA', 1, 'public.up_by(jsonb)'),
       ep.register_upcaster('SecMixB', 1, 'public.up_mine(jsonb)');
SELECT count(*) FROM (SELECT ep.append('sec-mix-' || i, CASE WHEN i % 3 = 0 THEN 'SecMixB' ELSE 'SecMixA' END, '{}')
                        FROM generate_series(1, 150) i) s;
SET ROLE regress_sec_eve;
SELECT event_type, data->>'run_by' AS run_by, count(*)
  FROM ep.read_all(0, 100000) WHERE stream_id LIKE 'sec-mix-%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT event_type, data->>'run_by' AS run_by, count(*)
  FROM ep.read_category('sec', 0, 100000) WHERE stream_id LIKE 'sec-mix-%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT current_user, current_setting('work_mem') AS work_mem;
RESET ROLE;
SELECT ep.unregister_upcaster('SecMixA', 1), ep.unregister_upcaster('SecMixB', 1);

------------------------------------------------------------------------
-- 5. Shared snapshots are computed by the reducer's owner with the policy's
--    search_path: a caller's own "+" operator or pg_temp.text domain can
--    neither poison the stored state nor run as the extension owner.
------------------------------------------------------------------------
CREATE FUNCTION public.total(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS
    $$ SELECT jsonb_build_object('n', coalesce((state->>'n')::numeric, 0) + (e.data->>'v')::numeric) $$;
SELECT ep.set_snapshot_policy('public.total(jsonb, ep.events)', 2);
SELECT ep.append_events('secsum-1', '[{"type": "Added", "data": {"v": 1}}, {"type": "Added", "data": {"v": 2}},
                                   {"type": "Added", "data": {"v": 3}}, {"type": "Added", "data": {"v": 4}}]');
SET ROLE regress_sec_eve;
CREATE FUNCTION eve_schema.bad_add(numeric, numeric) RETURNS numeric LANGUAGE sql AS
    $$ SELECT $1 OPERATOR(pg_catalog.+) $2 OPERATOR(pg_catalog.+) 1000 $$;
CREATE OPERATOR eve_schema.+ (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = eve_schema.bad_add);
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.evil(VALUE));
SET search_path = eve_schema, pg_catalog;
SELECT 1::numeric + 1::numeric AS eve_sees;
-- eve lacks the reducer owner's privileges: she folds as herself (her own
-- operator gives her her own answer) and neither reads nor writes snapshots
SELECT ep.aggregate('secsum-1', 'public.total(jsonb, ep.events)') AS eve_fold;
RESET search_path;
DROP DOMAIN pg_temp.text;
DROP FUNCTION pg_temp.evil(pg_catalog.text);
RESET ROLE;
SELECT ep.aggregate('secsum-1', 'public.total(jsonb, ep.events)') AS owner_fold;
SELECT version, state FROM ep.snapshots WHERE stream_id = 'secsum-1';
SELECT * FROM public.eve_log;

------------------------------------------------------------------------
-- 6. Table projections: a source whose row-level security applies to the
--    creator is refused (decoded rows carry every row); a handler writing
--    its own source does not feed itself.
------------------------------------------------------------------------
CREATE TABLE public.secret (id int PRIMARY KEY, owner_name text);
ALTER TABLE public.secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON public.secret USING (owner_name = current_user);
GRANT SELECT ON public.secret TO regress_sec_eve;
SET ROLE regress_sec_eve;
CREATE FUNCTION eve_schema.eve_capture(op text, o jsonb, n jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT pg_temp.try($$SELECT ep.create_table_projection('eve_cdc', 'public.secret', 'eve_schema.eve_capture(text, jsonb, jsonb)')$$);
RESET ROLE;

CREATE TABLE public.loop_src (id serial PRIMARY KEY, generation int NOT NULL);
CREATE TABLE public.loop_calls (op text, generation int);
CREATE FUNCTION public.loop_handler(op text, o jsonb, n jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO loop_calls VALUES (op, (n->>'generation')::int);
    IF op = 'INSERT' THEN
        INSERT INTO loop_src (generation) VALUES ((n->>'generation')::int + 1);
    END IF;
END $$;
SELECT ep.create_table_projection('loop', 'public.loop_src', 'public.loop_handler(text, jsonb, jsonb)');
SELECT ep.apply_projections() >= 0 AS loaded;
INSERT INTO public.loop_src (generation) VALUES (1);
SELECT ep.apply_projections();
SELECT ep.apply_projections();
SELECT ep.apply_projections();
SELECT op, generation FROM public.loop_calls ORDER BY 1, 2;
SELECT ep.drop_projection('loop');

------------------------------------------------------------------------
-- 7. Every call into user code has a time limit; the event is parked with
--    an error that names it.
------------------------------------------------------------------------
CREATE FUNCTION public.slow(e ep.events) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(5) $$;
SET event_patterns.projection_max_retries = 0;
SELECT ep.create_projection('slow', 'public.slow(ep.events)', event_types => ARRAY['SecSlow'],
                            category => NULL, mode => 'async',
                            search_path => current_setting('search_path'), handler_timeout => '200 ms');
SELECT ep.append('sec-slow-1', 'SecSlow', '{}') > 0 AS appended;
SELECT ep.apply_projections();
SELECT projection, error FROM ep.parked_events WHERE projection = 'slow';
SELECT name, status, handler_timeout FROM ep.projections WHERE name = 'slow';
SELECT ep.drop_projection('slow');

-- no time limit, or one above event_patterns.handler_timeout, is a
-- superuser's choice: another owner's handler is stopped at the setting
SET event_patterns.handler_timeout = '300 ms';
SET ROLE regress_sec_eve;
CREATE FUNCTION eve_schema.slow(e ep.events) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(5) $$;
SELECT ep.create_projection('eve_slow', 'eve_schema.slow(ep.events)', event_types => ARRAY['SecSlow2'],
                            category => NULL, mode => 'async',
                            search_path => 'eve_schema', handler_timeout => '0');
RESET ROLE;
SELECT ep.append('sec-slow-2', 'SecSlow2', '{}') > 0 AS appended;
SELECT ep.apply_projections();
SELECT projection, error FROM ep.parked_events WHERE projection = 'eve_slow';
SET ROLE regress_sec_eve;
SELECT ep.drop_projection('eve_slow');
RESET ROLE;
RESET event_patterns.handler_timeout;
RESET event_patterns.projection_max_retries;

------------------------------------------------------------------------
-- A handler cannot leave a deferred trigger behind to fire at the applier's
-- commit with the applier's rights (here a superuser's session): inside the
-- owner's security-restricted call PostgreSQL refuses to queue it.
SET event_patterns.projection_max_retries = 0;
SET ROLE regress_sec_eve;
SET search_path = eve_schema;
CREATE TABLE eve_schema.later (x int);
CREATE FUNCTION eve_schema.promote() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN EXECUTE 'ALTER ROLE regress_sec_eve SUPERUSER'; RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON eve_schema.later
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION eve_schema.promote();
CREATE FUNCTION eve_schema.plant(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO later VALUES (1) $$;
SELECT ep.create_projection('eve_plant', 'eve_schema.plant(ep.events)', event_types => ARRAY['SecPlant'],
                            category => NULL, mode => 'async', search_path => 'eve_schema');
RESET search_path;
RESET ROLE;
SELECT ep.append('sec-plant-1', 'SecPlant', '{}') > 0 AS appended;
SELECT ep.apply_projections();
SELECT projection, error FROM ep.parked_events WHERE projection = 'eve_plant';
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_sec_eve';
SELECT count(*) FROM eve_schema.later;
SET ROLE regress_sec_eve;
SELECT ep.drop_projection('eve_plant');
RESET ROLE;
RESET event_patterns.projection_max_retries;

-- Decoded rows are turned into JSON without user code: a cast to json of a
-- user-defined type is never called (it ran as the worker's superuser).
------------------------------------------------------------------------
SET ROLE regress_sec_eve;
CREATE TYPE eve_schema.mood AS ENUM ('happy', 'sad');
CREATE FUNCTION eve_schema.mood_json(m eve_schema.mood) RETURNS json LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'cast called as %', current_user; END $$;
CREATE CAST (eve_schema.mood AS json) WITH FUNCTION eve_schema.mood_json(eve_schema.mood);
CREATE TABLE eve_schema.moods (id int PRIMARY KEY, m eve_schema.mood, ms eve_schema.mood[]);
CREATE TABLE eve_schema.mood_seen (op text, n jsonb);
CREATE FUNCTION eve_schema.mood_h(op text, o jsonb, n jsonb) RETURNS void LANGUAGE sql AS
    $$ INSERT INTO eve_schema.mood_seen VALUES (op, n) $$;
SELECT ep.create_table_projection('moods', 'eve_schema.moods', 'eve_schema.mood_h(text, jsonb, jsonb)');
RESET ROLE;
SELECT ep.apply_projections() >= 0 AS loaded;
SET ROLE regress_sec_eve;
INSERT INTO eve_schema.moods VALUES (1, 'happy', '{sad,happy}');
RESET ROLE;
SELECT ep.apply_projections() >= 0 AS applied;
SELECT op, n FROM eve_schema.mood_seen WHERE op = 'INSERT';
SELECT name, status, last_error FROM ep.projections WHERE name = 'moods';
SELECT ep.drop_projection('moods');

------------------------------------------------------------------------
-- Owner code runs with standard values of the settings that change what
-- SQL means, whatever the caller set (review finding F3).
------------------------------------------------------------------------
CREATE FUNCTION public.up_settings(d jsonb) RETURNS jsonb LANGUAGE plpgsql AS
    $$ BEGIN RETURN d || jsonb_build_object(
         'efd', current_setting('extra_float_digits'),
         'scs', current_setting('standard_conforming_strings'),
         'ds', current_setting('DateStyle'),
         'f', (1123.96::float8)::text); END $$;
ALTER FUNCTION public.up_settings(jsonb) OWNER TO regress_sec_upc;
SELECT ep.append('sec-set-1', 'SecSettings', '{}') > 0 AS appended;
SELECT ep.register_upcaster('SecSettings', 1, 'public.up_settings(jsonb)');
SET ROLE regress_sec_eve;
SET extra_float_digits = -15;
SET standard_conforming_strings = off;
SET DateStyle = 'German';
SELECT data->>'efd' AS efd, data->>'scs' AS scs, data->>'ds' AS ds, data->>'f' AS f
  FROM ep.read_stream('sec-set-1');
SELECT current_setting('extra_float_digits') AS efd, current_setting('standard_conforming_strings') AS scs,
       current_setting('DateStyle') AS ds;
RESET extra_float_digits;
RESET standard_conforming_strings;
RESET DateStyle;
RESET ROLE;
SELECT ep.unregister_upcaster('SecSettings', 1);
DROP FUNCTION public.up_settings(jsonb);

------------------------------------------------------------------------
-- A reducer with a snapshot policy runs as its owner only for callers with
-- the owner's privileges; others fold as themselves and see no snapshot
-- (review finding F2).
------------------------------------------------------------------------
CREATE TABLE public.owner_prices (sku text, cost numeric);
INSERT INTO public.owner_prices VALUES ('A', 3.10);
CREATE FUNCTION public.priced(s jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS
    $$ SELECT s || jsonb_build_object('cost', (SELECT max(cost) FROM public.owner_prices)) $$;
ALTER TABLE public.owner_prices OWNER TO regress_sec_owner;
REVOKE ALL ON public.owner_prices FROM PUBLIC;
ALTER FUNCTION public.priced(jsonb, ep.events) OWNER TO regress_sec_owner;
SELECT ep.set_snapshot_policy('public.priced(jsonb, ep.events)', 1);
SELECT count(*) FROM (SELECT ep.append('secagg-1', 'Added', '{}') FROM generate_series(1, 3)) s;
SET ROLE regress_sec_owner;
SELECT ep.aggregate('secagg-1', 'public.priced(jsonb, ep.events)') AS owner_fold;
RESET ROLE;
SELECT count(*) > 0 AS snapshot_written FROM ep.snapshots WHERE stream_id = 'secagg-1';
SET ROLE regress_sec_eve;
SELECT ep.aggregate('secagg-1', 'public.priced(jsonb, ep.events)') AS eve_fold;
SELECT count(*) AS snapshots_eve_sees FROM ep.snapshots WHERE stream_id = 'secagg-1';
RESET ROLE;
SELECT ep.set_snapshot_policy('public.priced(jsonb, ep.events)', 0);
DROP FUNCTION public.priced(jsonb, ep.events);
DROP TABLE public.owner_prices;

-- clean up
DROP TABLE public.secret, public.loop_src, public.loop_calls, public.eve_log;
DROP FUNCTION public.up_by(jsonb), public.up_mine(jsonb), public.paid_1(jsonb), public.paid_2(jsonb), public.slow(ep.events),
    public.loop_handler(text, jsonb, jsonb);
SELECT ep.set_snapshot_policy('public.total(jsonb, ep.events)', 0);
DROP FUNCTION public.total(jsonb, ep.events);
DROP SCHEMA sec CASCADE;
DROP SCHEMA eve_schema CASCADE;
REVOKE CREATE, TEMPORARY ON DATABASE regression FROM regress_sec_eve;
DROP OWNED BY regress_sec_eve, regress_sec_owner, regress_sec_upc;
DROP ROLE regress_sec_eve, regress_sec_owner, regress_sec_upc;
