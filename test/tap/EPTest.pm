# EPTest.pm: helpers for event_patterns TAP tests.
package EPTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use Exporter 'import';

our @EXPORT = qw(ep_node);

# ep_node(name, preload => 1): a new node configured like the test clusters
# (test/tmp/test.conf, written by test/gen-conf.sh), optionally without the
# preload. Not started.
sub ep_node
{
	my ($name, %opts) = @_;
	my $preload = exists $opts{preload} ? $opts{preload} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} ? 'logical' : 0);
	my $conf = $ENV{EP_TEST_CONF} or die "EP_TEST_CONF is not set";
	open my $fh, '<', $conf or die "cannot read $conf: $!";
	my $text = do { local $/; <$fh> };
	close $fh;
	$text =~ s/^shared_preload_libraries.*$//m unless $preload;
	$text =~ s/^output_plugin_libraries.*$//m unless $preload;
	$node->append_conf('postgresql.conf', $text);
	return $node;
}

1;
