-- Event store: appending, expected versions, idempotency, immutability.
\pset null '(null)'
DROP EXTENSION IF EXISTS event_patterns;
CREATE EXTENSION event_patterns;

-- The seed example: a bank account whose balance is the sum of its events.
SELECT ep.append('account-42', 'Opened', '{"owner": "ada"}', expected_version => 0);
SELECT ep.append('account-42', 'Deposited', '{"amount": 100}', expected_version => 1);
SELECT ep.append_events('account-42', '[
    {"type": "Withdrawn", "data": {"amount": 30}},
    {"type": "Deposited", "data": {"amount": 5}, "metadata": {"by": "atm"}}
]', expected_version => 2);
SELECT stream_version, event_type, data, metadata, schema_version, category
  FROM ep.read_stream('account-42');
SELECT sum(CASE event_type WHEN 'Deposited' THEN (data->>'amount')::numeric
                           WHEN 'Withdrawn' THEN -(data->>'amount')::numeric END) AS balance
  FROM ep.read_stream('account-42');
SELECT ep.stream_version('account-42'), ep.stream_version('account-0');

-- expected version: NULL any, 0 no stream, -1 existing stream, n exact
SELECT ep.append('account-42', 'Deposited', '{"amount": 1}');            -- any
SELECT ep.append('account-42', 'Deposited', '{"amount": 1}', NULL, -1);  -- exists
SELECT ep.append('account-7', 'Opened', '{}', NULL, -1);                 -- does not exist
SELECT ep.append('account-42', 'Opened', '{}', NULL, 0);                 -- exists
SELECT ep.append('account-42', 'Deposited', '{}', NULL, 3);              -- stale
SELECT ep.append('account-42', 'Deposited', '{}', NULL, -2);             -- invalid
-- the SQLSTATEs of the EP class
\set VERBOSITY sqlstate
SELECT ep.append('account-42', 'Deposited', '{}', NULL, 3);
SELECT ep.append('nodash-x', 'A', '{}', NULL, NULL, '99999999-9999-9999-9999-999999999999');
SELECT ep.append('nodash-y', 'A', '{}', NULL, NULL, '99999999-9999-9999-9999-999999999999');
UPDATE ep.events SET data = '{}';
\set VERBOSITY default
-- single events with metadata and with caller-supplied ids
SELECT ep.append('meta-1', 'Tagged', '{"v": 1}', '{"trace": "abc"}');
SELECT ep.append('meta-1', 'Tagged', '{"v": 2}', '{"trace": "def"}', 1, 'aaaaaaaa-0000-0000-0000-000000000001');
SELECT stream_version, data, metadata, event_id FROM ep.read_stream('meta-1') WHERE stream_version = 2;
-- nothing was written by the failures
SELECT ep.stream_version('account-42'), count(*) FROM ep.events WHERE stream_id = 'account-42';
SELECT count(*) FROM ep.streams WHERE stream_id = 'account-7';

-- idempotency: the same ids in the same order write nothing, return the version
SELECT ep.append_events('order-1', '[
    {"type": "Placed", "id": "11111111-1111-1111-1111-111111111111"},
    {"type": "Paid",   "id": "22222222-2222-2222-2222-222222222222"}
]', 0);
SELECT ep.append_events('order-1', '[
    {"type": "Placed", "id": "11111111-1111-1111-1111-111111111111"},
    {"type": "Paid",   "id": "22222222-2222-2222-2222-222222222222"}
]', 0);
SELECT ep.append('order-1', 'Placed', '{}', NULL, NULL, '11111111-1111-1111-1111-111111111111');
SELECT count(*) FROM ep.events WHERE stream_id = 'order-1';
-- any other reuse of an id: EP003
SELECT ep.append('order-2', 'Placed', '{}', NULL, NULL, '11111111-1111-1111-1111-111111111111');
SELECT ep.append_events('order-1', '[
    {"type": "Placed", "id": "11111111-1111-1111-1111-111111111111"},
    {"type": "Shipped"}
]');
SELECT ep.append_events('order-1', '[
    {"type": "Shipped", "id": "33333333-3333-3333-3333-333333333333"},
    {"type": "Paid",    "id": "22222222-2222-2222-2222-222222222222"}
]');
SELECT ep.append_events('order-3', '[
    {"type": "A", "id": "44444444-4444-4444-4444-444444444444"},
    {"type": "B", "id": "44444444-4444-4444-4444-444444444444"}
]');
SELECT count(*) FROM ep.events WHERE stream_id IN ('order-1', 'order-2', 'order-3');
SELECT stream_id, version FROM ep.streams WHERE stream_id LIKE 'order-%' ORDER BY 1;

