# Category ownership in the worker: an async projection applied by the
# background worker from the WAL (decoded events) and on rebuild (events
# replayed from the store) delivers only the events of categories its owner
# may read; a grant made later lets the next events through.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('proj_categories');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE billing LOGIN;
CREATE ROLE spy LOGIN;
CREATE TABLE seen (stream_id text NOT NULL, who name NOT NULL);
GRANT INSERT ON seen TO spy;
CREATE FUNCTION record(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO public.seen VALUES (e.stream_id, current_user) $$;
GRANT EXECUTE ON FUNCTION record(ep.events) TO spy;
SELECT ep.set_category_owner('invoice', 'billing');
});
$node->poll_query_until('postgres', 'SELECT count(*) = 1 FROM ep.workers')
  or die 'no worker';
$node->safe_psql('postgres', q{
SET ROLE spy;
SELECT ep.create_projection('spy_all', 'record(ep.events)');
});

# decoded from the WAL by the worker
$node->safe_psql('postgres', q{
SET ROLE billing;
SELECT ep.append('invoice-1', 'Issued', '{"amount": 1}');
SELECT ep.append('note-1', 'Noted', '{}');
SELECT ep.append('invoice-2', 'Issued', '{"amount": 2}');
SELECT ep.append('note-2', 'Noted', '{}');
});
is($node->safe_psql('postgres', q{
SELECT ep.wait_for_projection('spy_all', '30 seconds');
SELECT string_agg(stream_id || ':' || who, ',' ORDER BY stream_id) FROM seen}),
	"t\nnote-1:spy,note-2:spy", 'the worker delivers no event of a category the owner may not read');

# replayed from the store
$node->safe_psql('postgres', q{
TRUNCATE seen;
SET ROLE spy;
SELECT ep.rebuild_projection('spy_all');
});
ok($node->poll_query_until('postgres', "SELECT status = 'running' FROM ep.projections WHERE name = 'spy_all'"),
	'rebuild finished');
is($node->safe_psql('postgres', q{
SELECT ep.wait_for_projection('spy_all', '30 seconds');
SELECT string_agg(stream_id, ',' ORDER BY stream_id) FROM seen}),
	"t\nnote-1,note-2", 'a rebuild replays no event of a category the owner may not read');

# a grant reaches the worker: later events get through
$node->safe_psql('postgres', q{
SET ROLE billing;
SELECT ep.grant_category('invoice', 'spy', '{read}');
SELECT ep.append('invoice-3', 'Issued', '{"amount": 3}');
});
is($node->safe_psql('postgres', q{
SELECT ep.wait_for_projection('spy_all', '30 seconds');
SELECT string_agg(stream_id, ',' ORDER BY stream_id) FROM seen}),
	"t\ninvoice-3,note-1,note-2", 'after a grant the worker delivers the category');

# the projection's lag does not count hidden events forever
is($node->safe_psql('postgres', "SELECT status FROM ep.projections WHERE name = 'spy_all'"),
	'running', 'the projection keeps running');

$node->stop;
done_testing();
