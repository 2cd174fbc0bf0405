-- F2 (high): a reducer with a snapshot policy runs as its owner for ANY caller of
-- ep.aggregate, on a stream and initial state the caller chooses.
-- as alice:
CREATE TABLE alice.prices(sku text PRIMARY KEY, price numeric, secret text);
INSERT INTO alice.prices VALUES ('A', 9.99, 'alice-only: supplier cost 3.10');
CREATE FUNCTION alice.fold(s jsonb, e ep.events) RETURNS jsonb LANGUAGE sql AS $$
  SELECT s || jsonb_build_object('who', current_user,
          'last', (SELECT to_jsonb(p) FROM alice.prices p WHERE p.sku = e.data->>'sku')) $$;
SELECT ep.set_snapshot_policy('alice.fold(jsonb,ep.events)', 100);
-- as eve (no USAGE on schema alice, no SELECT on alice.prices):
--   SELECT * FROM alice.prices;                       -- ERROR: permission denied for schema alice
--   SELECT ep.append('eve-cart', 'Added', '{"sku":"A"}');
--   SELECT ep.aggregate('eve-cart', (SELECT oid FROM pg_proc WHERE proname = 'fold')::regprocedure);
--   -> {"who": "alice", "last": {"sku": "A", "price": 9.99, "secret": "alice-only: supplier cost 3.10"}}
-- and whatever alice's own folds stored: SELECT state FROM ep.snapshots;  (SELECT granted to PUBLIC)