-- bad input: clear errors, nothing written
SELECT ep.append(NULL, 'A', '{}');
SELECT ep.append('', 'A', '{}');
SELECT ep.append('bad-1', NULL, '{}');
SELECT ep.append('bad-1', '', '{}');
SELECT ep.append('bad-1', 'A', NULL);
SELECT ep.append('bad-1', 'A', '{}', '[1, 2]');
SELECT ep.append_events('bad-1', NULL);
SELECT ep.append_events('bad-1', '{"type": "A"}');
SELECT ep.append_events('bad-1', '"A"');
SELECT ep.append_events('bad-1', '[{"type": "A"}, {"data": {}}]');
SELECT ep.append_events('bad-1', '[{"type": "A"}, 42]');
SELECT ep.append_events('bad-1', '[{"type": 7}]');
SELECT ep.append_events('bad-1', '[{"type": "A", "metadata": [1]}]');
SELECT ep.append_events('bad-1', '[{"type": "A", "id": "not-a-uuid"}]');
SELECT ep.append_events('bad-1', '[{"type": "A", "schema_version": 0}]');
SELECT ep.append_events('bad-1', '[{"type": "A", "schema_version": 1.5}]');
SELECT ep.append_events('bad-1', '[{"type": "A", "metdata": {}}]');
SELECT ep.append_events('bad-1', '[{"type": "A"}]', -5);
SELECT ep.append_events('bad-1', '[{"type": "A"}, {"type": "B", "id": "not-a-uuid"}]');
SELECT count(*) FROM ep.events WHERE stream_id = 'bad-1';
SELECT count(*) FROM ep.streams WHERE stream_id = 'bad-1';
-- malformed JSON never reaches us: the jsonb input function rejects it
SELECT ep.append_events('bad-1', '[{"type": "A"');
-- hostile identifiers are just data
SELECT ep.append('x''); DROP TABLE ep.events; --', 'Evil"Type', '{}');
SELECT stream_id, event_type, category FROM ep.events WHERE event_type = 'Evil"Type';

-- an empty batch writes nothing but checks the expected version
SELECT ep.append_events('account-42', '[]');
SELECT ep.append_events('account-42', '[]', 1);
SELECT ep.append_events('empty-1', '[]', 0);
SELECT count(*) FROM ep.streams WHERE stream_id = 'empty-1';

-- schema_version, metadata and defaults
SELECT ep.append_events('order-9', '[{"type": "Placed", "schema_version": 2, "metadata": {"trace": "t1"}}]');
SELECT stream_version, event_type, data, metadata, schema_version FROM ep.read_stream('order-9');

-- immutability: UPDATE, DELETE and TRUNCATE raise EP004 (direct INSERT
-- needs privileges that only the extension owner has)
UPDATE ep.events SET data = '{}' WHERE stream_id = 'account-42';
DELETE FROM ep.events WHERE stream_id = 'account-42';
TRUNCATE ep.events;
-- a failed internal write inside a savepoint does not leave the guard open
BEGIN;
SAVEPOINT s1;
SELECT ep.append_events('order-5', '[{"type": "X", "id": "22222222-2222-2222-2222-222222222222"}]');
ROLLBACK TO s1;
UPDATE ep.events SET data = '{}' WHERE stream_id = 'account-42';
ROLLBACK;

-- a transaction that appended cannot be prepared (two-phase commit)
BEGIN;
SELECT ep.append('twophase-1', 'A', '{}');
PREPARE TRANSACTION 'ep_2pc';
SELECT count(*) FROM ep.events WHERE stream_id = 'twophase-1';

-- categories
SELECT ep.append('nodash', 'A', '{}');
SELECT stream_id, category FROM ep.streams WHERE stream_id IN ('nodash', 'account-42') ORDER BY 1;

-- privileges: a role without table privileges appends through the functions
CREATE ROLE ep_writer;
SET ROLE ep_writer;
SELECT ep.append('writer-1', 'Created', '{}');
SELECT count(*) FROM ep.read_stream('writer-1');
INSERT INTO ep.streams (stream_id, category) VALUES ('sneaky', 'sneaky');
INSERT INTO ep.events SELECT * FROM ep.events LIMIT 1;
RESET ROLE;
DROP ROLE ep_writer;

-- search_path cannot hijack the extension's statements
CREATE SCHEMA evil;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
SET search_path = evil, pg_catalog;
SELECT ep.append('hijack-1', 'A', '{}');
RESET search_path;
SELECT recorded_at > '2020-01-01' AS real_time FROM ep.events WHERE stream_id = 'hijack-1';
DROP SCHEMA evil CASCADE;

-- a retry inside the same transaction (even the same statement) is idempotent too
SELECT ep.append_events('same-1', '[{"type": "A", "id": "0b7c5c9e-5d1e-4c59-9a38-6d8f3c3f0a01"}]') AS first_try,
       ep.append_events('same-1', '[{"type": "A", "id": "0b7c5c9e-5d1e-4c59-9a38-6d8f3c3f0a01"}]') AS retry;
SELECT count(*) FROM ep.events WHERE stream_id = 'same-1';
