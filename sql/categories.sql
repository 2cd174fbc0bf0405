-- Category ownership: several services share one store, each owning its
-- categories. Only the owner, the roles it grants, and roles with their
-- privileges may read, append, delete, set metadata, redact, subscribe or
-- project; every other role sees nothing of an owned category, through
-- every function and through direct SELECT on the store's tables.
\pset null '(null)'
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE sql;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN 'ok (' || n || ' rows)';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;

CREATE ROLE regress_cat_billing LOGIN;     -- owns category "catinvoice"
CREATE ROLE regress_cat_shipping LOGIN;    -- owns category "catparcel"
CREATE ROLE regress_cat_auditor LOGIN;     -- granted read on "invoice"
CREATE ROLE regress_cat_team NOLOGIN;      -- granted append on "invoice"
CREATE ROLE regress_cat_member LOGIN IN ROLE regress_cat_team;
CREATE ROLE regress_cat_billing_app LOGIN IN ROLE regress_cat_billing;
-- the application roles may use the destructive functions (not PUBLIC)
GRANT EXECUTE ON FUNCTION ep.delete_stream(text, bigint, boolean),
                          ep.set_stream_metadata(text, bigint, interval, bigint),
                          ep.redact_stream(text, text)
   TO regress_cat_billing, regress_cat_shipping, regress_cat_auditor;

-- destructive functions are not PUBLIC
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'ep'
   AND p.proname IN ('delete_stream', 'set_stream_metadata', 'redact_stream', 'scavenge',
                     'register_upcaster', 'unregister_upcaster', 'append', 'read_all',
                     'set_category_owner', 'grant_category', 'revoke_category')
 ORDER BY 1;

-- before any owner: every role may use every category, as before
SELECT ep.append('catinvoice-1', 'Issued', '{"amount": 10}');
SELECT ep.append('catparcel-1', 'Packed', '{}');
SELECT ep.append('catnote-1', 'Noted', '{}');

------------------------------------------------------------------------
-- 1. Who may set owners and grant
------------------------------------------------------------------------
SET ROLE regress_cat_shipping;
SELECT pg_temp.try($$SELECT ep.set_category_owner('catinvoice', 'regress_cat_shipping')$$);
RESET ROLE;
SELECT ep.set_category_owner('catinvoice', 'regress_cat_billing');
SELECT ep.set_category_owner('catparcel', 'regress_cat_shipping');
SELECT pg_temp.try($$SELECT ep.set_category_owner('bad-name', 'regress_cat_billing')$$);
SELECT pg_temp.try($$SELECT ep.set_category_owner('', 'regress_cat_billing')$$);
SELECT pg_temp.try($$SELECT ep.grant_category('catnote', 'regress_cat_auditor', '{read}')$$);
-- the owner grants; another service may not, nor take the category over
SET ROLE regress_cat_billing;
SELECT ep.grant_category('catinvoice', 'regress_cat_auditor', '{read}');
SELECT ep.grant_category('catinvoice', 'regress_cat_team', ARRAY['append']);
SELECT pg_temp.try($$SELECT ep.grant_category('catinvoice', 'regress_cat_team', '{write}')$$);
SELECT pg_temp.try($$SELECT ep.grant_category('catinvoice', 'regress_cat_team', '{}')$$);
SET ROLE regress_cat_shipping;
SELECT pg_temp.try($$SELECT ep.grant_category('catinvoice', 'regress_cat_shipping', '{read,append,admin}')$$);
SELECT pg_temp.try($$SELECT ep.revoke_category('catinvoice', 'regress_cat_auditor', '{read}')$$);
SELECT pg_temp.try($$SELECT ep.set_category_owner('catinvoice', 'regress_cat_shipping')$$);
SELECT pg_temp.try($$SELECT ep.set_category_owner('catinvoice', NULL)$$);
RESET ROLE;
SELECT category, owner, grants FROM ep.categories WHERE category LIKE 'cat%' ORDER BY 1;
-- the category tables are written only through the functions
SET ROLE regress_cat_shipping;
SELECT pg_temp.try($$INSERT INTO ep.category_owners (category, owner) VALUES ('catnote', 'regress_cat_shipping')$$);
SELECT pg_temp.try($$DELETE FROM ep.category_owners$$);
SELECT pg_temp.try($$INSERT INTO ep.category_grants (category, grantee, may_read) VALUES ('catinvoice', 'regress_cat_shipping', true)$$);
RESET ROLE;

