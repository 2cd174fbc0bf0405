# Upgrade from the released 0.1: a database created at 0.1 and used (events,
# streams with limits, subscription, upcaster, snapshot policy, job,
# incremental views, projections), then ALTER EXTENSION ... UPDATE, must
# have exactly the extension objects of a fresh install of the default
# version (compared through a catalog description: definitions, columns in
# order, indexes, constraints, triggers, policies, privileges, comments) and
# its data must keep working.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('upgrade');
$node->append_conf('postgresql.conf', "event_patterns.enabled = off\n");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE old_db');
$node->safe_psql('postgres', 'CREATE DATABASE new_db');

$node->safe_psql('old_db', q{
CREATE EXTENSION event_patterns VERSION '0.1';
SELECT ep.append('acct-1', 'Opened', '{"owner": "ada"}');
SELECT ep.append_events('acct-1', '[{"type": "Deposited", "data": {"amount": 10}},
                                    {"type": "Deposited", "data": {"amount": 5}}]');
SELECT ep.append('acct-2', 'Opened', '{}');
SELECT ep.set_stream_metadata('acct-2', max_count => 10);
SELECT ep.create_subscription('mailer', 'acct');
SELECT ep.ack('mailer', 2);
CREATE FUNCTION up_cents(d jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT d || jsonb_build_object('cents', (d->>'amount')::int * 100) $$;
SELECT ep.register_upcaster('Deposited', 1, 'up_cents(jsonb)');
CREATE FUNCTION balance(state jsonb, e ep.events) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
                                     + coalesce((e.data->>'amount')::numeric, 0)) $$;
SELECT ep.set_snapshot_policy('balance(jsonb, ep.events)', 2);
SELECT ep.aggregate('acct-1', 'balance(jsonb, ep.events)');
CREATE TABLE orders (id int PRIMARY KEY, region text, amount int);
INSERT INTO orders SELECT g, 'r' || g % 3, g FROM generate_series(1, 30) g;
SELECT ep.create_incremental_view('sales', 'SELECT region, count(*) AS n, sum(amount) AS total FROM public.orders GROUP BY region');
SELECT ep.create_incremental_view('sales_d', 'SELECT region, max(amount) AS top FROM public.orders GROUP BY region', 'deferred');
SELECT ep.schedule_refresh('sales_d', '1 hour');
CREATE TABLE seen (pos bigint);
CREATE FUNCTION on_event(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.seen VALUES (e.global_position) $$;
SELECT ep.create_projection('seen', 'on_event(ep.events)');

});

$node->safe_psql('old_db', 'ALTER EXTENSION event_patterns UPDATE');
$node->safe_psql('new_db', 'CREATE EXTENSION event_patterns');

is($node->safe_psql('old_db', "SELECT extversion FROM pg_extension WHERE extname = 'event_patterns'"),
   $node->safe_psql('new_db', "SELECT default_version FROM pg_available_extensions WHERE name = 'event_patterns'"),
   'updated to the default version');

# Everything PostgreSQL knows about the extension's objects, without OIDs.
my $describe = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'event_patterns'),
members AS (
  SELECT d.classid, d.objid FROM pg_depend d, ext
   WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT c.oid AS reloid, c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
lines AS (
  SELECT 'member ' || pg_describe_object(classid, objid, 0) AS l FROM members
  UNION ALL
  SELECT 'comment ' || pg_describe_object(m.classid, m.objid, 0) || ': ' || coalesce(obj_description(m.objid, (SELECT relname FROM pg_class WHERE oid = m.classid)), '-')
    FROM members m
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || ' acl=' || coalesce(p.proacl::text, '-') || E'\n' || pg_get_functiondef(p.oid)
    FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
   WHERE p.prokind <> 'a'
  UNION ALL
  SELECT 'relation ' || r.reloid::regclass || ' kind=' || r.relkind::text || ' acl=' || coalesce(r.relacl::text, '-')
         || ' rls=' || r.relrowsecurity || '/' || r.relforcerowsecurity || ' opts=' || coalesce(r.reloptions::text, '-')
         || ' persistence=' || r.relpersistence::text || ' replident=' || r.relreplident::text
    FROM rels r
  UNION ALL
  SELECT 'column ' || a.attrelid::regclass || ' #' || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum)
         || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
         || coalesce(' generated=' || nullif(a.attgenerated::text, ''), '') || coalesce(' identity=' || nullif(a.attidentity::text, ''), '')
         || ' acl=' || coalesce(a.attacl::text, '-') || ' collation=' || a.attcollation::regcollation
         || ' comment=' || coalesce(col_description(a.attrelid, a.attnum), '-')
    FROM pg_attribute a JOIN rels r ON r.reloid = a.attrelid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rels r ON r.reloid = i.indrelid
  UNION ALL
  SELECT 'constraint ' || c.conrelid::regclass || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c JOIN rels r ON r.reloid = c.conrelid
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN rels r ON r.reloid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'policy ' || p.polrelid::regclass || ' ' || p.polname || ' ' || p.polcmd::text || ' permissive=' || p.polpermissive
         || ' roles=' || p.polroles::regrole[]::text || ' using=' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-')
         || ' check=' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
    FROM pg_policy p JOIN rels r ON r.reloid = p.polrelid
  UNION ALL
  SELECT 'view ' || r.reloid::regclass || E'\n' || pg_get_viewdef(r.reloid) FROM rels r WHERE r.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'sequence ' || s.seqrelid::regclass || ' ' || format_type(s.seqtypid, NULL) || ' ' || s.seqincrement || ' ' || s.seqmin || ' ' || s.seqmax || ' ' || s.seqcycle
    FROM pg_sequence s JOIN rels r ON r.reloid = s.seqrelid
  UNION ALL
  SELECT 'type ' || t.oid::regtype || ' ' || t.typtype::text || coalesce(' ' || pg_get_constraintdef(c.oid), '')
    FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
    LEFT JOIN pg_constraint c ON c.contypid = t.oid
  UNION ALL
  SELECT 'event trigger ' || e.evtname || ' ' || e.evtevent || ' ' || e.evtfoid::regprocedure || ' ' || coalesce(e.evttags::text, '-') || ' ' || e.evtenabled::text
    FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
  UNION ALL
  SELECT 'config ' || c::regclass || ' ' || coalesce(x.extcondition[i], '-')
    FROM pg_extension x, unnest(x.extconfig) WITH ORDINALITY AS u(c, i)
   WHERE x.extname = 'event_patterns'
  UNION ALL
  SELECT 'schema acl ' || coalesce(n.nspacl::text, '-') FROM pg_namespace n WHERE n.nspname = 'ep'
)
SELECT string_agg(l, E'\n' ORDER BY l) FROM lines;
};

