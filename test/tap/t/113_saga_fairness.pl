# Bounded harm between owners: a role whose saga steps are slow (1 s each,
# within the time limit) does not make another role's sagas wait for all of
# them. An owner whose call took longer than event_patterns.projection_slow_call
# is set aside for as long again, so the other owners' steps run meanwhile.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('saga_fairness');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE slowpoke LOGIN;
CREATE ROLE shop LOGIN;
CREATE SCHEMA slowpoke AUTHORIZATION slowpoke;
CREATE SCHEMA shop AUTHORIZATION shop;
SET ROLE slowpoke;
CREATE FUNCTION slowpoke.crawl(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ SELECT pg_sleep(1); SELECT '{}'::jsonb $$;
SELECT ep.define_saga('slow', '[{"name": "crawl", "action": "slowpoke.crawl"}]');
RESET ROLE;
SET ROLE shop;
CREATE FUNCTION shop.work(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS
    $$ SELECT '{}'::jsonb $$;
SELECT ep.define_saga('quick', '[{"name": "one", "action": "shop.work"}, {"name": "two", "action": "shop.work"}]');
});

# the slow sagas first, then the quick ones, in one transaction
$node->safe_psql('postgres', q{
BEGIN;
SET ROLE slowpoke;
SELECT ep.start_saga('slow', 'slow-' || i, '{}') FROM generate_series(1, 8) i;
RESET ROLE;
SET ROLE shop;
SELECT ep.start_saga('quick', 'quick-' || i, '{}') FROM generate_series(1, 8) i;
COMMIT;
});

ok($node->poll_query_until('postgres',
	"SELECT count(*) = 8 FROM ep.sagas WHERE saga_type = 'quick' AND status = 'completed'"),
	'the quick sagas complete');
my $slow_done = $node->safe_psql('postgres',
	"SELECT count(*) FROM ep.sagas WHERE saga_type = 'slow' AND status = 'completed'");
ok($slow_done <= 3, "the quick sagas did not wait for the slow ones ($slow_done of 8 slow sagas done)");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 8 FROM ep.sagas WHERE saga_type = 'slow' AND status = 'completed'"),
	'the slow sagas complete too');
$node->stop;
done_testing();
