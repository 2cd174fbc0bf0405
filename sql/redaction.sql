-- Redaction: a data-protection request replaces a stream's payloads and
-- keeps everything downstream consumers rely on.
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

SELECT ep.append_events('account-9', '[
  {"type": "Opened",    "data": {"owner": "Grace Hopper", "email": "grace@example.com"}, "metadata": {"ip": "192.0.2.1"}},
  {"type": "Deposited", "data": {"amount": 100}, "metadata": {"ip": "192.0.2.1"}},
  {"type": "Withdrawn", "data": {"amount": 40}},
  {"type": "Deposited", "data": {"amount": 5}, "schema_version": 1}
]');
SELECT ep.append('account-10', 'Opened', '{"owner": "Alan"}');

CREATE FUNCTION balance(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
        + CASE e.event_type WHEN 'Deposited' THEN coalesce((e.data->>'amount')::numeric, 0)
                            WHEN 'Withdrawn' THEN -coalesce((e.data->>'amount')::numeric, 0) ELSE 0 END)
$$;
SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', 2);
SELECT ep.aggregate('account-9', 'balance(jsonb, ep.events)');
SELECT stream_id, version, state FROM ep.snapshots;

CREATE TEMP TABLE envelope_before AS
    SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, recorded_at, category
      FROM ep.events;

SELECT ep.redact_stream('account-9', 'GDPR request #17') AS redacted;

-- payloads are gone, metadata says what happened
SELECT stream_version, event_type, data, metadata - 'redacted_at' AS metadata,
       metadata ? 'redacted_at' AS has_time
  FROM ep.read_stream('account-9');
-- every envelope column is what it was, for every stream
SELECT count(*) AS changed_envelopes FROM (
    SELECT * FROM envelope_before
    EXCEPT ALL
    SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version, recorded_at, category
      FROM ep.events) d;
SELECT stream_id, data FROM ep.read_stream('account-10');
-- who, when, why
SELECT redaction_id, stream_id, reason, redacted_by = current_user AS by_me,
       redacted_at <= now() AS in_the_past, events
  FROM ep.redactions;
-- the stream's snapshots are invalidated: the fold sees the redacted events
SELECT count(*) AS snapshots FROM ep.snapshots;
SELECT ep.aggregate('account-9', 'balance(jsonb, ep.events)');

-- an upcaster registered later does not touch redacted payloads
CREATE FUNCTION deposited_v2(data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ SELECT jsonb_build_object('cents', (data->>'amount')::numeric * 100) $$;
SELECT ep.register_upcaster('Deposited', 1, 'deposited_v2(jsonb)');
SELECT stream_version, event_type, data, schema_version FROM ep.read_stream('account-9');

-- the stream lives on: later events are not redacted
SELECT ep.append('account-9', 'Deposited', '{"amount": 7}');
SELECT stream_version, data FROM ep.read_stream('account-9', 5);

-- redacting again redacts the new events too and is recorded again
SELECT ep.redact_stream('account-9', 'GDPR request #17, follow-up') AS redacted;
SELECT redaction_id, reason, events FROM ep.redactions ORDER BY redaction_id;

-- still no other way to change stored events
SELECT pg_temp.try($$UPDATE ep.events SET data = '{}' WHERE stream_id = 'account-10'$$);

-- bad input
SELECT pg_temp.try($$SELECT ep.redact_stream(NULL, 'x')$$);
SELECT pg_temp.try($$SELECT ep.redact_stream('account-10', NULL)$$);
SELECT pg_temp.try($$SELECT ep.redact_stream('account-10', '')$$);
SELECT pg_temp.try($$SELECT ep.redact_stream('account-404', 'no such stream')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try($$SELECT ep.redact_stream('account-10', 'in repeatable read')$$);
ROLLBACK;
SELECT count(*) AS redactions FROM ep.redactions;

-- a role needs to be granted redaction; then its name is recorded
CREATE ROLE ep_dpo;
SET ROLE ep_dpo;
SELECT pg_temp.try($$SELECT ep.redact_stream('account-10', 'request #18')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION ep.redact_stream(text, text) TO ep_dpo;
SET ROLE ep_dpo;
SELECT ep.redact_stream('account-10', 'request #18') AS redacted;
RESET ROLE;
SELECT stream_id, reason, redacted_by FROM ep.redactions WHERE stream_id = 'account-10';
REVOKE EXECUTE ON FUNCTION ep.redact_stream(text, text) FROM ep_dpo;
DROP ROLE ep_dpo;

-- leave a clean extension for the suites that follow
SET client_min_messages = warning;
DROP EXTENSION event_patterns CASCADE;
CREATE EXTENSION event_patterns;
RESET client_min_messages;
