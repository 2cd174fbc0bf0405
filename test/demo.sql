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