------------------------------------------------------------------------
-- 2. A hostile service (shipping) against billing's category, through
--    every function and direct SELECT
------------------------------------------------------------------------
SET ROLE regress_cat_shipping;
SELECT pg_temp.try($$SELECT ep.append('catinvoice-1', 'Forged', '{}')$$);
SELECT pg_temp.try($$SELECT ep.append('catinvoice-99', 'Forged', '{}')$$);
SELECT pg_temp.try($$SELECT ep.append_events('catinvoice-1', '[{"type": "Forged"}]')$$);
SELECT pg_temp.try($$SELECT * FROM ep.read_stream('catinvoice-1')$$);
SELECT pg_temp.try($$SELECT * FROM ep.read_stream('catinvoice-1', backwards => true)$$);
SELECT pg_temp.try($$SELECT ep.stream_version('catinvoice-1')$$);
SELECT pg_temp.try($$SELECT ep.delete_stream('catinvoice-1')$$);
SELECT pg_temp.try($$SELECT ep.delete_stream('catinvoice-2', hard => true)$$);
SELECT pg_temp.try($$SELECT ep.set_stream_metadata('catinvoice-1', max_count => 0)$$);
SELECT pg_temp.try($$SELECT ep.redact_stream('catinvoice-1', 'gdpr')$$);
SELECT pg_temp.try($$SELECT ep.aggregate('catinvoice-1', 'ep.events_immutable()'::regprocedure)$$);
-- subscriptions belong to the session's role
SET SESSION AUTHORIZATION regress_cat_shipping;
SELECT pg_temp.try($$SELECT ep.create_subscription('steal', 'catinvoice')$$);
RESET SESSION AUTHORIZATION;
SET ROLE regress_cat_shipping;
-- global reads skip the category, direct SELECT does not see it
SELECT stream_id, event_type FROM ep.read_all() WHERE stream_id LIKE 'cat%' ORDER BY global_position;
SELECT count(*) AS invoice_events FROM ep.read_category('catinvoice');
SELECT stream_id FROM ep.events WHERE stream_id LIKE 'cat%' ORDER BY global_position;
SELECT stream_id FROM ep.streams WHERE stream_id LIKE 'cat%' ORDER BY 1;
SELECT count(*) FROM ep.events WHERE category = 'catinvoice';
-- its own category works
SELECT ep.append('catparcel-1', 'Shipped', '{}');
SELECT stream_version FROM ep.read_stream('catparcel-1') ORDER BY 1;
RESET ROLE;
-- the hard delete of a future id left nothing behind
SELECT stream_id, tombstoned FROM ep.streams WHERE stream_id LIKE 'catinvoice-%' ORDER BY 1;

------------------------------------------------------------------------
-- 3. Owner, members of the owner, grantees
------------------------------------------------------------------------
SET ROLE regress_cat_billing_app;          -- a member of the owner
SELECT ep.append('catinvoice-1', 'Paid', '{"amount": 10}');
SELECT stream_id, stream_version, event_type FROM ep.read_stream('catinvoice-1');
RESET ROLE;
SET ROLE regress_cat_auditor;              -- read only
SELECT stream_id, event_type FROM ep.read_all() WHERE stream_id LIKE 'cat%' ORDER BY global_position;
SELECT count(*) FROM ep.events WHERE category = 'catinvoice';
SELECT pg_temp.try($$SELECT ep.append('catinvoice-1', 'Refunded', '{}')$$);
SELECT pg_temp.try($$SELECT ep.delete_stream('catinvoice-1')$$);
SELECT pg_temp.try($$SELECT * FROM ep.read_stream('catparcel-1')$$);
RESET ROLE;
SET ROLE regress_cat_member;               -- append through role regress_cat_team
SELECT ep.append('catinvoice-2', 'Issued', '{"amount": 5}');
SELECT pg_temp.try($$SELECT * FROM ep.read_stream('catinvoice-2')$$);
SELECT count(*) FROM ep.read_category('catinvoice');
RESET ROLE;
-- admin grants delete, metadata and redaction
SET ROLE regress_cat_billing;
SELECT ep.grant_category('catinvoice', 'regress_cat_auditor', '{admin}');
RESET ROLE;
SET ROLE regress_cat_auditor;
SELECT ep.set_stream_metadata('catinvoice-2', max_count => 10);
SELECT ep.redact_stream('catinvoice-2', 'request 7');
SELECT ep.delete_stream('catinvoice-2');
RESET ROLE;
SET ROLE regress_cat_billing;
SELECT ep.revoke_category('catinvoice', 'regress_cat_auditor', '{read,admin}');
SELECT category, owner, grants FROM ep.categories WHERE category LIKE 'cat%' ORDER BY 1;
RESET ROLE;
SET ROLE regress_cat_auditor;
SELECT count(*) FROM ep.read_category('catinvoice');
SELECT pg_temp.try($$SELECT ep.delete_stream('catinvoice-1')$$);
RESET ROLE;

