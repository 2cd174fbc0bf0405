-- API contract of DESIGN.md section 2: names, signatures, return types.
BEGIN;
SELECT plan(19);

SELECT has_schema('ep');
SELECT has_table('ep', 'events', 'ep.events exists');
SELECT columns_are('ep', 'events', ARRAY['global_position', 'stream_id', 'stream_version',
    'event_id', 'event_type', 'data', 'metadata', 'schema_version', 'recorded_at', 'category']);
SELECT function_returns('ep', 'append', ARRAY['text', 'text', 'jsonb', 'jsonb', 'bigint', 'uuid'], 'bigint');
SELECT function_returns('ep', 'append_events', ARRAY['text', 'jsonb', 'bigint'], 'bigint');
SELECT function_returns('ep', 'stream_version', ARRAY['text'], 'bigint');
SELECT function_returns('ep', 'read_stream', ARRAY['text', 'bigint', 'integer', 'boolean'], 'setof ep.events');
SELECT function_returns('ep', 'read_all', ARRAY['bigint', 'integer', 'text[]'], 'setof ep.events');
SELECT function_returns('ep', 'read_category', ARRAY['text', 'bigint', 'integer', 'integer', 'integer'], 'setof ep.events');
SELECT function_returns('ep', 'delete_stream', ARRAY['text', 'bigint', 'boolean'], 'void');
SELECT function_returns('ep', 'set_stream_metadata', ARRAY['text', 'bigint', 'interval', 'bigint'], 'void');
SELECT function_returns('ep', 'create_subscription', ARRAY['text', 'text', 'text[]', 'bigint'], 'void');
SELECT function_returns('ep', 'poll', ARRAY['text', 'integer', 'integer', 'integer'], 'setof ep.events');
SELECT function_returns('ep', 'ack', ARRAY['text', 'bigint', 'integer'], 'void');

SELECT throws_ok($$SELECT ep.append('acct-1', 'A', '{}', NULL, 5)$$, 'EP001', NULL,
                 'wrong expected version raises EP001');
SELECT lives_ok($$SELECT ep.append('acct-2', 'A', '{}')$$, 'append works');
SELECT throws_ok($$UPDATE ep.events SET data = '{}'$$, 'EP004', NULL,
                 'events are immutable');

SELECT throws_ok($$DELETE FROM ep.events$$, 'EP004', NULL, 'events cannot be deleted');
SELECT throws_ok($$TRUNCATE ep.events$$, 'EP004', NULL, 'events cannot be truncated');
SELECT * FROM finish();
ROLLBACK;
