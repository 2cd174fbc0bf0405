-- Retention: ep.scavenge physically removes what stream limits and soft
-- deletes already hide; what readers see does not change.
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
CREATE FUNCTION pg_temp.ten(s text) RETURNS bigint LANGUAGE sql AS $$
    SELECT ep.append_events(s, (SELECT jsonb_agg(jsonb_build_object(
        'type', CASE WHEN i % 4 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
        'data', jsonb_build_object('amount', i * 10))) FROM generate_series(1, 10) i))
$$;
CREATE VIEW stored AS
    SELECT stream_id, count(*) AS stored, min(stream_version) AS first, max(stream_version) AS last
      FROM ep.events GROUP BY stream_id ORDER BY stream_id;
CREATE VIEW visible AS
    SELECT s, (SELECT count(*) FROM ep.read_stream(s)) AS visible
      FROM unnest(ARRAY['account-1', 'account-2', 'account-3', 'account-4', 'account-5']) s;

SELECT pg_temp.ten('account-' || i) FROM generate_series(1, 5) i;

-- account-1 keeps its last 3 events, account-2 drops versions below 5,
-- account-3 is soft-deleted, account-4 keeps 10 ms of history, account-5 has no limits
SELECT ep.set_stream_metadata('account-1', max_count => 3);
SELECT ep.set_stream_metadata('account-2', truncate_before => 5);
SELECT ep.delete_stream('account-3');
SELECT ep.set_stream_metadata('account-4', max_age => '10 milliseconds');
SELECT pg_sleep(0.05);

-- a snapshot of account-5, to see scavenging delete it
CREATE FUNCTION balance(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
        + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                            WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric ELSE 0 END)
$$;
SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', 5);
SELECT ep.aggregate('account-5', 'balance(jsonb, ep.events)');
SELECT stream_id, version FROM ep.snapshots;

SELECT * FROM visible;
SELECT * FROM stored;
CREATE TEMP TABLE before AS SELECT * FROM ep.read_all(0, 1000);

-- batch_size 2, at most 3 rows in this call
SELECT ep.scavenge(2, 3) AS removed;
SELECT * FROM stored;
-- the rest; what readers see has not changed
SELECT ep.scavenge(2) AS removed;
SELECT * FROM stored;
SELECT * FROM visible;
SELECT count(*) AS same_as_before
  FROM (SELECT * FROM before EXCEPT ALL SELECT * FROM ep.read_all(0, 1000)) d;
SELECT count(*) AS unchanged FROM ep.read_all(0, 1000);
-- nothing is left to remove
SELECT ep.scavenge() AS removed;

-- a soft-deleted stream continues its numbering; new events stay
SELECT ep.append('account-3', 'Deposited', '{"amount": 5}');
SELECT ep.scavenge() AS removed;
SELECT stream_version, event_type FROM ep.read_stream('account-3');

-- max_count slides as the stream grows: the next scavenge removes the overflow
SELECT ep.append('account-1', 'Deposited', '{"amount": 1}');
SELECT ep.scavenge() AS removed;
SELECT stream_version FROM ep.read_stream('account-1');

-- the procedure commits between batches
SELECT ep.set_stream_metadata('account-5', truncate_before => 8);
SELECT stream_id, version FROM ep.snapshots;
CALL ep.scavenge_in_batches(3);
SELECT * FROM stored;
-- scavenging account-5 deleted its snapshots
SELECT count(*) AS snapshots FROM ep.snapshots;

-- events stay immutable outside the extension's functions
SELECT pg_temp.try('DELETE FROM ep.events');
SELECT pg_temp.try('UPDATE ep.events SET data = ''{}''');

-- bad input
SELECT pg_temp.try('SELECT ep.scavenge(0)');
SELECT pg_temp.try('SELECT ep.scavenge(10, 0)');

-- the default job scavenges every 5 minutes as the extension owner
SELECT j.kind, j.target, j.schedule, r.command,
       j.owner = (SELECT extowner::regrole::name FROM pg_extension
                   WHERE extname = 'event_patterns') AS owner_is_extension_owner
  FROM ep.jobs j JOIN ep.job_registry r USING (job_id) WHERE j.kind = 'scavenge';
DO $$ BEGIN EXECUTE (SELECT command FROM ep.job_registry WHERE kind = 'scavenge'); END $$;

-- only roles granted it may scavenge
CREATE ROLE ep_ret_user;
SET ROLE ep_ret_user;
SELECT pg_temp.try('SELECT ep.scavenge()');
RESET ROLE;
DROP ROLE ep_ret_user;

DROP VIEW visible;
DROP VIEW stored;
DROP FUNCTION balance(jsonb, ep.events);

-- leave a clean extension for the suites that follow
SET client_min_messages = warning;
DROP EXTENSION event_patterns CASCADE;
CREATE EXTENSION event_patterns;
RESET client_min_messages;
