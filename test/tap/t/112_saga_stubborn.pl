# Bounded harm: a saga action that swallows the cancel of its time limit
# gets the database's worker terminated (owner.c). The next worker counts
# that call as a failed attempt, so the step is retried, then fails for good
# and is compensated: it cannot stop the worker for ever, and the sagas of
# another role complete meanwhile.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('saga_stubborn');
$node->append_conf('postgresql.conf', "event_patterns.handler_timeout = '1s'");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE eve LOGIN;
CREATE ROLE shop LOGIN;
CREATE SCHEMA eve AUTHORIZATION eve;
CREATE SCHEMA shop AUTHORIZATION shop;
SET ROLE eve;
CREATE TABLE eve.log (saga_id text, what text);
CREATE FUNCTION eve.first(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ INSERT INTO eve.log VALUES (saga_id, 'first') RETURNING '{}'::jsonb $$;
CREATE FUNCTION eve.undo_first(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ INSERT INTO eve.log VALUES (saga_id, 'undo_first') RETURNING '{}'::jsonb $$;
CREATE FUNCTION eve.stuck(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN
            PERFORM pg_sleep(0.1);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
END $$;
SELECT ep.define_saga('stubborn', '[
    {"name": "first", "action": "eve.first", "compensation": "eve.undo_first"},
    {"name": "stuck", "action": "eve.stuck", "retries": 1, "retry_delay": 0}
]');
RESET ROLE;
SET ROLE shop;
CREATE TABLE shop.log (saga_id text, what text);
CREATE FUNCTION shop.work(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ INSERT INTO shop.log VALUES (saga_id, 'work') RETURNING '{}'::jsonb $$;
SELECT ep.define_saga('honest', '[{"name": "one", "action": "shop.work"}, {"name": "two", "action": "shop.work"}]');
});

$node->safe_psql('postgres', q{SET ROLE eve; SELECT ep.start_saga('stubborn', 'x-1', '{}')});
$node->safe_psql('postgres', q{SET ROLE shop; SELECT ep.start_saga('honest', 'h-1', '{}')});

ok($node->poll_query_until('postgres',
	"SELECT status = 'compensated' FROM ep.sagas WHERE saga_id = 'x-1'"),
	'the stubborn saga failed for good and was compensated');
like($node->safe_psql('postgres', "SELECT last_error FROM ep.sagas WHERE saga_id = 'x-1'"),
	qr/step "stuck" failed after 2 attempts: the call did not finish/,
	'each terminated call counted as a failed attempt');
is($node->safe_psql('postgres', "SELECT string_agg(what, ',') FROM eve.log"),
	'first,undo_first', 'its completed step was compensated once');
is($node->safe_psql('postgres', "SELECT status FROM ep.sagas WHERE saga_id = 'h-1'"),
	'completed', "the other role's saga completed");

# the worker is back and runs new sagas
$node->safe_psql('postgres', q{SET ROLE shop; SELECT ep.start_saga('honest', 'h-2', '{}')});
ok($node->poll_query_until('postgres',
	"SELECT status = 'completed' FROM ep.sagas WHERE saga_id = 'h-2'"),
	'the worker runs sagas again');
my $log = slurp_file($node->logfile);
ok($log =~ /running when the worker was terminated counts as a failed attempt/,
	'the log says why the step failed');
$node->stop;
done_testing();