------------------------------------------------------------------------
-- 4. Subscriptions: creating one needs read; polling skips what the
--    poller may not read
------------------------------------------------------------------------
SET SESSION AUTHORIZATION regress_cat_billing;
SELECT ep.create_subscription('billing_invoices', 'catinvoice');
SELECT ep.create_subscription('billing_all');
SELECT stream_id, event_type FROM ep.poll('billing_all', 1000000) WHERE stream_id LIKE 'cat%' ORDER BY global_position;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_cat_shipping;
SELECT ep.create_subscription('shipping_all');
SELECT stream_id, event_type FROM ep.poll('shipping_all', 1000000) WHERE stream_id LIKE 'cat%' ORDER BY global_position;
-- another role's subscription on the category: polling skips it too
SELECT count(*) FROM ep.poll('billing_invoices');
RESET SESSION AUTHORIZATION;

------------------------------------------------------------------------
-- 5. Projections see only the categories their owner may read: inline
--    (in billing's appending transaction) and async (ep.apply_projections)
------------------------------------------------------------------------
CREATE TABLE public.cat_seen (who text, stream_id text);
GRANT INSERT, SELECT ON public.cat_seen TO PUBLIC;
GRANT TRIGGER ON ep.events TO regress_cat_shipping;
GRANT CREATE ON SCHEMA public TO regress_cat_shipping;
SET ROLE regress_cat_shipping;
CREATE FUNCTION public.cat_spy(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.cat_seen VALUES (current_user, e.stream_id) $$;
SELECT pg_temp.try($$SELECT ep.create_projection('spy_category', 'public.cat_spy(ep.events)', category => 'catinvoice')$$);
SELECT pg_temp.try($$INSERT INTO ep.projection_defs (name, kind, handler, mode, category)
                     VALUES ('spy_direct', 'events', 'public.cat_spy(ep.events)', 'async', 'catinvoice')$$);
SELECT ep.create_projection('spy_inline', 'public.cat_spy(ep.events)', mode => 'inline');
SELECT ep.create_projection('spy_async', 'public.cat_spy(ep.events)');
SELECT pg_temp.try($$UPDATE ep.projection_defs SET category = 'catinvoice' WHERE name = 'spy_async'$$);
RESET ROLE;
SET ROLE regress_cat_billing;
SELECT ep.append('catinvoice-3', 'Issued', '{"amount": 1}');
SELECT ep.append('catnote-2', 'Noted', '{}');
RESET ROLE;
SELECT ep.apply_projections() >= 0 AS applied;
SELECT who, stream_id, count(*) FROM public.cat_seen WHERE stream_id LIKE 'cat%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS invoices_seen FROM public.cat_seen WHERE stream_id LIKE 'catinvoice-%';
SELECT ep.drop_projection('spy_inline');
SELECT ep.drop_projection('spy_async');

------------------------------------------------------------------------
-- 6. Incremental views over ep.events see what their owner may read
------------------------------------------------------------------------
SET ROLE regress_cat_shipping;
SELECT ep.create_incremental_view('public.cat_counts_imm',
    'SELECT category, count(*) AS n FROM ep.events GROUP BY category', 'immediate');
SELECT ep.create_incremental_view('public.cat_counts_def',
    'SELECT category, count(*) AS n FROM ep.events GROUP BY category', 'deferred');
SELECT ep.create_incremental_view('public.cat_counts_full',
    'SELECT category, count(*) AS n FROM ep.events GROUP BY category', 'full');
RESET ROLE;
SET ROLE regress_cat_billing;
SELECT ep.append('catinvoice-4', 'Issued', '{"amount": 2}');
RESET ROLE;
SELECT ep.append('catparcel-2', 'Packed', '{}');
SET ROLE regress_cat_shipping;
SELECT ep.refresh_view('public.cat_counts_def');
SELECT ep.refresh_view('public.cat_counts_full');
SELECT * FROM public.cat_counts_imm WHERE category LIKE 'cat%' ORDER BY 1;
SELECT * FROM public.cat_counts_def WHERE category LIKE 'cat%' ORDER BY 1;
SELECT * FROM public.cat_counts_full WHERE category LIKE 'cat%' ORDER BY 1;
SELECT ep.drop_incremental_view('public.cat_counts_imm');
SELECT ep.drop_incremental_view('public.cat_counts_def');
SELECT ep.drop_incremental_view('public.cat_counts_full');
RESET ROLE;

------------------------------------------------------------------------
-- 7. Snapshots are hidden like their events; a REPEATABLE READ
--    transaction sees a grant made meanwhile at its next statement
------------------------------------------------------------------------
CREATE FUNCTION public.cat_sum(s jsonb, e ep.events) RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_build_object('sum', coalesce((s->>'sum')::numeric, 0) + coalesce((e.data->>'amount')::numeric, 0)) $$;
-- (a fold's snapshots are visible to roles with the reducer owner's privileges)
ALTER FUNCTION public.cat_sum(jsonb, ep.events) OWNER TO regress_cat_shipping;
SELECT ep.set_snapshot_policy('public.cat_sum(jsonb, ep.events)', 1);
SELECT ep.aggregate('catinvoice-1', 'public.cat_sum(jsonb, ep.events)');
SELECT ep.aggregate('catparcel-1', 'public.cat_sum(jsonb, ep.events)');
SET ROLE regress_cat_shipping;
SELECT DISTINCT stream_id FROM ep.snapshots WHERE stream_id LIKE 'cat%' ORDER BY 1;
RESET ROLE;
SET ROLE regress_cat_shipping;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM ep.events WHERE category = 'catinvoice';
SELECT count(*) FROM ep.read_category('catinvoice');
SAVEPOINT s;
RESET ROLE;
SELECT ep.grant_category('catinvoice', 'regress_cat_shipping', '{read}');
SET ROLE regress_cat_shipping;
SELECT count(*) > 0 AS sees_invoices FROM ep.events WHERE category = 'catinvoice';
SELECT count(*) > 0 AS reads_invoices FROM ep.read_category('catinvoice');
ROLLBACK TO SAVEPOINT s;
-- rolled back: hidden again
SELECT count(*) FROM ep.events WHERE category = 'catinvoice';
COMMIT;
RESET ROLE;

-- parallel plans: the policy's function (re)loads the cache in parallel mode
SELECT ep.grant_category('catinvoice', 'regress_cat_auditor', '{append}');
SET ROLE regress_cat_shipping;
SET force_parallel_mode = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SELECT count(*) FROM ep.events WHERE category = 'catinvoice';
SELECT count(*) > 0 AS sees_own FROM ep.events WHERE category = 'catparcel';
SELECT ep.stream_version('catparcel-1');
RESET force_parallel_mode;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET ROLE;

------------------------------------------------------------------------
-- 8. Giving the category up makes it open again
------------------------------------------------------------------------
SELECT ep.set_category_owner('catinvoice', NULL);
SELECT category, owner, grants FROM ep.categories WHERE category LIKE 'cat%' ORDER BY 1;
SET ROLE regress_cat_shipping;
SELECT count(*) > 0 AS sees_invoices FROM ep.events WHERE category = 'catinvoice';
SELECT ep.append('catinvoice-1', 'Noted', '{}') > 0 AS appended;
RESET ROLE;

-- clean up
SELECT ep.set_snapshot_policy('public.cat_sum(jsonb, ep.events)', 0);
SELECT ep.set_category_owner('catparcel', NULL);
SELECT ep.drop_subscription(name) FROM ep.subscriptions WHERE name IN ('billing_all', 'billing_invoices', 'shipping_all') ORDER BY name;
SELECT ep.drop_projection(name) FROM ep.projection_defs WHERE name LIKE 'spy%';
DROP FUNCTION public.cat_spy(ep.events);
DROP FUNCTION public.cat_sum(jsonb, ep.events);
DROP TABLE public.cat_seen;
REVOKE TRIGGER ON ep.events FROM regress_cat_shipping;
REVOKE CREATE ON SCHEMA public FROM regress_cat_shipping;
REVOKE EXECUTE ON FUNCTION ep.delete_stream(text, bigint, boolean),
                           ep.set_stream_metadata(text, bigint, interval, bigint),
                           ep.redact_stream(text, text)
  FROM regress_cat_billing, regress_cat_shipping, regress_cat_auditor;
DROP ROLE regress_cat_billing_app, regress_cat_member, regress_cat_team,
          regress_cat_auditor, regress_cat_shipping, regress_cat_billing;
