# Bounded harm from code that swallows the cancel of its time limit: the
# database's worker is terminated (owner.c), and its successor would run
# the same call again. After two such ends the worker refuses that call
# (owner strikes): the projection parks the event, the async view records
# the error, and another role's projection keeps up meanwhile.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('owner_strikes');
$node->append_conf('postgresql.conf', "event_patterns.handler_timeout = '1s'");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE eve LOGIN;
CREATE ROLE shop LOGIN;
CREATE SCHEMA eve AUTHORIZATION eve;
CREATE SCHEMA shop AUTHORIZATION shop;
SET ROLE eve;
SET search_path = eve;
CREATE FUNCTION stuck(e ep.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN
            PERFORM pg_sleep(0.1);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
END $$;
SELECT ep.create_projection('eve_stuck', 'stuck(ep.events)', ARRAY['Stuck']);
CREATE TABLE t (id int PRIMARY KEY);
ALTER TABLE t REPLICA IDENTITY FULL;
CREATE FUNCTION slow(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF i > 100 THEN
        LOOP
            BEGIN
                PERFORM pg_sleep(0.1);
            EXCEPTION WHEN query_canceled THEN
                NULL;
            END;
        END LOOP;
    END IF;
    RETURN i;
END $$;
SELECT ep.create_incremental_view('eve.v', 'SELECT id, slow(id) AS s FROM eve.t', 'async');
RESET ROLE;
SET ROLE shop;
SET search_path = shop;
CREATE TABLE seen (pos bigint PRIMARY KEY);
CREATE FUNCTION record(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO seen VALUES (e.global_position) $$;
SELECT ep.create_projection('shop_seen', 'record(ep.events)', ARRAY['Sold']);
});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM ep.ivm_async WHERE applied_lsn IS NOT NULL AND NOT needs_full}),
	'the async view was computed');

$node->safe_psql('postgres', q{
SELECT ep.append('stuck-1', 'Stuck', '{}');
INSERT INTO eve.t VALUES (101);
SELECT ep.append('sale-' || g, 'Sold', '{}') FROM generate_series(1, 20) g;
});

ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM ep.parked_events WHERE projection = 'eve_stuck'}, 't'),
	'the stubborn handler\'s event was parked');
like($node->safe_psql('postgres', q{SELECT error FROM ep.parked_events WHERE projection = 'eve_stuck'}),
	qr/projection handler of "eve_stuck" is not run by the worker for now: its code ignored its time limit and ended the worker 2 times/,
	'the worker refuses the call after it was ended twice by it');
ok($node->poll_query_until('postgres',
	q{SELECT last_error LIKE '%ended the worker 2 times%' FROM ep.incremental_views WHERE name = 'eve.v'}),
	'the async view records the same refusal');
is($node->safe_psql('postgres', q{SELECT ep.wait_for_projection('shop_seen', '60 s')}), 't',
	'the other role\'s projection caught up');
is($node->safe_psql('postgres', q{SELECT count(*) FROM shop.seen}), '20', 'every sale was seen once');

# the worker stays up: new work of the other role is applied at once
$node->safe_psql('postgres', q{SELECT ep.append('sale-21', 'Sold', '{}')});
is($node->safe_psql('postgres', q{SELECT ep.wait_for_projection('shop_seen', '10 s')}), 't',
	'the worker runs on');
my $log = slurp_file($node->logfile);
my $ends = () = $log =~ /terminating background worker/g;
cmp_ok($ends, '<=', 4, "the worker was ended $ends times, two per stubborn call at most");
$node->stop;
done_testing();