my $old = $node->safe_psql('old_db', $describe);
my $new = $node->safe_psql('new_db', $describe);
ok(length($new) > 10000, 'the catalog description is not empty');
if ($old eq $new)
{
	pass('an updated 0.1 database has the same extension objects as a fresh install');
}
else
{
	my %o = map { $_ => 1 } split /\n(?=(?:member|comment|function|relation|column|index|constraint|trigger|policy|view|sequence|type|event trigger|config|schema acl) )/, $old;
	my %n = map { $_ => 1 } split /\n(?=(?:member|comment|function|relation|column|index|constraint|trigger|policy|view|sequence|type|event trigger|config|schema acl) )/, $new;
	diag("only after the update: $_") for grep { !$n{$_} } sort keys %o;
	diag("only in a fresh install: $_") for grep { !$o{$_} } sort keys %n;
	fail('an updated 0.1 database has the same extension objects as a fresh install');
}

# the data made at 0.1 keeps working after the update
is($node->safe_psql('old_db', "SELECT ep.append('acct-1', 'Deposited', '{\"amount\": 1}')"), '4',
   'appends continue the stream');
is($node->safe_psql('old_db', "SELECT count(*) FROM ep.read_all(0, 100)"), '5', 'read_all sees every event');
is($node->safe_psql('old_db', "SELECT ep.aggregate('acct-1', 'balance(jsonb, ep.events)')->>'balance'"), '16',
   'folds (with the stored snapshot) still agree');
is($node->safe_psql('old_db', "SELECT position FROM ep.subscription_checkpoints WHERE subscription = 'mailer'"), '2',
   'subscription checkpoint kept');
$node->safe_psql('old_db', "INSERT INTO orders VALUES (100, 'r1', 1000)");
is($node->safe_psql('old_db', q{
  SELECT count(*) FROM ((TABLE sales EXCEPT ALL SELECT region, count(*), sum(amount) FROM orders GROUP BY region)
                        UNION ALL (SELECT region, count(*), sum(amount) FROM orders GROUP BY region EXCEPT ALL TABLE sales)) d}),
   '0', 'immediate view still maintained');
$node->safe_psql('old_db', "SELECT ep.refresh_view('sales_d')");
is($node->safe_psql('old_db', q{
  SELECT count(*) FROM ((TABLE sales_d EXCEPT ALL SELECT region, max(amount) FROM orders GROUP BY region)
                        UNION ALL (SELECT region, max(amount) FROM orders GROUP BY region EXCEPT ALL TABLE sales_d)) d}),
   '0', 'deferred view still refreshed');
$node->safe_psql('old_db', "SELECT ep.apply_projections()");
is($node->safe_psql('old_db', "SELECT count(*) FROM seen"), '5', 'projection continues from its position');
is($node->safe_psql('old_db', "SELECT count(*) FROM ep.jobs WHERE kind = 'view_refresh'"), '1', 'refresh job kept');

$node->stop;
done_testing();
