# Extension lifecycle on a preloaded cluster and on one without the preload.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('preloaded');
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
is($node->safe_psql('postgres', "SELECT ep.append('a-1', 'Created', '{}')"),
	'1', 'append works on a preloaded cluster');
$node->safe_psql('postgres', 'DROP EXTENSION event_patterns');
$node->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
is($node->safe_psql('postgres', "SELECT ep.append('a-1', 'Created', '{}')"),
	'1', 'drop and re-create start from an empty store');
is($node->safe_psql('postgres', "SELECT count(*) FROM ep.read_all()"),
	'1', 'read_all sees the event after re-create');

# positions survive a crash restart and keep increasing
$node->safe_psql('postgres', "SELECT ep.append('a-2', 'Created', '{}')");
$node->stop('immediate');
$node->start;
$node->safe_psql('postgres', "SELECT ep.append('a-3', 'Created', '{}')");
is($node->safe_psql('postgres',
	"SELECT string_agg(stream_id, ',' ORDER BY global_position) FROM ep.read_all()"),
	'a-1,a-2,a-3', 'global order intact across a crash restart');
$node->stop;

my $plain = ep_node('not_preloaded', preload => 0);
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION event_patterns');
my ($ret, $out, $err) = $plain->psql('postgres', "SELECT ep.append('a-1', 'Created', '{}')");
isnt($ret, 0, 'append fails without the preload');
like($err, qr/shared_preload_libraries/, 'the error names shared_preload_libraries');
is($plain->safe_psql('postgres', "SELECT count(*) FROM ep.events"), '0', 'nothing was written');
$plain->safe_psql('postgres', 'DROP EXTENSION event_patterns');
$plain->stop;

done_testing();
