-- ep.aggregate: folding a bank account, temporal queries, snapshots.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS event_patterns CASCADE;
CREATE EXTENSION event_patterns;
RESET client_min_messages;
\pset null '(null)'

-- error helper: runs a statement, shows its SQLSTATE and message
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- The balance is the sum of Deposited minus Withdrawn.
CREATE FUNCTION balance(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object(
        'balance', coalesce((state->>'balance')::numeric, 0)
                   + CASE e.event_type
                       WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                       WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric
                       ELSE 0 END,
        'events', coalesce((state->>'events')::int, 0) + 1,
        'last', e.stream_version);
END
$$;

-- the reference: the same fold written as a plain loop over ep.events
CREATE FUNCTION ref_fold(s text, upto bigint, init jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE plpgsql AS $$
DECLARE
    st jsonb := init;
    e ep.events;
BEGIN
    FOR e IN SELECT * FROM ep.read_stream(s) r WHERE r.stream_version <= upto LOOP
        st := balance(st, e);
    END LOOP;
    RETURN st;
END
$$;

SELECT ep.append_events('account-42', '[
  {"type": "Opened",    "data": {"owner": "Ada"}},
  {"type": "Deposited", "data": {"amount": 100}},
  {"type": "Withdrawn", "data": {"amount": 30}},
  {"type": "Deposited", "data": {"amount": 45}}
]');
SELECT ep.append('account-42', 'Withdrawn', '{"amount": 15}');

-- current state, and state as of a version
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)');
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_version => 3);
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_version => 0);
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_version => 99);
-- a different initial state
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', '{"balance": 1000}');
-- a stream that does not exist folds to the initial state
SELECT ep.aggregate('account-0', 'balance(jsonb, ep.events)');

-- as of a time: only the events recorded by then
SELECT recorded_at AS t_first FROM ep.events WHERE stream_id = 'account-42' AND stream_version = 4 \gset
SELECT pg_sleep(0.01);
SELECT ep.append('account-42', 'Deposited', '{"amount": 500}');
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_time => :'t_first');
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_time => :'t_first', as_of_version => 2);
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_time => '2000-01-01');
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)');

-- stream limits hide events from the fold as they do from read_stream
SELECT ep.set_stream_metadata('account-42', truncate_before => 3);
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)');
SELECT ep.set_stream_metadata('account-42');

-- Snapshots: a policy makes the fold write a snapshot every 4 events.
SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', 4);
SELECT ep.append_events('account-42', (SELECT jsonb_agg(jsonb_build_object(
         'type', CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
         'data', jsonb_build_object('amount', i)))
       FROM generate_series(1, 20) i));
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)') = ref_fold('account-42', 1000) AS same;
SELECT version, state->'balance' AS balance FROM ep.snapshots ORDER BY version;
-- more events: the next fold starts from the snapshot and writes a newer one
SELECT ep.append('account-42', 'Deposited', '{"amount": 7}');
SELECT ep.append('account-42', 'Deposited', '{"amount": 8}');
SELECT ep.append('account-42', 'Deposited', '{"amount": 9}');
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)') = ref_fold('account-42', 1000) AS same;
SELECT version, state->'balance' AS balance FROM ep.snapshots ORDER BY version;
-- every as-of query, before, at and after the snapshots, equals the fold from the beginning
SELECT count(*) AS versions,
       count(*) FILTER (WHERE ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_version => v)
                              = ref_fold('account-42', v)) AS equal
  FROM generate_series(0, 29) v;
-- the fold does start from a snapshot: doctor one (as the test superuser) and watch
UPDATE ep.snapshots SET state = jsonb_set(state, '{balance}', '1000000') WHERE version = 28;
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)')->'balance' AS from_doctored;
-- an as-of query before that snapshot uses the older one
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_version => 27)
       = ref_fold('account-42', 27) AS older_as_of;
-- a different initial state does not use those snapshots
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', '{"balance": 1}')->'balance' AS other_initial;
-- as_of_time uses a snapshot only when all its events were recorded by then
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_time => now())->'balance' AS time_now;
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_time => :'t_first') = ref_fold('account-42', 4) AS time_before;

-- Replacing the reducer invalidates its snapshots.
CREATE OR REPLACE FUNCTION balance(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object(
        'balance', coalesce((state->>'balance')::numeric, 0)
                   + CASE e.event_type
                       WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                       WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric
                       ELSE 0 END,
        'events', coalesce((state->>'events')::int, 0) + 1,
        'last', e.stream_version,
        'v', 2);
END
$$;
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)')->'balance' AS not_doctored,
       ep.aggregate('account-42', 'balance(jsonb, ep.events)') = ref_fold('account-42', 1000) AS same;
-- the stale snapshots are gone once a fresh one is written
SELECT version, state ? 'v' AS fresh FROM ep.snapshots ORDER BY version;

