-- F3 (high): owner code runs with the CALLER's session settings (only search_path
-- is replaced), so a caller decides what shared state contains.
-- (a) snapshot poisoning, as alice:
CREATE FUNCTION alice.balance(s jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('balance', coalesce((s->>'balance')::float8, 0) + (e.data->>'amount')::float8) $$;
SELECT ep.set_snapshot_policy('alice.balance(jsonb,ep.events)', 2);
SELECT ep.append('acct-42', 'Deposited', '{"amount": 123.45}'),
       ep.append('acct-42', 'Deposited', '{"amount": 1000.01}'),
       ep.append('acct-42', 'Deposited', '{"amount": 0.5}');
-- as eve:
--   SET extra_float_digits = -15;
--   SELECT ep.aggregate('acct-42', (SELECT oid FROM pg_proc WHERE proname='balance')::regprocedure);
-- as alice, afterwards:
--   SELECT ep.aggregate('acct-42', 'alice.balance(jsonb,ep.events)');   -> {"balance": 1000.5}  (truth: 1123.96)
--   SELECT version, state FROM ep.snapshots WHERE stream_id = 'acct-42'; -> 2 | {"balance": 1000}
--
-- (b) incremental view maintenance parsed under the writer's standard_conforming_strings, as alice:
CREATE TABLE alice.notes(id serial PRIMARY KEY, path text);
GRANT USAGE ON SCHEMA alice TO eve; GRANT INSERT ON alice.notes TO eve;
GRANT USAGE ON SEQUENCE alice.notes_id_seq TO eve;
SELECT ep.create_incremental_view('winpaths',
  $q$SELECT path, count(*) AS n FROM alice.notes WHERE path LIKE 'C:\\%' GROUP BY path$q$, 'immediate');
-- as eve (a legitimate writer of alice.notes):
--   SET standard_conforming_strings = off;
--   INSERT INTO alice.notes(path) VALUES (E'C:\\foo'), ('C:%');
-- as alice:
--   SELECT * FROM alice.winpaths;  -> only "C:%" (which the query excludes); "C:\foo" missing
