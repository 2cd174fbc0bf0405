-- Upcasting: old event shapes keep working; every read path delivers the
-- latest schema version, stored rows never change.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS event_patterns CASCADE;
CREATE EXTENSION event_patterns;
RESET client_min_messages;

CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- Deposited, schema 1: {"amount": euros}; schema 2: {"cents": n};
-- schema 3: {"cents": n, "currency": "EUR"}.
CREATE FUNCTION deposited_1_to_2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
    $$ SELECT jsonb_build_object('cents', (data->>'amount')::numeric * 100) $$;
CREATE FUNCTION deposited_2_to_3(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
    $$ SELECT data || '{"currency": "EUR"}' $$;

SELECT ep.append_events('account-7', '[
  {"type": "Deposited", "data": {"amount": 1}},
  {"type": "Deposited", "data": {"cents": 250}, "schema_version": 2},
  {"type": "Deposited", "data": {"cents": 300, "currency": "EUR"}, "schema_version": 3},
  {"type": "Frozen",    "data": {}}
]');
SELECT stream_version, event_type, data, schema_version FROM ep.read_stream('account-7');

-- a chain must be contiguous from schema version 1
SELECT pg_temp.try($$SELECT ep.register_upcaster('Deposited', 2, 'deposited_2_to_3(jsonb)')$$);
SELECT count(*) AS registered FROM ep.upcasters;
SELECT ep.register_upcaster('Deposited', 1, 'deposited_1_to_2(jsonb)');
SELECT stream_version, event_type, data, schema_version FROM ep.read_stream('account-7');
SELECT ep.register_upcaster('Deposited', 2, 'deposited_2_to_3(jsonb)');
SELECT event_type, from_schema_version, upcaster FROM ep.upcasters ORDER BY 1, 2;

-- every read path delivers schema 3
SELECT stream_version, data, schema_version FROM ep.read_stream('account-7');
SELECT stream_version, data, schema_version FROM ep.read_stream('account-7', NULL, 2, true);
SELECT stream_version, data, schema_version FROM ep.read_all(0, 10, ARRAY['Deposited']);
SELECT stream_version, data, schema_version FROM ep.read_category('account');
SELECT ep.create_subscription('deposits', 'account', ARRAY['Deposited']);
SELECT stream_version, data, schema_version FROM ep.poll('deposits');
-- and the stored rows never changed
SELECT stream_version, data, schema_version FROM ep.events WHERE stream_id = 'account-7' ORDER BY 1;

-- ep.aggregate folds upcast events
CREATE FUNCTION cents(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('cents', coalesce((state->>'cents')::numeric, 0)
                                       + coalesce((e.data->>'cents')::numeric, 0),
                              'schemas', coalesce(state->'schemas', '[]') || to_jsonb(e.schema_version))
$$;
SELECT ep.aggregate('account-7', 'cents(jsonb, ep.events)');

-- registering an upcaster invalidates snapshots
SELECT ep.set_snapshot_policy('cents(jsonb, ep.events)', 2);
SELECT ep.aggregate('account-7', 'cents(jsonb, ep.events)');
SELECT version, state->'cents' AS cents FROM ep.snapshots;
CREATE FUNCTION deposited_1_to_2_fixed(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
    $$ SELECT jsonb_build_object('cents', (data->>'amount')::numeric * 100 + 1) $$;
SELECT ep.register_upcaster('Deposited', 1, 'deposited_1_to_2_fixed(jsonb)');
SELECT ep.aggregate('account-7', 'cents(jsonb, ep.events)');
SELECT version, state->'cents' AS cents FROM ep.snapshots;
-- so does replacing an upcaster's definition
CREATE OR REPLACE FUNCTION deposited_2_to_3(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
    $$ SELECT data || '{"currency": "EUR"}' || jsonb_build_object('cents', (data->>'cents')::numeric * 2) $$;
SELECT stream_version, data FROM ep.read_stream('account-7', 1, 2);
SELECT ep.aggregate('account-7', 'cents(jsonb, ep.events)');

-- an upcaster that returns NULL is an error, not a silent loss
CREATE FUNCTION frozen_lost(data jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT NULL::jsonb';
SELECT ep.register_upcaster('Frozen', 1, 'frozen_lost(jsonb)');
SELECT pg_temp.try($$SELECT * FROM ep.read_stream('account-7')$$);
CREATE OR REPLACE FUNCTION frozen_lost(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"reason": "unknown"}'::jsonb $$;
SELECT stream_version, event_type, data, schema_version FROM ep.read_stream('account-7', 4);

-- Bad input
CREATE FUNCTION two_args(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT a';
CREATE FUNCTION text_result(a jsonb) RETURNS text LANGUAGE sql AS 'SELECT a::text';
SELECT pg_temp.try($$SELECT ep.register_upcaster('Deposited', 3, 'two_args(jsonb, jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.register_upcaster('Deposited', 3, 'text_result(jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.register_upcaster('Deposited', 0, 'deposited_2_to_3(jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.register_upcaster('', 1, 'deposited_2_to_3(jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.register_upcaster(NULL, 1, 'deposited_2_to_3(jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.register_upcaster('Deposited', 1, 'no_such(jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.register_upcaster('Withdrawn', 5, 'deposited_2_to_3(jsonb)')$$);
-- only the extension owner registers upcasters (every reader runs them)
CREATE ROLE ep_upcast_user;
SET ROLE ep_upcast_user;
SELECT pg_temp.try($$SELECT ep.register_upcaster('Withdrawn', 1, 'deposited_2_to_3(jsonb)')$$);
-- but any reader gets upcast events
SELECT stream_version, data, schema_version FROM ep.read_stream('account-7', 1, 1);
RESET ROLE;
DROP ROLE ep_upcast_user;
SELECT event_type, from_schema_version, upcaster FROM ep.upcasters ORDER BY 1, 2;

-- unregistering: only the last link of a chain
SELECT pg_temp.try($$SELECT ep.unregister_upcaster('Deposited', 1)$$);
SELECT pg_temp.try($$SELECT ep.unregister_upcaster('Deposited', 7)$$);
SELECT ep.unregister_upcaster('Deposited', 2);
SELECT stream_version, data, schema_version FROM ep.read_stream('account-7', 1, 3);

-- dropping a registered upcaster function is refused; unregister it first
SELECT pg_temp.try($$DROP FUNCTION frozen_lost(jsonb)$$);
SELECT stream_version, data, schema_version FROM ep.read_stream('account-7', 1, 3);
SELECT ep.unregister_upcaster('Frozen', 1);
DROP FUNCTION frozen_lost(jsonb);
SELECT stream_version, event_type, data, schema_version FROM ep.read_stream('account-7', 4);

-- projections receive upcast events too (async via a manual round, and inline)
CREATE TABLE projected (how text, data jsonb, schema_version int);
CREATE FUNCTION record_async(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.projected VALUES ('async', e.data, e.schema_version) $$;
CREATE FUNCTION record_inline(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.projected VALUES ('inline', e.data, e.schema_version) $$;
SELECT ep.create_projection('up_async', 'record_async(ep.events)', ARRAY['Deposited']);
SELECT ep.create_projection('up_inline', 'record_inline(ep.events)', ARRAY['Deposited'], NULL, 'inline');
SELECT ep.append('account-8', 'Deposited', '{"amount": 3}');
SELECT ep.apply_projections() > 0 AS applied;
SELECT how, data, schema_version FROM projected WHERE data->>'amount' = '3' OR data->>'cents' IS NOT NULL ORDER BY how;
SELECT data, schema_version AS stored FROM ep.events WHERE stream_id = 'account-8';
SELECT ep.drop_projection('up_async');
SELECT ep.drop_projection('up_inline');

-- clean up for the suites that follow
SELECT ep.drop_subscription('deposits');

-- leave a clean extension for the suites that follow
SET client_min_messages = warning;
DROP EXTENSION event_patterns CASCADE;
CREATE EXTENSION event_patterns;
RESET client_min_messages;