-- a read-only transaction folds but writes no snapshot
DELETE FROM ep.snapshots;
BEGIN TRANSACTION READ ONLY;
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)') = ref_fold('account-42', 1000) AS same;
COMMIT;
SELECT count(*) AS snapshots FROM ep.snapshots;
-- so does a REPEATABLE READ one
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)') = ref_fold('account-42', 1000) AS same;
COMMIT;
SELECT count(*) AS snapshots FROM ep.snapshots;

-- removing the policy removes the reducer's snapshots
SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)') IS NOT NULL AS folded;
SELECT count(*) > 0 AS has_snapshots FROM ep.snapshots;
SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', NULL);
SELECT count(*) AS snapshots FROM ep.snapshots;

-- Strictness: a STRICT reducer is not called while the state is NULL.
CREATE FUNCTION strict_count(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql STRICT AS $$ SELECT to_jsonb(state::text::int + 1) $$;
CREATE FUNCTION lax_count(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT to_jsonb(coalesce(state::text::int, 0) + 1) $$;
SELECT ep.aggregate('account-42', 'strict_count(jsonb, ep.events)', NULL) AS strict_null,
       ep.aggregate('account-42', 'strict_count(jsonb, ep.events)', '0') AS strict_zero,
       ep.aggregate('account-42', 'lax_count(jsonb, ep.events)', NULL) AS lax_null;
-- a reducer may return NULL; the fold goes on
CREATE FUNCTION forgetful(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT CASE WHEN e.stream_version % 2 = 0 THEN NULL ELSE to_jsonb(e.stream_version) END $$;
SELECT ep.aggregate('account-42', 'forgetful(jsonb, ep.events)', as_of_version => 4) AS even_null,
       ep.aggregate('account-42', 'forgetful(jsonb, ep.events)', as_of_version => 5) AS odd;

-- SQL reducers are inlined; a field e.col is read from the row, the event is
-- formed whole only when the body uses it whole; all equal the reference
-- (balance, redefined above, adds "v": 2).
CREATE FUNCTION balance_fields(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'balance', coalesce((state->>'balance')::numeric, 0)
                   + CASE e.event_type
                       WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                       WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric
                       ELSE 0 END,
        'events', coalesce((state->>'events')::int, 0) + 1,
        'last', e.stream_version)
$$;
CREATE FUNCTION balance_whole(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT balance(state, e) $$;
CREATE FUNCTION balance_mixed(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT balance(state, e) || jsonb_build_object('type', e.event_type) $$;
CREATE FUNCTION balance_not_inlined(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql SET search_path = public AS $$ SELECT balance(state, e) $$;
SELECT v,
       ep.aggregate('account-42', 'balance_fields(jsonb, ep.events)', '{}', v) = ref_fold('account-42', v) - 'v' AS fields,
       ep.aggregate('account-42', 'balance_whole(jsonb, ep.events)', '{}', v) = ref_fold('account-42', v) AS whole,
       ep.aggregate('account-42', 'balance_mixed(jsonb, ep.events)', '{}', v) - 'type' = ref_fold('account-42', v) AS mixed,
       ep.aggregate('account-42', 'balance_mixed(jsonb, ep.events)', '{}', v)->>'type' AS last_type,
       ep.aggregate('account-42', 'balance_not_inlined(jsonb, ep.events)', '{}', v) = ref_fold('account-42', v) AS not_inlined,
       ep.aggregate('account-42', 'balance_fields(jsonb, ep.events)', '{}', v, pg_catalog.now()) = ref_fold('account-42', v) - 'v' AS with_time
  FROM generate_series(1, 5) v ORDER BY v;
SELECT ep.aggregate('account-42', 'balance_fields(jsonb, ep.events)', as_of_time => :'t_first')
     = ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_time => :'t_first') - 'v' AS fields_as_of_time;
-- a field that is NULL (metadata) and one the body reads twice
CREATE FUNCTION meta_count(state jsonb, e ep.events) RETURNS jsonb
    LANGUAGE sql AS $$
    SELECT jsonb_build_object('null_meta', coalesce((state->>'null_meta')::int, 0) + (e.metadata IS NULL)::int,
                              'versions', coalesce(state->'versions', '[]') || to_jsonb(e.stream_version)
                                          || to_jsonb(e.stream_version * 10))
$$;
SELECT ep.aggregate('account-42', 'meta_count(jsonb, ep.events)', NULL, 3);

-- Bad input: clear errors with their SQLSTATE.
CREATE FUNCTION wrong_args(state jsonb, e jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
CREATE FUNCTION wrong_result(state jsonb, e ep.events) RETURNS text LANGUAGE sql AS 'SELECT ''x''';
SELECT pg_temp.try($$SELECT ep.aggregate(NULL, 'balance(jsonb, ep.events)')$$);
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', NULL)$$);
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', 'no_such_reducer(jsonb, ep.events)')$$);
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', 'wrong_args(jsonb, jsonb)')$$);
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', 'wrong_result(jsonb, ep.events)')$$);
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', 12345678::oid::regprocedure)$$);
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)', as_of_version => -1)$$);
SELECT pg_temp.try($$SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', -5)$$);
SELECT pg_temp.try($$SELECT ep.set_snapshot_policy('wrong_result(jsonb, ep.events)', 5)$$);

-- A role needs EXECUTE on the reducer, and may not set another's policy.
CREATE ROLE ep_agg_reader;
REVOKE EXECUTE ON FUNCTION balance(jsonb, ep.events) FROM PUBLIC;
SET ROLE ep_agg_reader;
SELECT pg_temp.try($$SELECT ep.aggregate('account-42', 'balance(jsonb, ep.events)')$$);
SELECT pg_temp.try($$SELECT ep.set_snapshot_policy('lax_count(jsonb, ep.events)', 5)$$);
SELECT ep.aggregate('account-42', 'lax_count(jsonb, ep.events)', NULL) AS lax_as_reader;
RESET ROLE;
DROP ROLE ep_agg_reader;

-- A refresh job keeps the snapshotted streams up to date in the background.
SELECT ep.append_events('account-43', '[{"type": "Opened"}, {"type": "Deposited", "data": {"amount": 1}}, {"type": "Deposited", "data": {"amount": 2}}]');
SELECT ep.set_snapshot_policy('lax_count(jsonb, ep.events)', 2, '1 minute');
SELECT ep.aggregate('account-43', 'lax_count(jsonb, ep.events)', NULL) AS folded;
SELECT j.kind, j.target, j.schedule, r.command, j.owner = current_user AS mine
  FROM ep.jobs j JOIN ep.job_registry r USING (job_id) WHERE j.kind = 'snapshot';
SELECT reducer, every, refresh FROM ep.snapshot_policies;
SELECT ep.append('account-43', 'Deposited', '{"amount": 3}');
SELECT ep.append('account-43', 'Deposited', '{"amount": 4}');
SELECT stream_id, version, state, initial FROM ep.snapshots WHERE stream_id = 'account-43' ORDER BY version;
DO $$ BEGIN EXECUTE (SELECT command FROM ep.job_registry WHERE kind = 'snapshot'); END $$;
SELECT stream_id, version, state, initial FROM ep.snapshots WHERE stream_id = 'account-43' ORDER BY version;
-- without refresh the job goes away
SELECT ep.set_snapshot_policy('lax_count(jsonb, ep.events)', 2);
SELECT count(*) AS snapshot_jobs FROM ep.jobs WHERE kind = 'snapshot';

-- dropping a reducer removes its policy, its snapshots and its refresh job
CREATE FUNCTION doomed(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT state || jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
SELECT ep.set_snapshot_policy('doomed(jsonb, ep.events)', 1, '1 hour');
SELECT ep.aggregate('account-43', 'doomed(jsonb, ep.events)') AS folded;
SELECT (SELECT count(*) FROM ep.snapshot_policies WHERE reducer = 'doomed(jsonb, ep.events)'::regprocedure) AS policies,
       (SELECT count(*) FROM ep.snapshots WHERE reducer = 'doomed(jsonb, ep.events)'::regprocedure) > 0 AS snapshots,
       (SELECT count(*) FROM ep.jobs WHERE kind = 'snapshot' AND target LIKE '%doomed%') AS jobs;
DROP FUNCTION doomed(jsonb, ep.events);
SELECT (SELECT count(*) FROM ep.snapshot_policies p WHERE NOT EXISTS (SELECT 1 FROM pg_proc f WHERE f.oid = p.reducer)) AS orphan_policies,
       (SELECT count(*) FROM ep.snapshots s WHERE NOT EXISTS (SELECT 1 FROM pg_proc f WHERE f.oid = s.reducer)) AS orphan_snapshots,
       (SELECT count(*) FROM ep.jobs WHERE kind = 'snapshot' AND target LIKE '%doomed%') AS jobs;

-- hard delete: the fold sees nothing, whatever snapshots said
SELECT ep.set_snapshot_policy('lax_count(jsonb, ep.events)', 2);
SELECT ep.aggregate('account-42', 'lax_count(jsonb, ep.events)', NULL) AS before_delete;
SELECT ep.delete_stream('account-42', hard => true);
SELECT ep.aggregate('account-42', 'lax_count(jsonb, ep.events)', NULL) AS after_delete;

-- leave a clean extension for the suites that follow
SET client_min_messages = warning;
DROP EXTENSION event_patterns CASCADE;
CREATE EXTENSION event_patterns;
RESET client_min_messages;
