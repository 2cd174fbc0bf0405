# Incremental views under concurrent writers: four pgbench clients mix
# updates, group moves (NULL groups included), inserts, deletes, changes of
# the joined table, statements writing both joined tables (writable CTEs:
# the view is recomputed) and rolled-back savepoints, and now and then refresh a
# deferred view, first under READ COMMITTED, then under REPEATABLE READ.
# Afterwards every view equals its query (EXCEPT ALL both ways).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('ivm_stress');
# deadlocks between writers of hot groups are retried: find them quickly
$node->append_conf('postgresql.conf', 'deadlock_timeout = 50ms');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE TABLE cs (id serial PRIMARY KEY, grp int, v int);
CREATE TABLE cd (grp int, label text);
INSERT INTO cs (grp, v) SELECT g % 20, g FROM generate_series(1, 2000) g;
INSERT INTO cd SELECT g, 'l' || (g % 4) FROM generate_series(0, 25) g;
SELECT ep.create_incremental_view('cs_agg', 'SELECT grp, count(*) AS n, sum(v) AS s, max(v) AS hi, min(v) AS lo FROM cs GROUP BY grp');
SELECT ep.create_incremental_view('cs_dist', 'SELECT DISTINCT grp FROM cs');
SELECT ep.create_incremental_view('cs_join', 'SELECT d.label, count(*) AS n, sum(c.v) AS s FROM cs c JOIN cd d ON d.grp = c.grp GROUP BY d.label');
SELECT ep.create_incremental_view('cs_outer', 'SELECT d.label, c.v FROM cd d LEFT JOIN cs c ON c.grp = d.grp WHERE c.v IS NULL OR c.v < 100');
SELECT ep.create_incremental_view('cs_self', 'SELECT a.grp, count(*) AS n, sum(b.v) AS s FROM cs a JOIN cs b ON b.id = a.id + 1 AND b.grp = a.grp GROUP BY a.grp');
SELECT ep.create_incremental_view('cs_def', 'SELECT grp, count(*) AS n, max(v) AS hi FROM cs GROUP BY grp', 'deferred');
CREATE FUNCTION ivm_diff(v text) RETURNS bigint LANGUAGE plpgsql AS $f$
DECLARE q text; a bigint; b bigint;
BEGIN
    SELECT query INTO q FROM ep.incremental_views WHERE name = v;
    EXECUTE format('SELECT count(*) FROM (SELECT * FROM %s EXCEPT ALL (%s)) x', v, q) INTO a;
    EXECUTE format('SELECT count(*) FROM ((%s) EXCEPT ALL SELECT * FROM %s) x', q, v) INTO b;
    RETURN a + b;
END $f$;
});

my $writer = q{
\set id random(1, 2500)
\set g random(0, 30)
\set v random(0, 5000)
\set op random(1, 10)
BEGIN;
UPDATE cs SET v = :v WHERE id = :id AND :op <= 4;
UPDATE cs SET grp = CASE WHEN :g > 28 THEN NULL ELSE :g END WHERE id = :id AND :op = 5;
INSERT INTO cs (grp, v) SELECT :g, :v WHERE :op IN (6, 7);
DELETE FROM cs WHERE id = :id AND :op = 8;
UPDATE cd SET grp = :g WHERE label = 'l' || (:v % 4) AND grp = :g - 1 AND :op = 9;
WITH x AS (UPDATE cd SET label = label WHERE grp = :g AND :op = 3 RETURNING grp)
UPDATE cs SET v = v + 1 WHERE grp IN (SELECT grp FROM x);
SAVEPOINT s;
INSERT INTO cs (grp, v) VALUES (:g, -1);
ROLLBACK TO SAVEPOINT s;
COMMIT;
\if :op = 10
SELECT ep.refresh_view('cs_def');
\endif
};

# Writers of the same table of a join view run concurrently and lock the
# view's group rows like any hot rows: transactions of several statements
# that touch the same groups in different orders can deadlock, as with
# plain tables. pgbench retries those (and, below, serialization failures).
$node->pgbench('--no-vacuum --client=4 --jobs=4 --transactions=300 --max-tries=100', 0,
	[qr{processed: 1200/1200}], [qr{^$}], 'concurrent writers all succeed (retrying deadlocks)',
	{ 'ivm_writer' => $writer });
$node->safe_psql('postgres', "SELECT ep.refresh_view('cs_def')");
is($node->safe_psql('postgres', q{
SELECT string_agg(v || '=' || ivm_diff(v), ' ' ORDER BY v)
  FROM unnest(ARRAY['cs_agg', 'cs_dist', 'cs_join', 'cs_outer', 'cs_self', 'cs_def']) v}),
	'cs_agg=0 cs_def=0 cs_dist=0 cs_join=0 cs_outer=0 cs_self=0', 'every view equals its query');

# the same under REPEATABLE READ: join-view maintenance runs with the latest
# snapshot once its pair locks are held, so no joined row is lost
$ENV{PGOPTIONS} = '-c default_transaction_isolation=repeatable\\ read';
$node->pgbench('--no-vacuum --client=4 --jobs=4 --transactions=150 --max-tries=200', 0,
	[qr{processed: 600/600}], [qr{^$}], 'repeatable read writers all succeed (retrying serialization failures)',
	{ 'ivm_writer_rr' => $writer });
delete $ENV{PGOPTIONS};

$node->safe_psql('postgres', "SELECT ep.refresh_view('cs_def')");
is($node->safe_psql('postgres', q{
SELECT string_agg(v || '=' || ivm_diff(v), ' ' ORDER BY v)
  FROM unnest(ARRAY['cs_agg', 'cs_dist', 'cs_join', 'cs_outer', 'cs_self', 'cs_def']) v}),
	'cs_agg=0 cs_def=0 cs_dist=0 cs_join=0 cs_outer=0 cs_self=0', 'every view equals its query after repeatable read writers');
$node->stop;
done_testing();
